/**
 * A bounded tail of records (container output lines, cluster events) kept in the store, so it
 * survives a server restart. Records are written in chunks: at most one per group (a container,
 * or all events) per flush, keyed by the group and the position (seq) of the chunk's first
 * record, with one store transaction per flush; chunks whose records all fell out of the kept
 * tail are deleted in the same transactions. A SIGKILL loses at most one flush interval.
 *
 * The keys live outside the objects' prefix, so watches of objects never see them.
 */
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Op, Store } from "./store/store.js";

/** TailJournalOptions say where the chunks live and how records become bytes. */
export interface TailJournalOptions<T> {
  store: Store;
  /** Key prefix of the chunks, ending with "/" (e.g. "/k4s-logs/"). */
  prefix: string;
  encode(records: readonly T[]): Uint8Array;
  decode(bytes: Uint8Array): T[];
  /** The record's position: increasing within its group. */
  seqOf(record: T): bigint;
  /** How often new records are written (ms, default 1000). */
  flushIntervalMs?: number;
  onError?: (message: string, err?: unknown) => void;
}

/** TailJournal writes a tail's changes to the store and reads it back after a restart. */
export interface TailJournal<T> {
  /** Reads every group's chunks, oldest first (call before appending). */
  load(): Promise<Map<string, T[]>>;
  /** Records appended to a group's tail; written at the next flush. */
  append(group: string, records: readonly T[]): void;
  /** The group's tail now starts at `firstKept`: chunks wholly before it can go. */
  trimmed(group: string, firstKept: bigint): void;
  /** Forgets a group (its container was deleted): its chunks go at the next flush. */
  drop(group: string): void;
  /** Writes what changed since the last flush. */
  flush(): Promise<void>;
  /** Flushes every flush interval until stop(). */
  start(): void;
  /** Stops the timer and writes what is left. */
  stop(): Promise<void>;
}

/** Ops per store transaction (etcd refuses more than 128 by default). */
const MAX_OPS_PER_TXN = 100;
/** Decimal digits of a seq in a key, so keys sort as their positions do. */
const SEQ_DIGITS = 20;

interface Chunk {
  key: string;
  last: bigint;
}

interface Group<T> {
  /** Chunks in the store (or on their way), oldest first. */
  chunks: Chunk[];
  /** Records appended since the last flush, from index `skip` on (those before fell out of the tail). */
  pending: T[];
  skip: number;
}

/** Creates a tail journal over a store. */
export function createTailJournal<T>(options: TailJournalOptions<T>): TailJournal<T> {
  const { store, prefix } = options;
  const groups = new Map<string, Group<T>>();
  const deletes = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  let flushing: Promise<void> = Promise.resolve();
  let stopped = false;

  const groupOf = (name: string): Group<T> => {
    let g = groups.get(name);
    if (!g) groups.set(name, (g = { chunks: [], pending: [], skip: 0 }));
    return g;
  };
  const chunkKey = (group: string, first: bigint) => `${prefix}${group}/${first.toString().padStart(SEQ_DIGITS, "0")}`;

  async function writeOnce(): Promise<void> {
    const ops: Op[] = [];
    for (const [name, g] of groups) {
      if (g.pending.length === g.skip) continue;
      const records = g.skip > 0 ? g.pending.slice(g.skip) : g.pending;
      g.pending = [];
      g.skip = 0;
      const key = chunkKey(name, options.seqOf(records[0]!));
      g.chunks.push({ key, last: options.seqOf(records[records.length - 1]!) });
      ops.push({ type: "put", key, value: options.encode(records) });
    }
    for (const key of deletes) ops.push({ type: "delete", key });
    deletes.clear();
    for (let i = 0; i < ops.length; i += MAX_OPS_PER_TXN) {
      try {
        await store.txn([], ops.slice(i, i + MAX_OPS_PER_TXN));
      } catch (err) {
        // The records are still served from memory; only their survival of a restart is lost.
        if (!stopped || !(err instanceof ConnectError && err.code === Code.Unavailable)) {
          options.onError?.(`writing the tail of ${prefix} to the store failed`, err);
        }
      }
    }
  }

  return {
    async load() {
      const out = new Map<string, T[]>();
      const { kvs } = await store.range(prefix);
      for (const kv of kvs) {
        const rest = kv.key.slice(prefix.length);
        const name = rest.slice(0, rest.lastIndexOf("/"));
        let records: T[];
        try {
          records = options.decode(kv.value);
        } catch (err) {
          options.onError?.(`dropping the unreadable chunk ${kv.key}`, err);
          deletes.add(kv.key);
          continue;
        }
        if (records.length === 0) {
          deletes.add(kv.key);
          continue;
        }
        groupOf(name).chunks.push({ key: kv.key, last: options.seqOf(records[records.length - 1]!) });
        let list = out.get(name);
        if (!list) out.set(name, (list = []));
        list.push(...records);
      }
      return out;
    },
    append(group, records) {
      if (records.length === 0) return;
      groupOf(group).pending.push(...records);
    },
    trimmed(group, firstKept) {
      const g = groups.get(group);
      if (!g) return;
      while (g.chunks.length > 0 && g.chunks[0]!.last < firstKept) deletes.add(g.chunks.shift()!.key);
      // Records come in position order: those fallen out are a prefix, skipped as they go (a
      // busy tail trims once per record) and dropped from the array once they are most of it.
      while (g.skip < g.pending.length && options.seqOf(g.pending[g.skip]!) < firstKept) g.skip++;
      if (g.skip > 0 && g.skip * 2 >= g.pending.length) {
        g.pending = g.pending.slice(g.skip);
        g.skip = 0;
      }
    },
    drop(group) {
      const g = groups.get(group);
      if (!g) return;
      for (const c of g.chunks) deletes.add(c.key);
      groups.delete(group);
    },
    flush() {
      // One flush at a time, in order: a chunk is never deleted before it was written.
      flushing = flushing.then(writeOnce);
      return flushing;
    },
    start() {
      timer = setInterval(() => void this.flush(), options.flushIntervalMs ?? 1000);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      await this.flush();
      stopped = true;
    },
  };
}

/**
 * The position after `last`: the current time in microseconds, or last + 1 when records come
 * faster than that. Since a server that restarts takes far longer than the head start a burst can
 * build, positions keep increasing across restarts, even when the last flush before a crash
 * was lost.
 */
export function nextPosition(last: bigint): bigint {
  const now = BigInt(Date.now()) * 1000n;
  return now > last ? now : last + 1n;
}

/**
 * The chunk format for records that are protobuf messages: each message, length-delimited, one
 * after the other (as a repeated field of them would be).
 */
export function protoChunks<Desc extends DescMessage>(schema: Desc): {
  encode(records: readonly MessageShape<Desc>[]): Uint8Array;
  decode(bytes: Uint8Array): MessageShape<Desc>[];
} {
  return {
    encode(records) {
      const w = new BinaryWriter();
      for (const r of records) w.bytes(toBinary(schema, r));
      return w.finish();
    },
    decode(bytes) {
      const r = new BinaryReader(bytes);
      const out: MessageShape<Desc>[] = [];
      while (r.pos < r.len) out.push(fromBinary(schema, r.bytes()));
      return out;
    },
  };
}
