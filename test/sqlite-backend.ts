/**
 * sqliteBackend, the SQLite-in-memory StoreBackend, on its own: the tests run once per mutant
 * import it from here so that they load neither etcd3 nor the etcd store (store-backends.ts
 * re-exports it beside the etcd backend).
 */
import { openSqliteStore } from "../src/server/store/sqlite-store.js";
import type { StoreBackend } from "./store-backends.js";

/** Fresh SQLite stores in memory. */
export const sqliteBackend: StoreBackend = {
  name: "sqlite",
  async open(options = {}) {
    const store = openSqliteStore({ historyLimit: options.historyLimit });
    return { store, url: undefined, compact: undefined, close: () => store.close() };
  },
};
