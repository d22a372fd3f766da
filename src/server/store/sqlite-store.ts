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
 * change of the kept window of revisions (with the value before the change), which is what
 * lets a watch resume from a revision (also after a restart) and a paged listing read every
 * page at its first page's revision; `meta` holds the current and the compacted revision.
 *
 * The window is bounded twice, as etcd's is by its compaction and quota: at most
 * `historyLimit` revisions and at most `historyBytes` of stored values. Compaction deletes the
 * older rows, and the freed pages go back to the file system (incremental vacuum, and a WAL
 * that is truncated after each checkpoint), so the data directory stays near the size of the
 * current state plus the window.
 */
import Database from "better-sqlite3";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  checkTxnOps,
  compactedError,
  eventBytes,
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

/** SqliteStoreOptions choose the database file and the bounds of the history window. */
export interface SqliteStoreOptions {
  /** Database file; undefined keeps everything in memory (tests). */
  path?: string;
  /** Revisions of history kept for watches and paged listings (default 10000). */
  historyLimit?: number;
  /** Bytes of values the history may hold (default 64 MiB); the newest revision is always kept. */
  historyBytes?: number;
  /**
   * Events a live watcher may have waiting before it is switched to catching up from the
   * history table (default 10000); a watcher that falls behind the history gets OUT_OF_RANGE.
   */
  watchBufferLimit?: number;
  /** Bytes of values a live watcher may have waiting before the same switch (default 16 MiB). */
  watchBufferBytes?: number;
}

/** The most transactions committed together in one group commit (one synchronous step). */
const MAX_BATCH = 256;

/** Default bound of the history's values in bytes. */
export const DEFAULT_HISTORY_BYTES = 64 * 1024 * 1024;

/** Revisions and bytes read from history per step while a watcher catches up. */
const HISTORY_PAGE_REVISIONS = 256;
const HISTORY_PAGE_BYTES = 4 * 1024 * 1024;

/** Free pages (4 KiB each) above which space is given back to the file system, and per step. */
const VACUUM_THRESHOLD_PAGES = 1024;
const VACUUM_STEP_PAGES = 4096;

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

/** One watch stream's position and its bounded buffer of live batches. */
interface Watcher {
  readonly prefix: string;
  /** The last revision delivered to the consumer. */
  cursor: number;
  /** True while live batches are pushed to `queue`; false while catching up from history. */
  synced: boolean;
  queue: WatchBatch[];
  queuedEvents: number;
  queuedBytes: number;
  /** The newest revision committed while synced (delivered once the queue is empty). */
  reached: number;
  wake: (() => void) | undefined;
}

/** The bytes one revision's rows hold in history. */
interface RevisionSize {
  rev: number;
  bytes: number;
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

/** The smallest string greater than every string that starts with prefix (for range scans). */
function prefixEnd(prefix: string): string {
  return prefix + "\u{10FFFF}";
}

/** Opens the database, creating the tables when needed; reclaimable space is turned on. */
function openDatabase(path: string | undefined): Database.Database {
  let db: Database.Database | undefined;
  try {
    db = new Database(path ?? ":memory:", { timeout: 250 });
    // One server per data directory: a second process opening the same file fails here
    // instead of writing revisions that this process's watchers would never hear about.
    db.pragma("locking_mode = EXCLUSIVE");
    const fresh = (db.pragma("page_count", { simple: true }) as number) === 0;
    if (fresh) db.pragma("auto_vacuum = INCREMENTAL");
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    // After a checkpoint the WAL file shrinks back to this size instead of keeping its peak.
    db.pragma(`journal_size_limit = ${8 * 1024 * 1024}`);
    if (!fresh && (db.pragma("auto_vacuum", { simple: true }) as number) !== 2) {
      // A file written before compaction freed space: convert it once.
      db.pragma("auto_vacuum = INCREMENTAL");
      db.exec("VACUUM");
    }
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
    return db;
  } catch (e) {
    db?.close();
    const code = (e as { code?: string }).code;
    if (code === "SQLITE_BUSY" || code === "SQLITE_LOCKED") {
      throw new ConnectError(`store ${path} is in use by another process`, Code.Unavailable);
    }
    throw e;
  }
}

/**
 * The keys of a range as they were at @rev: the current row of every key not changed since, and
 * for the others the value before their first change after @rev (absent if it was a create).
 */
const KEYS_AT_REVISION = `
  SELECT key, value, create_rev, mod_rev, version FROM kv
  WHERE key >= @prefix AND key > @after AND key < @end
    AND key NOT IN (SELECT key FROM history WHERE rev > @rev AND key >= @prefix AND key > @after AND key < @end)
  UNION ALL
  SELECT key, prev_value, prev_create_rev, prev_mod_rev, prev_version FROM (
    SELECT key, MIN(rev), prev_value, prev_create_rev, prev_mod_rev, prev_version FROM history
    WHERE rev > @rev AND key >= @prefix AND key > @after AND key < @end GROUP BY key
  ) WHERE prev_mod_rev IS NOT NULL`;

/** The store's prepared SQL statements. */
function prepareStatements(db: Database.Database) {
  const rowBytes = "length(key) + COALESCE(length(value), 0) + COALESCE(length(prev_value), 0)";
  return {
    getMeta: db.prepare<[string], { value: number }>("SELECT value FROM meta WHERE name = ?"),
    setMeta: db.prepare<[number, string]>("UPDATE meta SET value = ? WHERE name = ?"),
    get: db.prepare<[string], KvRow>("SELECT key, value, create_rev, mod_rev, version FROM kv WHERE key = ?"),
    range: db.prepare<{ prefix: string; after: string; end: string; limit: number }, KvRow>(
      `SELECT key, value, create_rev, mod_rev, version FROM kv
       WHERE key >= @prefix AND key > @after AND key < @end ORDER BY key LIMIT @limit`,
    ),
    count: db.prepare<{ prefix: string; after: string; end: string }, { n: number }>(
      "SELECT COUNT(*) AS n FROM kv WHERE key >= @prefix AND key > @after AND key < @end",
    ),
    // The keys as they were at @rev (KEYS_AT_REVISION), a page of them and how many there are.
    rangeAt: db.prepare<{ prefix: string; after: string; end: string; limit: number; rev: number }, KvRow>(
      `SELECT key, value, create_rev, mod_rev, version FROM (${KEYS_AT_REVISION}) ORDER BY key LIMIT @limit`,
    ),
    countAt: db.prepare<{ prefix: string; after: string; end: string; rev: number }, { n: number }>(`SELECT COUNT(*) AS n FROM (${KEYS_AT_REVISION})`),
    put: db.prepare<[string, Buffer, number, number, number]>(
      "INSERT OR REPLACE INTO kv (key, value, create_rev, mod_rev, version) VALUES (?, ?, ?, ?, ?)",
    ),
    del: db.prepare<[string]>("DELETE FROM kv WHERE key = ?"),
    addHistory: db.prepare<[number, number, string, number, Buffer | null, number, number, Buffer | null, number | null, number | null, number | null]>(
      `INSERT INTO history (rev, idx, key, type, value, create_rev, version, prev_value, prev_create_rev, prev_mod_rev, prev_version)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    compact: db.prepare<[number]>("DELETE FROM history WHERE rev <= ?"),
    history: db.prepare<[number, number, string, string], HistoryRow>(
      `SELECT rev, key, type, value, create_rev, version, prev_value, prev_create_rev, prev_mod_rev, prev_version
       FROM history WHERE rev > ? AND rev <= ? AND key >= ? AND key < ? ORDER BY rev, idx`,
    ),
    sizes: db.prepare<[], RevisionSize>(`SELECT rev, SUM(${rowBytes}) AS bytes FROM history GROUP BY rev ORDER BY rev`),
  };
}

/** The store's prepared SQL statements. */
type Statements = ReturnType<typeof prepareStatements>;

/** Applies one transaction at revision `rev` (inside a SQLite transaction); undefined when a guard failed. */
function applyOne(stmt: Statements, compares: readonly Compare[], ops: readonly Op[], rev: number): { events: StoreEvent[]; bytes: number } | undefined {
  // Rows read for the guards are the rows the writes replace: read each key once.
  const read = new Map<string, KvRow | undefined>();
  for (const c of compares) {
    const row = stmt.get.get(c.key);
    if ((row?.mod_rev ?? 0) !== c.modRevision) return undefined;
    read.set(c.key, row);
  }
  const events: StoreEvent[] = [];
  let bytes = 0;
  for (const op of ops) {
    const prev = read.has(op.key) ? read.get(op.key) : stmt.get.get(op.key);
    const prevKv = prev ? toKv(prev) : undefined;
    const idx = events.length;
    bytes += op.key.length + (prev?.value.byteLength ?? 0);
    if (op.type === "put") {
      const value = Buffer.from(op.value.buffer, op.value.byteOffset, op.value.byteLength);
      const createRev = prev?.create_rev ?? rev;
      const version = (prev?.version ?? 0) + 1;
      stmt.put.run(op.key, value, createRev, rev, version);
      stmt.addHistory.run(rev, idx, op.key, PUT, value, createRev, version, prev?.value ?? null, prev?.create_rev ?? null, prev?.mod_rev ?? null, prev?.version ?? null);
      bytes += value.byteLength;
      events.push({ type: "put", kv: { key: op.key, value: op.value, createRevision: createRev, modRevision: rev, version }, prevKv });
    } else {
      if (!prev) continue;
      stmt.del.run(op.key);
      stmt.addHistory.run(rev, idx, op.key, DELETE, null, 0, 0, prev.value, prev.create_rev, prev.mod_rev, prev.version);
      events.push({ type: "delete", kv: { key: op.key, value: EMPTY, createRevision: 0, modRevision: rev, version: 0 }, prevKv });
    }
  }
  return { events, bytes };
}

/**
 * Reads the history batches in (after, upTo] under prefix, grouped per revision, stopping at a
 * revision boundary once about HISTORY_PAGE_BYTES were read; returns them and the revision
 * read up to.
 */
function readHistory(stmt: Statements, prefix: string, after: number, upTo: number): { batches: WatchBatch[]; reached: number } {
  const batches: { revision: number; events: StoreEvent[] }[] = [];
  let bytes = 0;
  for (const row of stmt.history.iterate(after, upTo, prefix, prefixEnd(prefix))) {
    const last = batches[batches.length - 1];
    if (last && last.revision !== row.rev && bytes > HISTORY_PAGE_BYTES) {
      return { batches, reached: last.revision };
    }
    bytes += (row.value?.byteLength ?? 0) + (row.prev_value?.byteLength ?? 0);
    const e = historyToEvent(row);
    if (last && last.revision === row.rev) last.events.push(e);
    else batches.push({ revision: row.rev, events: [e] });
  }
  return { batches, reached: upTo };
}

/** Hands a committed revision's events to the live watchers under their prefixes; a watcher whose buffer overflows falls back to history. */
function fanOut(watchers: Set<Watcher>, bufferLimit: number, bufferBytes: number, rev: number, events: StoreEvent[]): void {
  for (const w of watchers) {
    if (!w.synced || rev <= w.cursor) continue;
    w.reached = rev;
    const mine = events.filter((e) => e.kv.key.startsWith(w.prefix));
    if (mine.length > 0) {
      const bytes = eventBytes(mine);
      if (w.queuedEvents + mine.length > bufferLimit || w.queuedBytes + bytes > bufferBytes) {
        // Too slow to keep in memory: drop the buffer and let it catch up from history.
        w.synced = false;
        w.queue = [];
        w.queuedEvents = 0;
        w.queuedBytes = 0;
      } else {
        w.queue.push({ revision: rev, events: mine });
        w.queuedEvents += mine.length;
        w.queuedBytes += bytes;
      }
    }
    w.wake?.();
  }
}

/** What a watch reads of its store: the statements, the watcher set, and the current and compacted revisions. */
interface WatchState {
  stmt: Statements;
  watchers: Set<Watcher>;
  checkOpen: () => void;
  revision: () => number;
  compacted: () => number;
}

/** Watches the store under prefix after fromRevision: catches up from history, then follows the live writes. */
async function* watchSqlite(ctx: WatchState, prefix: string, fromRevision: number, signal: AbortSignal): AsyncGenerator<WatchBatch> {
  ctx.checkOpen();
  if (fromRevision < ctx.compacted()) throw compactedError(fromRevision, ctx.compacted());
  const w: Watcher = { prefix, cursor: fromRevision, synced: false, queue: [], queuedEvents: 0, queuedBytes: 0, reached: 0, wake: undefined };
  ctx.watchers.add(w);
  const onAbort = () => w.wake?.();
  signal.addEventListener("abort", onAbort);
  const resync = () => {
    w.synced = true;
    w.reached = ctx.revision();
  };
  try {
    for (;;) {
      if (signal.aborted) return;
      ctx.checkOpen();
      if (!w.synced) {
        // Catch up from history one page at a time; reading the last page and switching to
        // live mode happen in the same synchronous step, so no write falls in between.
        if (w.cursor < ctx.compacted()) throw compactedError(w.cursor, ctx.compacted());
        const upTo = Math.min(ctx.revision(), w.cursor + HISTORY_PAGE_REVISIONS);
        if (upTo <= w.cursor) {
          resync();
          continue;
        }
        const { batches, reached } = readHistory(ctx.stmt, prefix, w.cursor, upTo);
        if (reached === ctx.revision()) resync();
        for (const b of batches) {
          if (signal.aborted) return;
          w.cursor = b.revision;
          yield b;
        }
        // Everything under prefix up to `reached` is delivered: say so, then go on from there.
        if (reached > w.cursor) {
          w.cursor = reached;
          yield { revision: reached, events: [] };
        }
        continue;
      }
      const next = w.queue.shift();
      if (next) {
        w.queuedEvents -= next.events.length;
        w.queuedBytes -= eventBytes(next.events);
        w.cursor = next.revision;
        yield next;
        continue;
      }
      if (w.reached > w.cursor) {
        // Revisions with nothing under prefix: report the progress.
        w.cursor = w.reached;
        yield { revision: w.cursor, events: [] };
        continue;
      }
      await new Promise<void>((resolve) => {
        w.wake = resolve;
      });
      w.wake = undefined;
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    ctx.watchers.delete(w);
  }
}

/**
 * The byte sizes of the kept history's revisions, which decide how far to compact so that at
 * most historyLimit revisions and historyBudget bytes stay.
 */
function trackHistorySizes(initial: RevisionSize[], historyLimit: number, historyBudget: number) {
  // The bytes of every kept revision, oldest first (a queue with a moving head).
  let sizes = initial;
  let sizesHead = 0;
  let historyBytes = sizes.reduce((n, s) => n + s.bytes, 0);
  return {
    /**
     * The revision to compact up to so that at most historyLimit revisions and historyBudget
     * bytes stay (the newest revision always stays), given the revisions about to be added.
     */
    target(compacted: number, head: number, added: readonly RevisionSize[]): number {
      let target = Math.max(compacted, head - historyLimit);
      let bytes = historyBytes + added.reduce((n, s) => n + s.bytes, 0);
      const all = (i: number) => (i < sizes.length ? sizes[i] : added[i - sizes.length]);
      for (let i = sizesHead; bytes > historyBudget && i < sizes.length + added.length; i++) {
        const s = all(i)!;
        if (s.rev >= head) break;
        target = Math.max(target, s.rev);
        bytes -= s.bytes;
      }
      return target;
    },

    /** Drops the sizes of compacted revisions and records the new ones, once a batch committed. */
    record(added: readonly RevisionSize[], compactTo: number): void {
      for (const s of added) {
        sizes.push(s);
        historyBytes += s.bytes;
      }
      while (sizesHead < sizes.length && sizes[sizesHead]!.rev <= compactTo) historyBytes -= sizes[sizesHead++]!.bytes;
      if (sizesHead > 1024 && sizesHead * 2 > sizes.length) {
        sizes = sizes.slice(sizesHead);
        sizesHead = 0;
      }
    },
  };
}

/** Returns the function that schedules giving free pages back to the file system a step at a time, between other work. */
function vacuumInSteps(db: Database.Database, isClosed: () => boolean): () => void {
  let vacuumScheduled = false;
  /** Gives free pages back to the file system a step at a time, between other work. */
  const vacuum = () => {
    vacuumScheduled = false;
    if (isClosed()) return;
    const free = db.pragma("freelist_count", { simple: true }) as number;
    if (free <= VACUUM_THRESHOLD_PAGES) return;
    db.pragma(`incremental_vacuum(${VACUUM_STEP_PAGES})`);
    // Another step while more than the threshold is left; after the last one the WAL, which
    // holds the steps' writes, is truncated (a step leaving only a few free pages is the last).
    if (free - VACUUM_STEP_PAGES > VACUUM_THRESHOLD_PAGES) scheduleVacuum();
    else db.pragma("wal_checkpoint(TRUNCATE)");
  };
  const scheduleVacuum = () => {
    if (vacuumScheduled) return;
    vacuumScheduled = true;
    setImmediate(vacuum);
  };
  return scheduleVacuum;
}

/** Reads the keys under prefix at o.revision (the current one by default), a page of o.limit after o.after. */
function rangeAt(stmt: Statements, revision: number, compacted: number, prefix: string, o: RangeOptions = {}): RangeResult {
  const at = o.revision || revision;
  if (at > revision) throw futureRevisionError(at, revision);
  if (at < compacted) throw compactedError(at, compacted);
  const limit = o.limit && o.limit > 0 ? o.limit : -1;
  const params = { prefix, after: o.after ?? "", end: prefixEnd(prefix), limit: limit > 0 ? limit + 1 : -1 };
  const rows = at === revision ? stmt.range.all(params) : stmt.rangeAt.all({ ...params, rev: at });
  const more = limit > 0 && rows.length > limit;
  if (more) rows.pop();
  const kvs = rows.map(toKv);
  const lastKey = kvs[kvs.length - 1]?.key;
  // The keys after this page as they were at the page's revision (a later page reads those).
  let remaining = 0;
  if (more && lastKey !== undefined) {
    const rest = { prefix, after: lastKey, end: prefixEnd(prefix) };
    remaining = (at === revision ? stmt.count.get(rest) : stmt.countAt.get({ ...rest, rev: at }))!.n;
  }
  return { kvs, revision: at, more, remaining };
}

/** The SQLite store: a Store, and how many watches it is following now (for tests). */
export interface SqliteStore extends Store {
  readonly watchCount: number;
}

/** Opens (creating when needed) a SQLite-backed store. */
export function openSqliteStore(options: SqliteStoreOptions = {}): SqliteStore {
  const historyLimit = Math.max(1, Math.floor(options.historyLimit ?? 10_000));
  const historyBudget = Math.max(1, Math.floor(options.historyBytes ?? DEFAULT_HISTORY_BYTES));
  const db = openDatabase(options.path);

  const stmt = prepareStatements(db);

  let revision = stmt.getMeta.get("revision")!.value;
  let compacted = stmt.getMeta.get("compact_revision")!.value;
  let closed = false;
  const watchers = new Set<Watcher>();
  const bufferLimit = Math.max(1, Math.floor(options.watchBufferLimit ?? 10_000));
  const bufferBytes = Math.max(1, Math.floor(options.watchBufferBytes ?? 16 * 1024 * 1024));
  const historySizes = trackHistorySizes(stmt.sizes.all(), historyLimit, historyBudget);

  const checkOpen = () => {
    if (closed) throw new ConnectError("store is closed", Code.Unavailable);
  };

  /**
   * Commits a batch of transactions as one SQLite transaction (group commit: one fsync for all
   * the writes queued in one turn of the event loop), each still with its own revision.
   */
  const commitBatch = db.transaction((batch: readonly PendingTxn[]) => {
    let rev = revision;
    const results: BatchResult[] = [];
    const added: RevisionSize[] = [];
    for (const t of batch) {
      const r = applyOne(stmt, t.compares, t.ops, rev + 1);
      if (r && r.events.length > 0) {
        rev += 1;
        added.push({ rev, bytes: r.bytes });
      }
      results.push({ events: r?.events, revision: rev });
    }
    let compactTo = compacted;
    if (rev !== revision) {
      stmt.setMeta.run(rev, "revision");
      compactTo = historySizes.target(compacted, rev, added);
      if (compactTo > compacted) {
        stmt.compact.run(compactTo);
        stmt.setMeta.run(compactTo, "compact_revision");
      }
    }
    return { results, added, compactTo };
  });

  const scheduleVacuum = vacuumInSteps(db, () => closed);

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
    let outcome: ReturnType<typeof commitBatch>;
    try {
      outcome = commitBatch(batch);
    } catch (e) {
      // Rolled back as a whole: none of these writes happened.
      for (const t of batch) t.reject(e);
      return;
    }
    const { results, added, compactTo } = outcome;
    const last = results[results.length - 1]!.revision;
    if (last !== revision) revision = last;
    if (compactTo > compacted) {
      compacted = compactTo;
      scheduleVacuum();
    }
    historySizes.record(added, compacted);
    batch.forEach((t, i) => {
      const r = results[i]!;
      if (r.events && r.events.length > 0) fanOut(watchers, bufferLimit, bufferBytes, r.revision, r.events);
      t.resolve({ succeeded: r.events !== undefined, revision: r.revision });
    });
  };

  const scheduleFlush = () => {
    if (flushScheduled) return;
    flushScheduled = true;
    setImmediate(flush);
  };

  const watchState: WatchState = {
    stmt,
    watchers,
    checkOpen,
    revision: () => revision,
    compacted: () => compacted,
  };
  const watch = (prefix: string, fromRevision: number, signal: AbortSignal) => watchSqlite(watchState, prefix, fromRevision, signal);

  return {
    get watchCount() {
      return watchers.size;
    },
    async revision() {
      checkOpen();
      return revision;
    },
    async get(key) {
      checkOpen();
      const row = stmt.get.get(key);
      return row ? toKv(row) : undefined;
    },
    async range(prefix, o) {
      checkOpen();
      return rangeAt(stmt, revision, compacted, prefix, o);
    },
    async txn(compares, ops): Promise<TxnResult> {
      checkOpen();
      checkTxnOps(ops);
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
