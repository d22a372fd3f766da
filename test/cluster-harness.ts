/**
 * Real `k4s server --store etcd://...` processes for the cluster tests, each on a free port.
 */
import { createClient, type K4sClient } from "../src/client/index.js";
import type { TlsOptions } from "../src/transport/channel.js";
import { startEtcd, type EtcdCluster } from "./etcd.js";
import { eventually, spawnK4s, type Proc } from "./helpers.js";

/** Lease TTL the servers of the cluster tests run with (s). */
export const LEASE_TTL = 2;

/** ClusterServer is one running server process with a client of its own address only. */
export interface ClusterServer {
  proc: Proc;
  address: string;
  client: K4sClient;
}

/** Starts `k4s server --store URL` on a free port (with its local worker host unless told not to); resolves once it listens. */
export async function clusterServer(store: string, extra: string[] = [], tls?: TlsOptions): Promise<ClusterServer> {
  const proc = spawnK4s(["server", "--port", "0", "--no-dashboard", "--store", store, "--lease-ttl", String(LEASE_TTL), ...extra]);
  await proc.waitFor(/listening on \S+/, 30_000);
  const address = /listening on (\S+)/.exec(proc.stdout())![1]!;
  return { proc, address, client: createClient({ address, reconnect: false, tls }) };
}

/** Whether a server said it leads (and has not been replaced since it started). */
export const isLeader = (s: ClusterServer): boolean => /is the leader/.test(s.proc.stdout());

/** A running cluster of the tests: its etcd, its servers in start order, and who led first. */
export interface TestCluster {
  etcd: EtcdCluster;
  servers: ClusterServer[];
  /** The server elected first. */
  leader: ClusterServer;
  /** The others, in start order. */
  standbys: ClusterServer[];
  /** Closes every client, SIGKILLs every server still running, stops etcd (once; later calls wait for it). */
  stop(): Promise<void>;
}

/** What startCluster starts besides n servers. */
export interface StartClusterOptions {
  /** An etcd of 1 (default) or 3 members. */
  etcdMembers?: 1 | 3;
  /** Extra flags for every server (e.g. --no-local-worker). */
  flags?: string[];
  /** Extra flags for server i only (e.g. its own certificate). */
  flagsOf?: (i: number) => string[];
  /** How the servers' clients trust them, when they serve TLS. */
  tls?: TlsOptions;
}

/**
 * Starts a real etcd and n `k4s server` processes over it, one after another, and waits for one
 * of them to lead. Whatever fails on the way stops what started.
 */
export async function startCluster(n: number, options: StartClusterOptions = {}): Promise<TestCluster> {
  const etcd = await startEtcd({ members: options.etcdMembers ?? 1 });
  const servers: ClusterServer[] = [];
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      for (const s of servers) {
        await s.client.close();
        await s.proc.kill("SIGKILL");
      }
      await etcd.stop();
    })());
  try {
    for (let i = 0; i < n; i++) servers.push(await clusterServer(etcd.storeUrl, [...(options.flags ?? []), ...(options.flagsOf?.(i) ?? [])], options.tls));
    const leader = (await eventually(() => servers.find(isLeader), 30_000, "a leader"))!;
    return { etcd, servers, leader, standbys: servers.filter((s) => s !== leader), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
