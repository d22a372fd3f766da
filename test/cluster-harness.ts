/**
 * Real `k4s server --store etcd://...` processes for the cluster tests, each on a free port.
 */
import { createClient, type K4sClient } from "../src/client/index.js";
import { spawnK4s, type Proc } from "./helpers.js";

/** Lease TTL the servers of the cluster tests run with (s). */
export const LEASE_TTL = 2;

/** ClusterServer is one running server process with a client of its own address only. */
export interface ClusterServer {
  proc: Proc;
  address: string;
  client: K4sClient;
}

/** Starts `k4s server --store URL` on a free port (with its local worker host unless told not to); resolves once it listens. */
export async function clusterServer(store: string, extra: string[] = []): Promise<ClusterServer> {
  const proc = spawnK4s(["server", "--port", "0", "--no-dashboard", "--store", store, "--lease-ttl", String(LEASE_TTL), ...extra]);
  await proc.waitFor(/listening on \S+/, 30_000);
  const address = /listening on (\S+)/.exec(proc.stdout())![1]!;
  return { proc, address, client: createClient({ address, reconnect: false }) };
}

/** Whether a server said it leads (and has not been replaced since it started). */
export const isLeader = (s: ClusterServer): boolean => /is the leader/.test(s.proc.stdout());
