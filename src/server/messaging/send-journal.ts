/**
 * The journal of durable sends: a send accepted for a container whose spec.delivery is durable
 * is written to the store before its sender is answered, and deleted once the worker settled
 * it, so a server that is killed loses nothing it accepted. Writes and deletes are
 * group-committed: whatever arrives while one store transaction is on its way goes together in
 * the next one (one fsync, or one etcd round, for many sends).
 *
 * Entries live under `/k4s-journal/<owner uid>/<boot>-<writer>-<seq>`: the owner is the
 * Container the send went to, or the Service it was sent through (so that after a restart it may
 * go to any of the service's endpoints). `boot` is this server run's start time, so keys sort in
 * the order they were written across runs, and a run recovers only what earlier runs left.
 * `writer` is the cluster member that accepted the send (its advertise address), so that the
 * servers of a cluster can tell whose entries are whose; a single server writes none
 * (`<boot>-<seq>`), and a key without one reads as written by an unknown earlier run. The keys
 * live outside the objects' prefix: watches of objects never see them.
 */
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Compare, KeyValue, Op, Store } from "../store/store.js";

/** Key prefix of the journal. */
export const JOURNAL_PREFIX = "/k4s-journal/";
/** Default most journaled, unsettled sends per owner (container or service). */
export const DEFAULT_JOURNAL_MESSAGES = 10_000;
/** Default most payload bytes of journaled, unsettled sends per owner. */
export const DEFAULT_JOURNAL_BYTES = 64 * 1024 * 1024;
/** Most ops and value bytes of one journal transaction (etcd's defaults allow 128 ops, 1.5 MiB). */
const MAX_BATCH_OPS = 100;
const MAX_BATCH_BYTES = 1024 * 1024;
/** How long after a failed delete of settled entries it is tried again (ms). */
const DELETE_RETRY_MS = 1000;

/** Most entries claimed per transaction (two ops each, within etcd's default 128); bytes as MAX_BATCH_BYTES. */
const CLAIM_BATCH = 50;

/** Keys read per page when recovering or dropping an owner's journal. */
const PAGE = 500;

/** JournalEntry is one journaled send. */
export interface JournalEntry {
  readonly data: Uint8Array;
  readonly contentType: string;
  /** The sending container, or "" for an outside client. */
  readonly sender: string;
  /** The service it was sent through, or "" when sent to the container. */
  readonly service: string;
}

/** A journaled send read back after a restart, with its key (to remove it once settled). */
export interface RecoveredEntry extends JournalEntry {
  readonly key: string;
}

/** SendJournalOptions are the journal's store and bounds. */
export interface SendJournalOptions {
  store: Store;
  /** Most journaled, unsettled sends per owner (default 10,000). */
  maxMessages?: number;
  /** Most payload bytes of journaled, unsettled sends per owner (default 64 MiB). */
  maxBytes?: number;
  /** Start time of this server run (default now); entries of earlier runs are recovered. */
  boot?: number;
  /**
   * In a cluster: the member this run writes as (its advertise address, without "/"), recorded
   * in each key; undefined (or none) writes keys without a writer.
   */
  writer?: () => string | undefined;
  onError?: (message: string, err?: unknown) => void;
}

/** SendJournal keeps durable sends in the store until they are settled. */
export interface SendJournal {
  /** The member this run writes as, recorded in its keys (undefined on a single server). */
  readonly writer?: string;
  /**
   * Why a send of `bytes` to the owner cannot be journaled now (its journal is full, counted with
   * what is on its way), naming the limit; undefined when it can. `what` names the owner.
   */
  refuses(owner: string, bytes: number, what: string): string | undefined;
  /** Writes a send; resolves with its key once it is on disk (with others, in one transaction). */
  append(owner: string, entry: JournalEntry): Promise<string>;
  /** The send was settled: its entry goes in the next transaction. */
  remove(key: string): void;
  /**
   * This server let go of the send (another server holds its container now): its entry is
   * neither counted nor deleted here any more; the server holding the container reads it back.
   */
  release(key: string): void;
  /**
   * Reads what earlier server runs (or other servers) journaled for an owner and did not settle,
   * with what this run released, oldest first; entries this run counts now are skipped, and so
   * are those of other runs whose writer (undefined for a key without one) `from` refuses.
   * In a cluster (a writer set), each entry is claimed first: moved under a key of this run in
   * one transaction that holds only while the entry is where it was read and, when `gone`
   * names a key for its writer (the writer's member record), that key is absent; an entry
   * someone else claimed first is skipped, so one entry is read back by one server. The entries
   * returned carry their new keys. A read that fails counts nothing; what it had claimed is
   * returned by the next read of the owner.
   */
  recover(owner: string, from?: (writer: string | undefined) => boolean, gone?: (writer: string | undefined) => string | undefined): Promise<RecoveredEntry[]>;
  /** Deletes an owner's whole journal (its Container or Service was deleted). */
  drop(owner: string): Promise<void>;
  /** Unsettled entries (journaled or on their way) of an owner. */
  usage(owner: string): { messages: number; bytes: number };
  /** Writes what is pending; later appends are refused. */
  close(): Promise<void>;
}

interface Pending {
  op: Op;
  bytes: number;
  done?: { resolve(key: string): void; reject(err: unknown): void };
}

/** Creates the journal of durable sends over a store. */
export function createSendJournal(options: SendJournalOptions): SendJournal {
  const { store } = options;
  const maxMessages = options.maxMessages ?? DEFAULT_JOURNAL_MESSAGES;
  const maxBytes = options.maxBytes ?? DEFAULT_JOURNAL_BYTES;
  const boot = (options.boot ?? Date.now()).toString(16).padStart(12, "0");
  const ledger = createLedger();
  /** Owners whose journal was dropped: their entries still on the way are deleted once written. */
  const dropped = new Set<string>();
  const pending: Pending[] = [];
  /** Entries of this run it let go of (released): read back like an earlier run's if its container is taken again. */
  const released = new Set<string>();
  /**
   * Entries settled here whose delete is not committed yet (on its way, or failed and retried):
   * still in the store, but never read back as another run's.
   */
  const deleting = new Set<string>();
  /** Keys this run claimed in a transaction whose answer was lost: if stored, the next read takes them. */
  const unsure = new Set<string>();
  let flushing: Promise<void> | undefined;
  let seq = 0;
  let closed = false;
  const writer = () => options.writer?.();
  /** Whether a key (parsed) is this run's own (its boot and its writer). */
  const ownRun = (k: ReturnType<typeof parseKey>) => k.boot === boot && k.writer === writer();

  function schedule() {
    flushing ??= flush().finally(() => {
      flushing = undefined;
      if (pending.length > 0) schedule();
    });
  }

  async function flush(): Promise<void> {
    // Let the sends of this tick (and the deletes of their acks) join one transaction.
    await new Promise((r) => setImmediate(r));
    while (pending.length > 0) {
      const batch = pending.splice(0, batchLength(pending));
      try {
        await store.txn([], batch.map((p) => p.op));
      } catch (err) {
        for (const p of batch) {
          if (p.done) {
            ledger.untrack(p.op.key);
            p.done.reject(err);
          }
        }
        // A delete that failed leaves a settled send journaled: tried again a moment later (and
        // skipped by recover meanwhile); delivered again only if this run ends first.
        const deletes = batch.filter((p) => !p.done);
        if (deletes.length > 0) {
          options.onError?.("deleting settled durable sends from the journal failed; trying again", err);
          retry(deletes);
        }
        continue;
      }
      for (const p of batch) {
        if (!p.done) {
          deleting.delete(p.op.key);
          continue;
        }
        const owner = ledger.ownerOf(p.op.key);
        if (owner !== undefined && dropped.has(owner)) remove(p.op.key);
        p.done.resolve(p.op.key);
      }
    }
  }

  function retry(deletes: Pending[]) {
    setTimeout(() => {
      if (closed) return;
      pending.push(...deletes);
      schedule();
    }, DELETE_RETRY_MS).unref();
  }

  const nextKey = (owner: string) => keyOf(owner, boot, writer(), ++seq);

  function remove(key: string) {
    if (!ledger.has(key)) return;
    ledger.untrack(key);
    deleting.add(key);
    pending.push({ op: { type: "delete", key }, bytes: key.length });
    schedule();
  }

  return {
    get writer() {
      return writer();
    },
    refuses(owner, bytes, what) {
      const u = ledger.of(owner);
      if (!u) return bytes > maxBytes ? full(what, `${maxBytes} bytes`, bytes) : undefined;
      if (u.messages >= maxMessages) return full(what, `${maxMessages} messages`, u.messages + 1);
      if (u.bytes + bytes > maxBytes) return full(what, `${maxBytes} bytes`, u.bytes + bytes);
      return undefined;
    },
    append(owner, entry) {
      if (closed) return Promise.reject(new ConnectError("server is stopping", Code.Unavailable));
      const key = nextKey(owner);
      const value = encodeEntry(entry);
      ledger.track(key, owner, entry.data.byteLength);
      return new Promise<string>((resolve, reject) => {
        pending.push({ op: { type: "put", key, value }, bytes: key.length + value.byteLength, done: { resolve, reject } });
        schedule();
      });
    },
    remove,
    release(key) {
      if (!ledger.has(key)) return;
      ledger.untrack(key);
      released.add(key);
    },
    async recover(owner, from, gone) {
      // Nothing is counted before all is read and claimed: a failed read leaves the ledger as it was.
      const { mine, found } = await scan(store, owner, (key) => {
        if (ledger.has(key) || deleting.has(key)) return "skip";
        if (unsure.has(key)) return "mine";
        const k = parseKey(key);
        const refused = ownRun(k) || (from !== undefined && !from(k.writer));
        return refused && !released.has(key) ? "skip" : "take";
      });
      const out = writer() === undefined ? found.map((f) => ({ key: f.kv.key, ...f.entry })) : [...mine, ...(await claim(store, found, { next: () => nextKey(owner), unsure, gone }))];
      const keys = [...out.map((e) => e.key), ...found.map((f) => f.kv.key)];
      for (const set of [unsure, released]) for (const key of keys) set.delete(key);
      for (const e of out) ledger.track(e.key, owner, e.data.byteLength);
      return out;
    },
    async drop(owner) {
      dropped.add(owner);
      // Long enough for the appends on their way to land; uids are never reused.
      setTimeout(() => dropped.delete(owner), 60_000).unref();
      ledger.forget(owner);
      for (const key of released) if (key.startsWith(`${JOURNAL_PREFIX}${owner}/`)) released.delete(key);
      for await (const kvs of pagesOf(store, owner)) {
        for (let i = 0; i < kvs.length; i += MAX_BATCH_OPS) {
          await store.txn([], kvs.slice(i, i + MAX_BATCH_OPS).map((kv) => ({ type: "delete", key: kv.key }) as const));
        }
      }
    },
    usage: (owner) => ({ ...(ledger.of(owner) ?? { messages: 0, bytes: 0 }) }),
    async close() {
      closed = true;
      while (flushing) await flushing;
    },
  };
}

/** Ledger is what the journal counts: each unsettled entry this run knows, and each owner's totals. */
interface Ledger {
  has(key: string): boolean;
  ownerOf(key: string): string | undefined;
  /** An owner's unsettled messages and bytes; undefined when it has none. */
  of(owner: string): { messages: number; bytes: number } | undefined;
  track(key: string, owner: string, bytes: number): void;
  /** Forgets one entry (an unknown key is ignored). */
  untrack(key: string): void;
  /** Forgets every entry of an owner. */
  forget(owner: string): void;
}

/** Creates an empty ledger. */
function createLedger(): Ledger {
  const owners = new Map<string, { messages: number; bytes: number }>();
  const entries = new Map<string, { owner: string; bytes: number }>();
  const untrack = (key: string) => {
    const e = entries.get(key);
    if (!e) return;
    entries.delete(key);
    const u = owners.get(e.owner);
    if (!u) return;
    u.messages--;
    u.bytes -= e.bytes;
    if (u.messages === 0) owners.delete(e.owner);
  };
  return {
    has: (key) => entries.has(key),
    ownerOf: (key) => entries.get(key)?.owner,
    of: (owner) => owners.get(owner),
    track(key, owner, bytes) {
      entries.set(key, { owner, bytes });
      let u = owners.get(owner);
      if (!u) owners.set(owner, (u = { messages: 0, bytes: 0 }));
      u.messages++;
      u.bytes += bytes;
    },
    untrack,
    forget(owner) {
      for (const [key, e] of entries) if (e.owner === owner) untrack(key);
      owners.delete(owner);
    },
  };
}

/**
 * How many of the pending writes, from the front, go in the next transaction: at most
 * MAX_BATCH_OPS and MAX_BATCH_BYTES (at least one), and never one key twice (a put and the
 * delete of its settle must not meet in one etcd transaction).
 */
function batchLength(pending: readonly Pending[]): number {
  const keys = new Set<string>();
  let bytes = 0;
  let n = 0;
  for (; n < pending.length && n < MAX_BATCH_OPS; n++) {
    const p = pending[n]!;
    if (n > 0 && (bytes + p.bytes > MAX_BATCH_BYTES || keys.has(p.op.key))) break;
    keys.add(p.op.key);
    bytes += p.bytes;
  }
  return n;
}

/** The key of an owner's entry number `seq` of a run (`boot`), naming its writer if any. */
function keyOf(owner: string, boot: string, writer: string | undefined, seq: number): string {
  return `${JOURNAL_PREFIX}${owner}/${boot}-${writer === undefined ? "" : `${writer}-`}${seq.toString(16).padStart(10, "0")}`;
}

/**
 * The run and writer of a journal key: `<boot>-<writer>-<seq>`, or `<boot>-<seq>` without a
 * writer (a single server's, or one written before keys named their writer).
 */
export function parseKey(key: string): { boot: string; writer: string | undefined } {
  const name = key.slice(key.lastIndexOf("/") + 1);
  const first = name.indexOf("-");
  const last = name.lastIndexOf("-");
  return { boot: name.slice(0, first), writer: last > first ? name.slice(first + 1, last) : undefined };
}

/** An entry read back, as stored (key and revision) and decoded. */
interface Found {
  kv: KeyValue;
  entry: JournalEntry;
}

/**
 * Reads an owner's whole journal: the entries `classify` takes, and those it says are already
 * this run's (claimed by a transaction whose answer was lost).
 */
async function scan(store: Store, owner: string, classify: (key: string) => "skip" | "mine" | "take"): Promise<{ mine: RecoveredEntry[]; found: Found[] }> {
  const mine: RecoveredEntry[] = [];
  const found: Found[] = [];
  for await (const kvs of pagesOf(store, owner)) {
    for (const kv of kvs) {
      const c = classify(kv.key);
      if (c === "mine") mine.push({ key: kv.key, ...decodeEntry(kv.value) });
      else if (c === "take") found.push({ kv, entry: decodeEntry(kv.value) });
    }
  }
  return { mine, found };
}

/**
 * Claims entries read back (in a cluster): each moves under a key of this run (`next`) in a
 * transaction that holds only if it is still where it was read (and its writer's `gone` key is
 * absent), so that of two servers reading it back only one delivers it. A transaction refused
 * (someone took one of its entries) or failed (too large, say) is tried again entry by entry,
 * unless what it moved is stored under its new keys after all (its answer was lost); an entry
 * refused alone, and not under its new key, was taken by someone else. When the store fails on
 * an entry alone, or on the check of what a transaction moved, the keys of what was claimed go
 * to `unsure` (the next read of the owner takes them) and the claim rejects.
 */
async function claim(store: Store, found: Found[], o: { next(): string; unsure: Set<string>; gone?: (w: string | undefined) => string | undefined }): Promise<RecoveredEntry[]> {
  const out: RecoveredEntry[] = [];
  /**
   * `keys` gets the new key of each entry; `earlier` is the new key an entry tried alone had in
   * the batch that failed before: that batch may land after its failure was seen (the store gave
   * up on it while etcd still had it), so an entry refused alone may be under that key, this run's.
   */
  const tryClaim = async (batch: Found[], keys: string[] = [], earlier?: string): Promise<boolean> => {
    const moves = batch.map((f) => ({ f, key: o.next() }));
    keys.push(...moves.map((m) => m.key));
    const compares = new Map<string, Compare>();
    for (const { f } of moves) {
      compares.set(f.kv.key, { key: f.kv.key, modRevision: f.kv.modRevision });
      const g = o.gone?.(parseKey(f.kv.key).writer);
      if (g !== undefined) compares.set(g, { key: g, modRevision: 0 });
    }
    const ops = moves.flatMap(({ f, key }): Op[] => [{ type: "delete", key: f.kv.key }, { type: "put", key, value: f.kv.value }]);
    let failure: { err: unknown } | undefined;
    try {
      if ((await store.txn([...compares.values()], ops)).succeeded) {
        for (const { f, key } of moves) out.push({ key, ...f.entry });
        return true;
      }
    } catch (err) {
      failure = { err };
    }
    if ((await ours(moves)) > 0) return true;
    if (earlier !== undefined && (await ours([{ f: moves[0]!.f, key: earlier }])) > 0) return true;
    if (!failure) return false;
    // Not applied as far as can be seen; should it land yet, the next read takes it.
    for (const m of moves) o.unsure.add(m.key);
    // A batch the store failed on (too large a request, say) is tried again entry by entry.
    if (batch.length > 1) return false;
    throw failure.err;
  };
  /**
   * Takes what a refused transaction moved after all: the store retries a call whose answer was
   * lost, and a retry that finds the first try applied is refused, leaving the entries under
   * this run's new keys (which no one else knows). Those stored are this run's; a failed read
   * leaves the keys to the next read of the owner (`unsure`) and rejects.
   */
  const ours = async (moves: { f: Found; key: string }[]): Promise<number> => {
    let kvs;
    try {
      kvs = await Promise.all(moves.map((m) => store.get(m.key)));
    } catch (err) {
      for (const m of moves) o.unsure.add(m.key);
      throw err;
    }
    let n = 0;
    moves.forEach(({ key }, i) => {
      const kv = kvs[i];
      if (kv === undefined) return;
      out.push({ key, ...decodeEntry(kv.value) });
      n++;
    });
    return n;
  };
  try {
    for (let i = 0; i < found.length; ) {
      const batch = found.slice(i, (i += claimLength(found, i)));
      const keys: string[] = [];
      if (!(await tryClaim(batch, keys)) && batch.length > 1) for (const [j, f] of batch.entries()) await tryClaim([f], [], keys[j]);
    }
  } catch (err) {
    for (const e of out) o.unsure.add(e.key);
    throw err;
  }
  return out;
}

/**
 * How many entries, from `start`, one claim transaction moves: at most CLAIM_BATCH and
 * MAX_BATCH_BYTES of values and keys (at least one): a claim writes each value again.
 */
function claimLength(found: readonly Found[], start: number): number {
  let bytes = 0;
  let n = 0;
  for (; start + n < found.length && n < CLAIM_BATCH; n++) {
    const kv = found[start + n]!.kv;
    bytes += kv.value.byteLength + 2 * kv.key.length;
    if (n > 0 && bytes > MAX_BATCH_BYTES) break;
  }
  return n;
}

/** The journal entries of an owner as stored, a page at a time. */
async function* pagesOf(store: Store, owner: string): AsyncGenerator<KeyValue[]> {
  const prefix = `${JOURNAL_PREFIX}${owner}/`;
  let after: string | undefined;
  for (;;) {
    const page = await store.range(prefix, { after, limit: PAGE });
    if (page.kvs.length > 0) yield page.kvs;
    if (!page.more || page.kvs.length === 0) return;
    after = page.kvs[page.kvs.length - 1]!.key;
  }
}

function full(what: string, limit: string, have: number): string {
  return `durable journal of ${what} is full (limit ${limit}; it would hold ${have}): wait for its worker to settle what is queued`;
}

/** Encodes an entry as protobuf wire fields: 1 data, 2 content type, 3 sender, 4 service. */
function encodeEntry(e: JournalEntry): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, 2).bytes(e.data);
  if (e.contentType) w.tag(2, 2).string(e.contentType);
  if (e.sender) w.tag(3, 2).string(e.sender);
  if (e.service) w.tag(4, 2).string(e.service);
  return w.finish();
}

function decodeEntry(bytes: Uint8Array): JournalEntry {
  const r = new BinaryReader(bytes);
  let data: Uint8Array = new Uint8Array(0);
  let contentType = "";
  let sender = "";
  let service = "";
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    if (field === 1) data = r.bytes();
    else if (field === 2) contentType = r.string();
    else if (field === 3) sender = r.string();
    else if (field === 4) service = r.string();
    else r.skip(wireType);
  }
  return { data, contentType, sender, service };
}
