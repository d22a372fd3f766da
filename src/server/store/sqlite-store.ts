/**
 * The Store on SQLite (better-sqlite3): embedded, transactional, and durable with
 * synchronous=FULL in WAL mode, so a transaction is on disk before txn() resolves.
 */
import type { Store } from "./store.js";

/** SqliteStoreOptions choose the database file and the history window. */
export interface SqliteStoreOptions {
  /** Database file; undefined keeps everything in memory (tests). */
  path?: string;
  /** Revisions of history kept for watches (default 10000). */
  historyLimit?: number;
}

/** Opens (creating when needed) a SQLite-backed store. */
export function openSqliteStore(options: SqliteStoreOptions = {}): Store {
  void options;
  throw new Error("openSqliteStore: not implemented yet");
}
