/**
 * Opens the Store a server runs on, chosen by one string as `k4s server --store` takes it:
 * `sqlite:DIR` (the default, a file in DIR), `etcd://HOST:PORT[,HOST:PORT...]`, or nothing for
 * an in-memory SQLite store (tests, `--memory`). A store that cannot be opened is a
 * StartupError naming it; nothing is left behind.
 */
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { untilAborted } from "../../api/abortable-delay.js";
import { prepareDataDir, removeCreatedDirs } from "../data-dir.js";
import { reasonOf, StartupError } from "../startup-error.js";
import { openSqliteStore } from "./sqlite-store.js";
import type { Store } from "./store.js";

/** StoreSpec is where the state lives and how long its history is. */
export interface StoreSpec {
  /** `sqlite:DIR`, `etcd://h:p,...`; undefined: in memory. */
  url?: string;
  /** Revisions of history kept at most (default 10000). */
  historyLimit?: number;
  /** Bytes of history kept at most by the SQLite store (default 64 MiB). */
  historyBytes?: number;
  /** Time between compaction rounds of the etcd store (default 60 s). */
  compactIntervalMs?: number;
  /** Where background failures (etcd compaction) are reported. */
  onError?: (message: string, err?: unknown) => void;
  /**
   * Gives up reaching the store (an etcd that does not answer): the store is closed and the open
   * rejects with the signal's reason.
   */
  signal?: AbortSignal;
}

/** The SQLite database file inside a data directory. */
export const SQLITE_FILE = "k4s.db";

/** Parses `etcd://h:p[,h:p...]` into endpoints, or undefined when the text is not such a URL. */
export function parseEtcdUrl(url: string): string[] | undefined {
  const m = /^etcd:\/\/(.+)$/.exec(url.trim());
  if (!m) return undefined;
  const endpoints = m[1]!.split(",").map((e) => e.trim().replace(/\/+$/, ""));
  for (const e of endpoints) {
    if (!/^[^\s/:]+:\d{1,5}$/.test(e) && !/^\[[0-9a-fA-F:.]+\]:\d{1,5}$/.test(e)) {
      throw new ConnectError(`etcd endpoint "${e}" in "${url}" is not HOST:PORT`, Code.InvalidArgument);
    }
  }
  return endpoints;
}

/** Opens the store a spec names, and for etcd checks that it answers. */
export async function openStore(spec: StoreSpec): Promise<Store> {
  const { url } = spec;
  const history = { historyLimit: spec.historyLimit, historyBytes: spec.historyBytes };
  if (url === undefined || url === "") return openSqliteStore(history);
  let endpoints: string[] | undefined;
  try {
    endpoints = parseEtcdUrl(url);
  } catch (err) {
    throw new StartupError(`store ${url}: ${(err as Error).message.replace(/^\[\w+\] /, "")}`, "store");
  }
  if (endpoints) {
    // Loaded only here: the etcd client and its gRPC stack take ~0.3-1.3 s to import, a cost
    // every `k4s server` on SQLite (the default) would otherwise pay at start-up.
    const { openEtcdStore } = await import("./etcd-store.js");
    const store = openEtcdStore({ endpoints, historyLimit: spec.historyLimit, compactIntervalMs: spec.compactIntervalMs, onError: spec.onError });
    try {
      await untilAborted(store.revision(), spec.signal);
    } catch (err) {
      await store.close();
      if (spec.signal?.aborted) throw err;
      throw new StartupError(`cannot reach the store ${url}: ${err instanceof ConnectError ? err.rawMessage : reasonOf(err)}`, "store");
    }
    return store;
  }
  const dataDir = /^sqlite:(.+)$/.exec(url)?.[1];
  if (!dataDir) throw new StartupError(`store "${url}": expected sqlite:DIR or etcd://HOST:PORT[,HOST:PORT...]`, "store");
  const dir = prepareDataDir(dataDir);
  const path = join(dir.path, SQLITE_FILE);
  try {
    return openSqliteStore({ path, ...history });
  } catch (err) {
    removeCreatedDirs(dir.created);
    const reason = err instanceof ConnectError ? err.rawMessage.replace(`store ${path} is `, "") : reasonOf(err);
    throw new StartupError(`cannot open the store ${path}: ${reason}`, "dataDir");
  }
}
