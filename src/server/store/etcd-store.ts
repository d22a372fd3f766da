/**
 * The Store on etcd v3, for running k4s with its state in an etcd cluster (and, later, several
 * k4s servers over one etcd).
 *
 * Everything maps one to one: a revision is an etcd revision; txn() is one etcd transaction
 * whose guards are `mod_revision ==` compares; range() is an etcd range (paged at one revision
 * for big listings); watch() is an etcd watch from `fromRevision + 1` with the previous values,
 * fragments of huge revisions joined again, and etcd's cancellation on compaction answered as
 * OUT_OF_RANGE.
 *
 * The client is the `etcd3` package (kept, used in production, ships etcd's own protos, pools
 * connections over several endpoints, and has leases and elections for the multi-server work).
 * Its KV and Watch RPC clients are used directly, so nothing etcd says is hidden: the compact
 * revision of a cancelled watch, fragments, progress notifications.
 *
 * History: etcd keeps every revision until compacted. Each store runs kube-apiserver's
 * compactor: every `compactIntervalMs` a transaction on COMPACT_KEY (guarded by its version, so
 * among several servers only one wins a round) records the current revision, and the winner
 * compacts to the revision recorded the round before, so at least one interval of history
 * stays; never more than `historyLimit` revisions stay. The write lands under the watched
 * prefix, so every watch sees progress at least once per interval and its bookmarks keep up.
 */
import { bulkhead, ExponentialBackoff, handleWhen, noop, retry, wrap } from "cockatiel";
import { Etcd3, isRecoverableError, type IKeyValue, type IWatchResponse } from "etcd3";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  checkTxnOps,
  compactedError,
  futureRevisionError,
  type Compare,
  type KeyValue,
  type Op,
  type RangeOptions,
  type RangeResult,
  type Store,
  type StoreEvent,
  type TxnResult,
  type WatchBatch,
} from "./store.js";

/** EtcdStoreOptions say where etcd is and how its history is compacted. */
export interface EtcdStoreOptions {
  /** host:port of every etcd member to use. */
  endpoints: readonly string[];
  /** Time between compaction rounds (default 60 s; at least this much history stays). */
  compactIntervalMs?: number;
  /** Revisions of history kept at most (default 10000). */
  historyLimit?: number;
  /** Where failures of the background compactor are reported (default: ignored). */
  onError?: (message: string, err?: unknown) => void;
}

/** The key whose version arbitrates compaction rounds between servers; it lies under the watched prefix. */
export const COMPACT_KEY = "/k4s/compact_rev_key";

/** Keys read per request when a range is not paged by the caller (halved when a reply is too big). */
const RANGE_PAGE = 1000;

/**
 * Requests in flight to etcd at once; the rest queue here. A storm of ten thousand status writes
 * sent at once makes etcd time its proposals out ("request timed out"); kube-apiserver bounds
 * its in-flight requests the same way.
 */
const MAX_IN_FLIGHT = 128;

/** Bytes of watch responses buffered for a slow consumer before the stream is paused. */
const WATCH_BUFFER_BYTES = 16 * 1024 * 1024;

/** The first key after every key starting with prefix, as etcd's clientv3.GetPrefixRangeEnd. */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function toKv(kv: IKeyValue): KeyValue {
  return {
    key: kv.key.toString(),
    value: kv.value,
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    version: Number(kv.version),
  };
}

/** Turns an etcd3 error into a ConnectError that says what failed and, for limits, what to change. */
function toConnectError(err: unknown, what: string): ConnectError {
  if (err instanceof ConnectError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (/too many operations in txn/.test(message)) {
    return new ConnectError(`${what}: more operations than etcd's --max-txn-ops allows (k4s needs 20000): ${message}`, Code.InvalidArgument);
  }
  if (/request is too large/.test(message)) {
    return new ConnectError(`${what}: bigger than etcd's --max-request-bytes allows (k4s needs 32 MiB): ${message}`, Code.InvalidArgument);
  }
  const code = (err as { code?: unknown }).code;
  const name = err instanceof Error ? err.constructor.name : "";
  if (/OutOfRange/.test(name)) return new ConnectError(`${what}: ${message}`, Code.OutOfRange);
  if (/ResourceExha/.test(name) || code === Code.ResourceExhausted) return new ConnectError(`${what}: ${message}`, Code.ResourceExhausted);
  if (/InvalidArgument/.test(name)) return new ConnectError(`${what}: ${message}`, Code.InvalidArgument);
  return new ConnectError(`${what}: etcd unavailable: ${message}`, Code.Unavailable);
}

/** The etcd3 client k4s uses: large messages, no per-host circuit breaker, bounded retries. */
function newEtcdClient(hosts: string[]): Etcd3 {
  return new Etcd3({
  hosts,
  dialTimeout: 5000,
  grpcOptions: { "grpc.max_receive_message_length": 64 * 1024 * 1024, "grpc.max_send_message_length": 64 * 1024 * 1024 },
  faultHandling: {
    // No circuit breaker per endpoint: with etcd3's default, three failures in a row (etcd
    // busy) refuse every call for 5 s, turning a slow moment into an outage.
    host: () => noop,
    // A failed call is retried (a write too: its compares make a second try that finds the
    // first one applied fail as a conflict, which the object layer handles), within a bound
    // on the calls in flight.
    global: wrap(retry(handleWhen(isRecoverableError), { maxAttempts: 3, backoff: new ExponentialBackoff() }), bulkhead(MAX_IN_FLIGHT, Infinity)),
  },
});
}

/** What a watch needs from its store: the client, the store's open streams and how to close one. */
interface EtcdWatcher {
  client: Etcd3;
  where: string;
  call: <T>(what: string, fn: () => Promise<T>) => Promise<T>;
  streams: Set<{ end(): void; cancel(): void }>;
  isClosed: () => boolean;
  closeStream: (stream: { end(): void; cancel(): void }) => void;
}

/** Watches etcd under prefix after fromRevision, yielding each revision's events whole, with back-pressure. */
async function* watchEtcd(ctx: EtcdWatcher, prefix: string, fromRevision: number, signal: AbortSignal): AsyncGenerator<WatchBatch> {
  const { client, where, call, streams, closeStream } = ctx;
  const stream = await call("watch", () => client.watchClient.watch());
  streams.add(stream);
  // The duplex is a Node stream: pausing it stops reading, and HTTP/2 flow control tells etcd.
  const flow = stream as unknown as { pause(): void; resume(): void };
  const responses: IWatchResponse[] = [];
  let buffered = 0;
  let paused = false;
  let failure: ConnectError | undefined;
  let wake: (() => void) | undefined;
  const size = (r: IWatchResponse) => r.events.reduce((n, e) => n + e.kv.key.length + e.kv.value.length + (e.prev_kv?.value.length ?? 0), 64);
  stream.on("data", (r: IWatchResponse) => {
    responses.push(r);
    buffered += size(r);
    if (buffered > WATCH_BUFFER_BYTES && !paused) {
      // Back-pressure to etcd, which moves a slow watcher to catching up on its side.
      paused = true;
      flow.pause();
    }
    wake?.();
  });
  stream.on("error", (e: unknown) => {
    failure ??= toConnectError(e, `${where}: watch`);
    wake?.();
  });
  stream.on("end", () => {
    failure ??= new ConnectError(`${where}: the watch stream ended`, Code.Unavailable);
    wake?.();
  });
  const onAbort = () => wake?.();
  signal.addEventListener("abort", onAbort);
  const key = Buffer.from(prefix);
  stream.write({
    create_request: { key, range_end: prefixEnd(key), start_revision: fromRevision + 1, prev_kv: true, progress_notify: true, fragment: true },
  });
  let cursor = fromRevision;
  let fragments: IWatchResponse["events"] = [];
  try {
    for (;;) {
      if (signal.aborted || ctx.isClosed()) return;
      const r = responses.shift();
      if (!r) {
        if (failure) throw failure;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      buffered -= size(r);
      if (paused && buffered < WATCH_BUFFER_BYTES / 2) {
        paused = false;
        flow.resume();
      }
      if (r.canceled) {
        if (Number(r.compact_revision) > 0) throw compactedError(fromRevision, Number(r.compact_revision));
        throw new ConnectError(`${where}: etcd cancelled the watch: ${r.cancel_reason || "no reason given"}`, Code.Unavailable);
      }
      if (r.created) continue;
      fragments.push(...r.events);
      if (r.fragment) continue;
      const events = fragments;
      fragments = [];
      if (events.length === 0) {
        // A progress notification: every change up to the header's revision was sent.
        const reached = Number(r.header.revision);
        if (reached > cursor) {
          cursor = reached;
          yield { revision: reached, events: [] };
        }
        continue;
      }
      // One response may hold several revisions (a watcher catching up); yield each whole.
      let batch: StoreEvent[] = [];
      let rev = 0;
      for (const e of events) {
        const eventRev = Number(e.kv.mod_revision);
        if (eventRev !== rev && batch.length > 0) {
          cursor = rev;
          yield { revision: rev, events: batch };
          batch = [];
        }
        rev = eventRev;
        const prevKv = e.prev_kv ? toKv(e.prev_kv) : undefined;
        if (e.type === "Delete") {
          batch.push({ type: "delete", kv: { key: e.kv.key.toString(), value: new Uint8Array(0), createRevision: 0, modRevision: rev, version: 0 }, prevKv });
        } else {
          batch.push({ type: "put", kv: toKv(e.kv), prevKv });
        }
      }
      cursor = rev;
      yield { revision: rev, events: batch };
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    closeStream(stream);
  }
}

/**
 * Starts kube-apiserver's compactor on etcd (see the file comment): every interval, one server
 * records the head and compacts to historyLimit revisions before it. Returns its stop function.
 */
function startCompactor(client: Etcd3, options: EtcdStoreOptions, where: string, historyLimit: number, isClosed: () => boolean): () => void {
  const intervalMs = Math.max(10, options.compactIntervalMs ?? 60_000);
  let compactVersion = 0;
  let recorded = 0;
  const compactRound = async () => {
    const key = Buffer.from(COMPACT_KEY);
    const r = await client.kv.txn({
      compare: [{ key, target: "Version", result: "Equal", version: compactVersion }],
      success: [{ request_put: { key, value: Buffer.from(String(recorded)) } }],
      failure: [{ request_range: { key } }],
    });
    const head = Number(r.header.revision);
    if (!r.succeeded) {
      // Another server compacted this round: follow its count.
      compactVersion = Number(r.responses[0]?.response_range.kvs[0]?.version ?? 0);
      recorded = head;
      return;
    }
    compactVersion += 1;
    const target = Math.max(recorded, head - historyLimit);
    recorded = head;
    if (target <= 0) return;
    try {
      await client.kv.compact({ revision: target });
    } catch (err) {
      // Compacted already (by an operator or etcd's own auto-compaction): nothing to do.
      if (!/compacted/.test(String((err as Error).message))) throw err;
    }
  };
  let timer: NodeJS.Timeout | undefined;
  const schedule = () => {
    timer = setTimeout(() => {
      compactRound()
        .catch((err: unknown) => options.onError?.(`${where}: compaction failed`, err))
        .finally(() => {
          if (!isClosed()) schedule();
        });
    }, intervalMs);
    timer.unref();
  };
  schedule();
  return () => clearTimeout(timer);
}

/** Opens a store on an etcd cluster; the first call that cannot reach it fails with UNAVAILABLE. */
export function openEtcdStore(options: EtcdStoreOptions): Store {
  const hosts = options.endpoints.map((e) => `http://${e}`);
  const client = newEtcdClient(hosts);
  const where = `etcd ${options.endpoints.join(",")}`;
  const historyLimit = Math.max(1, Math.floor(options.historyLimit ?? 10_000));
  let closed = false;
  const streams = new Set<{ end(): void; cancel(): void }>();

  const checkOpen = () => {
    if (closed) throw new ConnectError("store is closed", Code.Unavailable);
  };

  const call = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    checkOpen();
    try {
      return await fn();
    } catch (err) {
      throw toConnectError(err, `${where}: ${what}`);
    }
  };

  const currentRevision = async (): Promise<number> => {
    const r = await call("read revision", () => client.kv.range({ key: Buffer.from(COMPACT_KEY), count_only: true }));
    return Number(r.header.revision);
  };

  /** One range request; a reply too big for the receive limit is retried in smaller pages. */
  const rangeOnce = async (start: Buffer, end: Buffer, limit: number, revision: number) => {
    for (let page = limit; ; page = Math.max(1, Math.floor(page / 2))) {
      try {
        return await call("range", () => client.kv.range({ key: start, range_end: end, limit: page, revision }));
      } catch (err) {
        if (err instanceof ConnectError && err.code === Code.ResourceExhausted && page > 1) continue;
        if (err instanceof ConnectError && err.code === Code.OutOfRange) {
          throw /future/.test(err.message) ? futureRevisionError(revision, await currentRevision()) : compactedError(revision, await compactRevision());
        }
        throw err;
      }
    }
  };

  const range = async (prefix: string, o: RangeOptions = {}): Promise<RangeResult> => {
    const p = Buffer.from(prefix);
    const end = prefixEnd(p);
    const after = o.after !== undefined && o.after >= prefix ? Buffer.concat([Buffer.from(o.after), Buffer.from([0])]) : p;
    const want = o.limit && o.limit > 0 ? o.limit : Infinity;
    const kvs: KeyValue[] = [];
    let start = after;
    let revision = o.revision ?? 0;
    for (;;) {
      const r = await rangeOnce(start, end, Math.min(want - kvs.length, RANGE_PAGE), revision);
      revision = Number(r.header.revision);
      if (o.revision && revision > o.revision) revision = o.revision;
      for (const kv of r.kvs) kvs.push(toKv(kv));
      const left = Number(r.count) - r.kvs.length;
      if (!r.more || kvs.length >= want) return { kvs, revision, more: r.more, remaining: r.more ? left : 0 };
      start = Buffer.concat([r.kvs[r.kvs.length - 1]!.key, Buffer.from([0])]);
    }
  };

  /** Tells whether etcd can still read at revision (false once it was compacted away). */
  const readable = async (revision: number): Promise<boolean> => {
    try {
      await call("range", () => client.kv.range({ key: Buffer.from(COMPACT_KEY), count_only: true, revision }));
      return true;
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.OutOfRange) return false;
      throw err;
    }
  };

  /**
   * etcd's compact revision (0 when nothing was compacted). etcd 3.4 has no call that returns
   * it, so it is found by bisection over which revisions can still be read: a few dozen count
   * requests, made only for error messages and tests.
   */
  const compactRevision = async (): Promise<number> => {
    if (await readable(1)) return 0;
    let lo = 1;
    let hi = await currentRevision();
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (await readable(mid)) hi = mid;
      else lo = mid;
    }
    return hi;
  };

  /** Ends a watch stream: half-close first, so etcd3 does not count the cancel as a failed host. */
  const closeStream = (stream: { end(): void; cancel(): void }) => {
    streams.delete(stream);
    stream.end();
    stream.cancel();
  };

  const watcher: EtcdWatcher = { client, where, call, streams, isClosed: () => closed, closeStream };
  const watch = (prefix: string, fromRevision: number, signal: AbortSignal) => watchEtcd(watcher, prefix, fromRevision, signal);

  // kube-apiserver's compactor (see the file comment).
  const stopCompactor = startCompactor(client, options, where, historyLimit, () => closed);

  return {
    revision: currentRevision,
    async get(key) {
      const r = await call("get", () => client.kv.range({ key: Buffer.from(key) }));
      return r.kvs[0] ? toKv(r.kvs[0]) : undefined;
    },
    range,
    async txn(compares: readonly Compare[], ops: readonly Op[]): Promise<TxnResult> {
      checkOpen();
      checkTxnOps(ops);
      const r = await call("transaction", () =>
        client.kv.txn({
          compare: compares.map((c) => ({ key: Buffer.from(c.key), target: "Mod", result: "Equal", mod_revision: c.modRevision })),
          success: ops.map((op) =>
            op.type === "put"
              ? { request_put: { key: Buffer.from(op.key), value: Buffer.from(op.value.buffer, op.value.byteOffset, op.value.byteLength) } }
              : { request_delete_range: { key: Buffer.from(op.key) } },
          ),
          failure: [],
        }),
      );
      return { succeeded: r.succeeded, revision: Number(r.header.revision) };
    },
    watch,
    compactRevision,
    async close() {
      if (closed) return;
      closed = true;
      stopCompactor();
      for (const s of [...streams]) closeStream(s);
      client.close();
    },
  };
}
