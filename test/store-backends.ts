/**
 * The two Store backends the store and resource-service suites run against: SQLite in memory,
 * and etcd, a real one started for the test (see etcd.ts).
 */
import { Etcd3 } from "etcd3";
import { openEtcdStore } from "../src/server/store/etcd-store.js";
import type { Store } from "../src/server/store/store.js";
import { startEtcd, type EtcdCluster } from "./etcd.js";
import { sqliteBackend } from "./sqlite-backend.js";

export { sqliteBackend };

/** A fresh store of one backend, and what the test needs around it. */
export interface OpenedStore {
  readonly store: Store;
  /** What `k4s server --store` takes for this store's backend (etcd only; SQLite in memory has none). */
  readonly url: string | undefined;
  /** Compacts the backend's history up to revision (etcd's own Compact; undefined for SQLite, which compacts by its limits). */
  readonly compact: ((revision: number) => Promise<void>) | undefined;
  /** Closes the store and stops what was started for it. */
  close(): Promise<void>;
}

/** StoreBackend opens fresh stores of one kind. */
export interface StoreBackend {
  readonly name: "sqlite" | "etcd";
  /** A fresh, empty store. */
  open(options?: { historyLimit?: number; compactIntervalMs?: number }): Promise<OpenedStore>;
}

/** Opens a store on a running etcd cluster (several may share one). */
export function openOnEtcd(etcd: EtcdCluster, options: { historyLimit?: number; compactIntervalMs?: number } = {}): OpenedStore {
  const store = openEtcdStore({ endpoints: etcd.endpoints, ...options });
  return {
    store,
    url: etcd.storeUrl,
    async compact(revision) {
      const client = new Etcd3({ hosts: etcd.endpoints.map((e) => `http://${e}`) });
      try {
        await client.kv.compact({ revision, physical: true });
      } finally {
        client.close();
      }
    },
    close: () => store.close(),
  };
}

export const etcdBackend: StoreBackend = {
  name: "etcd",
  async open(options = {}) {
    const etcd = await startEtcd();
    const opened = openOnEtcd(etcd, options);
    return {
      ...opened,
      async close() {
        await opened.close();
        await etcd.stop();
      },
    };
  },
};

/** Both backends, SQLite first. */
export const BACKENDS: readonly StoreBackend[] = [sqliteBackend, etcdBackend];
