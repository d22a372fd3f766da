/**
 * The Store on SQLite through better-sqlite3.
 *
 * Why SQLite: it is embedded (no second process to run), one of the best-kept libraries there
 * is, fully ACID, and keeps the whole state in one file that is easy to back up. better-sqlite3
 * is its most used Node binding; its synchronous API lets a transaction, the revision bump and
 * the fan-out to watchers happen in one turn of the event loop, so watchers never see a gap or
 * a duplicate. In WAL mode with synchronous=FULL every commit is fsynced before txn() resolves.
 *
 * Layout: `kv` holds the current value of each key with its revisions; `history` holds every
 * change of the last `historyLimit` revisions (with the value before the change), which is what
 * lets a watch resume from a revision, also after a restart; `meta` holds the current and the
 * compacted revision.
 */
import Database from "better-sqlite3";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Compare, KeyValue, Op, RangeResult, Store, StoreEvent, TxnResult } from "./store.js";

/** SqliteStoreOptions choose the database file and the history window. */
export interface SqliteStoreOptions {
  /** Database file; undefined keeps everything in memory (tests). */
  path?: string;
  /** Revisions of history kept for watches (default 10000). */
  historyLimit?: number;
  /**
   * Events a live watcher may have waiting before it is switched to catching up from the
   * history table (default 10000); a watcher that falls behind the history gets OUT_OF_RANGE.
   */
  watchBufferLimit?: number;
}

/** The most operations one transaction may carry. */
export const MAX_TXN_OPS = 100_000;

/** The most transactions committed together in one group commit. */
const MAX_BATCH = 1000;

/** A transaction waiting for the next group commit. */
interface PendingTxn {
  readonly compares: readonly Compare[];
  readonly ops: readonly Op[];
  resolve(result: TxnResult): void;
  reject(err: unknown): void;
}

/** What a transaction of a batch did: its events (undefined when a guard failed) and the revision after it. */
interface BatchResult {
  events: StoreEvent[] | undefined;
  revision: number;
}

/** Revisions read from history per page while a watcher catches up. */
const HISTORY_PAGE_REVISIONS = 256;

const PUT = 0;
const DELETE = 1;

interface HistoryRow {
  rev: number;
  key: string;
  type: number;
  value: Buffer | null;
  create_rev: number;
  version: number;
  prev_value: Buffer | null;
  prev_create_rev: number | null;
  prev_mod_rev: number | null;
  prev_version: number | null;
}

interface KvRow {
  key: string;
  value: Buffer;
  create_rev: number;
  mod_rev: number;
  version: number;
}

/** One watch stream's position and its buffer of live batches. */
interface Watcher {
  readonly prefix: string;
  /** The last revision delivered to the consumer. */
  cursor: number;
  /** True while live batches are pushed to `queue`; false while catching up from history. */
  synced: boolean;
  queue: { revision: number; events: StoreEvent[] }[];
  queuedEvents: number;
  wake: (() => void) | undefined;
}

const EMPTY = new Uint8Array(0);

function toKv(row: KvRow): KeyValue {
  return { key: row.key, value: row.value, createRevision: row.create_rev, modRevision: row.mod_rev, version: row.version };
}

function historyToEvent(row: HistoryRow): StoreEvent {
  const prevKv: KeyValue | undefined =
    row.prev_mod_rev === null
      ? undefined
      : {
          key: row.key,
          value: row.prev_value ?? EMPTY,
          createRevision: row.prev_create_rev ?? 0,
          modRevision: row.prev_mod_rev,
          version: row.prev_version ?? 0,
        };
  if (row.type === DELETE) {
    return { type: "delete", kv: { key: row.key, value: EMPTY, createRevision: 0, modRevision: row.rev, version: 0 }, prevKv };
  }
  return {
    type: "put",
    kv: { key: row.key, value: row.value ?? EMPTY, createRevision: row.create_rev, modRevision: row.rev, version: row.version },
    prevKv,
  };
}

function outOfRange(fromRevision: number, compacted: number): ConnectError {
  return new ConnectError(
    `revision ${fromRevision} is older than the kept history (compacted up to ${compacted}): relist and watch from the listing's revision`,
    Code.OutOfRange,
  );
}

/** The smallest string greater than every string that starts with prefix (for range scans). */
function prefixEnd(prefix: string): string {
  return prefix + "\u{10FFFF}";
}

/** Opens (creating when needed) a SQLite-backed store. */
export function openSqliteStore(options: SqliteStoreOptions = {}): Store {
  const historyLimit = Math.max(1, Math.floor(options.historyLimit ?? 10_000));
  const bufferLimit = Math.max(1, Math.floor(options.watchBufferLimit ?? 10_000));
  let db: Database.Database | undefined;
  try {
    db = new Database(options.path ?? ":memory:", { timeout: 250 });
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    // One server per data directory: a second process opening the same file fails here
    // instead of writing revisions that this process's watchers would never hear about.
    db.pragma("locking_mode = EXCLUSIVE");
    db.exec(`
      CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS kv (
        key TEXT PRIMARY KEY, value BLOB NOT NULL,
        create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, version INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS history (
        rev INTEGER NOT NULL, idx INTEGER NOT NULL, key TEXT NOT NULL, type INTEGER NOT NULL,
        value BLOB, create_rev INTEGER NOT NULL, version INTEGER NOT NULL,
        prev_value BLOB, prev_create_rev INTEGER, prev_mod_rev INTEGER, prev_version INTEGER,
        PRIMARY KEY (rev, idx)
      ) WITHOUT ROWID;
      INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compact_revision', 0);
    `);
  } catch (e) {
    db?.close();
    const code = (e as { code?: string }).code;
    if (code === "SQLITE_BUSY" || code === "SQLITE_LOCKED") {
      throw new ConnectError(`store ${options.path} is in use by another process`, Code.Unavailable);
    }
    throw e;
  }

  const stmt = {
    getMeta: db.prepare<[string], { value: number }>("SELECT value FROM meta WHERE name = ?"),
    setMeta: db.prepare<[number, string]>("UPDATE meta SET value = ? WHERE name = ?"),
    get: db.prepare<[string], KvRow>("SELECT key, value, create_rev, mod_rev, version FROM kv WHERE key = ?"),
    range: db.prepare<[string, string], KvRow>(
      "SELECT key, value, create_rev, mod_rev, version FROM kv WHERE key >= ? AND key < ? ORDER BY key",
    ),
    put: db.prepare<[string, Buffer, number, number, number]>(
      "INSERT OR REPLACE INTO kv (key, value, create_rev, mod_rev, version) VALUES (?, ?, ?, ?, ?)",
    ),
    del: db.prepare<[string]>("DELETE FROM kv WHERE key = ?"),
    addHistory: db.prepare(
      `INSERT INTO history (rev, idx, key, type, value, create_rev, version, prev_value, prev_create_rev, prev_mod_rev, prev_version)
       VALUES (@rev, @idx, @key, @type, @value, @create_rev, @version, @prev_value, @prev_create_rev, @prev_mod_rev, @prev_version)`,
    ),
    compact: db.prepare<[number]>("DELETE FROM history WHERE rev <= ?"),
    history: db.prepare<[number, number, string, string], HistoryRow>(
      `SELECT rev, key, type, value, create_rev, version, prev_value, prev_create_rev, prev_mod_rev, prev_version
       FROM history WHERE rev > ? AND rev <= ? AND key >= ? AND key < ? ORDER BY rev, idx`,
    ),
  };

  let revision = stmt.getMeta.get("revision")!.value;
  let compacted = stmt.getMeta.get("compact_revision")!.value;
  let closed = false;
  const watchers = new Set<Watcher>();

  const checkOpen = () => {
    if (closed) throw new ConnectError("store is closed", Code.Unavailable);
  };

  /** Applies one transaction at revision `rev` (inside a SQLite transaction); undefined when a guard failed. */
  const applyOne = (compares: readonly Compare[], ops: readonly Op[], rev: number): StoreEvent[] | undefined => {
    for (const c of compares) {
      const row = stmt.get.get(c.key);
      if ((row?.mod_rev ?? 0) !== c.modRevision) return undefined;
    }
    const events: StoreEvent[] = [];
    for (const op of ops) {
      const prev = stmt.get.get(op.key);
      const prevKv = prev ? toKv(prev) : undefined;
      const base = {
        rev,
        idx: events.length,
        key: op.key,
        prev_value: prev?.value ?? null,
        prev_create_rev: prev?.create_rev ?? null,
        prev_mod_rev: prev?.mod_rev ?? null,
        prev_version: prev?.version ?? null,
      };
      if (op.type === "put") {
        const value = Buffer.from(op.value.buffer, op.value.byteOffset, op.value.byteLength);
        const createRev = prev?.create_rev ?? rev;
        const version = (prev?.version ?? 0) + 1;
        stmt.put.run(op.key, value, createRev, rev, version);
        stmt.addHistory.run({ ...base, type: PUT, value, create_rev: createRev, version });
        // Copy: the caller's buffer may be reused after txn() returns.
        const stored = new Uint8Array(op.value);
        events.push({ type: "put", kv: { key: op.key, value: stored, createRevision: createRev, modRevision: rev, version }, prevKv });
      } else {
        if (!prev) continue;
        stmt.del.run(op.key);
        stmt.addHistory.run({ ...base, type: DELETE, value: null, create_rev: 0, version: 0 });
        events.push({ type: "delete", kv: { key: op.key, value: EMPTY, createRevision: 0, modRevision: rev, version: 0 }, prevKv });
      }
    }
    return events;
  };

  /**
   * Commits a batch of transactions as one SQLite transaction (group commit: one fsync for all
   * the writes queued in one turn of the event loop), each still with its own revision.
   */
  const commitBatch = db.transaction((batch: readonly PendingTxn[]): BatchResult[] => {
    let rev = revision;
    const results: BatchResult[] = [];
    for (const t of batch) {
      const events = applyOne(t.compares, t.ops, rev + 1);
      if (events && events.length > 0) rev += 1;
      results.push({ events, revision: rev });
    }
    if (rev !== revision) {
      stmt.setMeta.run(rev, "revision");
      const compactTo = rev - historyLimit;
      if (compactTo > compacted) {
        stmt.compact.run(compactTo);
        stmt.setMeta.run(compactTo, "compact_revision");
      }
    }
    return results;
  });

  const queue: PendingTxn[] = [];
  let flushScheduled = false;

  const flush = () => {
    flushScheduled = false;
    const batch = queue.splice(0, MAX_BATCH);
    if (queue.length > 0) scheduleFlush();
    if (batch.length === 0) return;
    if (closed) {
      for (const t of batch) t.reject(new ConnectError("store is closed", Code.Unavailable));
      return;
    }
    let results: BatchResult[];
    try {
      results = commitBatch(batch);
    } catch (e) {
      // Rolled back as a whole: none of these writes happened.
      for (const t of batch) t.reject(e);
      return;
    }
    const last = results[results.length - 1]!.revision;
    if (last !== revision) {
      revision = last;
      compacted = Math.max(compacted, revision - historyLimit);
    }
    batch.forEach((t, i) => {
      const r = results[i]!;
      if (r.events && r.events.length > 0) fanOut(r.revision, r.events);
      t.resolve({ succeeded: r.events !== undefined, revision: r.revision });
    });
  };

  const scheduleFlush = () => {
    if (flushScheduled) return;
    flushScheduled = true;
    setImmediate(flush);
  };

  const fanOut = (rev: number, events: StoreEvent[]) => {
    for (const w of watchers) {
      if (w.synced && rev > w.cursor) {
        const mine = events.filter((e) => e.kv.key.startsWith(w.prefix));
        if (mine.length > 0) {
          if (w.queuedEvents + mine.length > bufferLimit) {
            // Too slow to keep in memory: drop the buffer and let it catch up from history.
            w.synced = false;
            w.queue = [];
            w.queuedEvents = 0;
          } else {
            w.queue.push({ revision: rev, events: mine });
            w.queuedEvents += mine.length;
          }
        }
      }
      w.wake?.();
    }
  };

  /** Reads the history batches in (after, upTo] under prefix, grouped per revision. */
  const readHistory = (prefix: string, after: number, upTo: number) => {
    const rows = stmt.history.all(after, upTo, prefix, prefixEnd(prefix));
    const batches: { revision: number; events: StoreEvent[] }[] = [];
    for (const row of rows) {
      const last = batches[batches.length - 1];
      const e = historyToEvent(row);
      if (last && last.revision === row.rev) last.events.push(e);
      else batches.push({ revision: row.rev, events: [e] });
    }
    return batches;
  };

  async function* watch(prefix: string, fromRevision: number, signal: AbortSignal): AsyncGenerator<StoreEvent[]> {
    checkOpen();
    if (fromRevision < compacted) throw outOfRange(fromRevision, compacted);
    // A cursor past the head is kept: etcd-like, events up to fromRevision are never sent.
    const w: Watcher = { prefix, cursor: fromRevision, synced: false, queue: [], queuedEvents: 0, wake: undefined };
    watchers.add(w);
    const onAbort = () => w.wake?.();
    signal.addEventListener("abort", onAbort);
    try {
      for (;;) {
        if (signal.aborted) return;
        checkOpen();
        if (!w.synced) {
          // Catch up from history one page at a time; reading the last page and switching to
          // live mode happen in the same synchronous step, so no write falls in between.
          if (w.cursor < compacted) throw outOfRange(w.cursor, compacted);
          const upTo = Math.min(revision, w.cursor + HISTORY_PAGE_REVISIONS);
          if (upTo <= w.cursor) {
            w.synced = true;
            continue;
          }
          const batches = readHistory(prefix, w.cursor, upTo);
          const caughtUp = upTo === revision;
          if (caughtUp) w.synced = true;
          for (const b of batches) {
            if (signal.aborted) return;
            w.cursor = b.revision;
            yield b.events;
          }
          // Everything under prefix up to upTo is delivered; if live mode overflowed while the
          // consumer was busy, the next round resumes from here.
          w.cursor = upTo;
          continue;
        }
        const next = w.queue.shift();
        if (next) {
          w.queuedEvents -= next.events.length;
          w.cursor = next.revision;
          yield next.events;
          continue;
        }
        await new Promise<void>((resolve) => {
          w.wake = resolve;
        });
        w.wake = undefined;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      watchers.delete(w);
    }
  }

  return {
    async revision() {
      checkOpen();
      return revision;
    },
    async get(key) {
      checkOpen();
      const row = stmt.get.get(key);
      return row ? toKv(row) : undefined;
    },
    async range(prefix) {
      checkOpen();
      return { kvs: stmt.range.all(prefix, prefixEnd(prefix)).map(toKv), revision } satisfies RangeResult;
    },
    async txn(compares, ops): Promise<TxnResult> {
      checkOpen();
      if (ops.length > MAX_TXN_OPS) {
        throw new ConnectError(`transaction has ${ops.length} operations, more than the limit of ${MAX_TXN_OPS}`, Code.InvalidArgument);
      }
      const keys = new Set<string>();
      for (const op of ops) {
        if (keys.has(op.key)) throw new ConnectError(`transaction writes key ${op.key} twice`, Code.InvalidArgument);
        keys.add(op.key);
      }
      return new Promise<TxnResult>((resolve, reject) => {
        queue.push({ compares, ops, resolve, reject });
        scheduleFlush();
      });
    },
    watch,
    async compactRevision() {
      checkOpen();
      return compacted;
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const t of queue.splice(0)) t.reject(new ConnectError("store is closed", Code.Unavailable));
      for (const w of watchers) w.wake?.();
      db.close();
    },
  };
}
