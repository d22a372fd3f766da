/**
 * A real etcd for tests and benchmarks: Debian's `etcd` binary started on free loopback ports
 * with a temporary data directory, one member or a cluster of three (for failover tests).
 * Nothing here imitates etcd; when the binary is missing, starting fails with a message saying
 * how to install it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The etcd binary: $K4S_ETCD_BIN, else Debian's. */
export const ETCD_BIN = process.env.K4S_ETCD_BIN ?? "/usr/bin/etcd";

/**
 * The server limits k4s needs from etcd: one Apply (up to 10,000 objects) or the cascade delete
 * of a 10,000-replica ReplicaSet is one transaction, and a transaction's request may be as big
 * as an Apply's (16 MiB of typed objects).
 */
export const ETCD_K4S_FLAGS = ["--max-txn-ops", "20000", "--max-request-bytes", String(32 * 1024 * 1024)];

/** One running etcd member. */
export interface EtcdMember {
  readonly name: string;
  /** Its client URL, http://127.0.0.1:PORT. */
  readonly clientUrl: string;
  readonly process: ChildProcess;
  /** Everything it printed (etcd logs to stderr). */
  output(): string;
  /** Sends a signal (default SIGKILL) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Starts it again on its data (after kill; a running member is killed first). Resolves once it
   * answers its health check, which needs a quorum: restart enough members at once.
   */
  restart(): Promise<void>;
}

/** A running etcd cluster (one or three members) with its temporary data. */
export interface EtcdCluster {
  readonly members: EtcdMember[];
  /** `etcd://h:p,h:p,...`: what `k4s server --store` takes. */
  readonly storeUrl: string;
  /** Client endpoints (host:port) of every member. */
  readonly endpoints: string[];
  /** Kills every member and removes the data. */
  stop(): Promise<void>;
}

/** EtcdOptions tune a test cluster. */
export interface EtcdOptions {
  /** 1 (default) or 3. */
  members?: 1 | 3;
  /** Extra flags for every member (e.g. a short --experimental-watch-progress-notify-interval). */
  flags?: string[];
}

/** Finds n distinct free loopback ports (bound to port 0, then released). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<import("node:net").Server>((resolve, reject) => {
          const s = createServer();
          s.once("error", reject);
          s.listen(0, "127.0.0.1", () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** Resolves once url answers /health with {"health":"true"}, or rejects after timeoutMs. */
async function waitHealthy(url: string, member: ChildProcess, output: () => string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (member.exitCode !== null || member.signalCode !== null) {
      throw new Error(`etcd exited (${member.exitCode ?? member.signalCode}) before it was healthy:\n${output().slice(-4000)}`);
    }
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
      if (res.ok && ((await res.json()) as { health?: string }).health === "true") return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`etcd at ${url} not healthy after ${timeoutMs} ms:\n${output().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts a fresh etcd cluster on free loopback ports; stop() removes it and its data. A port
 * found free can be taken by another process before etcd binds it (the machine runs other tests):
 * then it starts again on other ports, up to three times.
 */
export async function startEtcd(options: EtcdOptions = {}): Promise<EtcdCluster> {
  if (!existsSync(ETCD_BIN)) {
    throw new Error(`etcd not found at ${ETCD_BIN}: install Debian's etcd-server (apt-get install etcd-server) or set K4S_ETCD_BIN`);
  }
  for (let attempt = 1; ; attempt++) {
    try {
      return await startEtcdOnce(options);
    } catch (err) {
      if (attempt >= 3 || !/address already in use/.test(String(err))) throw err;
    }
  }
}

async function startEtcdOnce(options: EtcdOptions): Promise<EtcdCluster> {
  const count = options.members ?? 1;
  // In memory when the machine has /dev/shm: tests want etcd's behaviour, not the disk's fsync time.
  const dir = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "k4s-etcd-"));
  const ports = await freePorts(count * 2);
  const specs = Array.from({ length: count }, (_, i) => ({
    name: `m${i}`,
    client: `http://127.0.0.1:${ports[2 * i]}`,
    peer: `http://127.0.0.1:${ports[2 * i + 1]}`,
  }));
  const initialCluster = specs.map((s) => `${s.name}=${s.peer}`).join(",");
  const members: EtcdMember[] = specs.map((s) => {
    const args = [
      "--name", s.name,
      "--data-dir", join(dir, s.name),
      "--listen-client-urls", s.client,
      "--advertise-client-urls", s.client,
      "--listen-peer-urls", s.peer,
      "--initial-advertise-peer-urls", s.peer,
      "--initial-cluster", initialCluster,
      "--initial-cluster-token", `k4s-test-${process.pid}-${ports[0]}`,
      "--initial-cluster-state", "new",
      "--log-level", "warn",
      // Progress notifications every half second (etcd's default is 10 minutes), so tests see them.
      "--experimental-watch-progress-notify-interval", "500ms",
      "--logger", "zap",
      // Members on loopback elect a new etcd leader in well under a second (etcd's defaults,
      // 100 ms heartbeats and a 1 s election timeout, are for networks): an etcd leader change
      // then stays under a k4s server's 2 s lease TTL, as docs/cluster.md tells operators to keep it.
      ...(count > 1 ? ["--heartbeat-interval", "50", "--election-timeout", "500"] : []),
      ...ETCD_K4S_FLAGS,
      ...(options.flags ?? []),
    ];
    let out = "";
    let child!: ChildProcess;
    let exited!: Promise<void>;
    // A restart runs the same member on its data dir (etcd ignores the initial-cluster flags then).
    const run = () => {
      child = spawn(ETCD_BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
      child.stdout!.on("data", (d) => (out += d));
      child.stderr!.on("data", (d) => (out = (out + d).slice(-200_000)));
      const c = child;
      exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
    };
    run();
    return {
      name: s.name,
      clientUrl: s.client,
      get process() {
        return child;
      },
      output: () => out,
      async kill(signal: NodeJS.Signals = "SIGKILL") {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        await exited;
      },
      async restart() {
        await this.kill();
        run();
        await waitHealthy(s.client, child, () => out, 60_000);
      },
    };
  });
  const stop = async () => {
    await Promise.all(members.map((m) => m.kill()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await Promise.all(members.map((m) => waitHealthy(m.clientUrl, m.process, m.output, 60_000)));
  } catch (err) {
    await stop();
    throw err;
  }
  const endpoints = specs.map((s) => s.client.replace("http://", ""));
  return { members, endpoints, storeUrl: `etcd://${endpoints.join(",")}`, stop };
}
