/**
 * `npm run bench:huge [-- --objects 10000] [--replicas 10000] [--store sqlite|etcd]`: how much a
 * huge Apply and a huge scale-up hold everyone else up.
 *
 * A real k4s server process (durable SQLite in a temporary data dir, or a real etcd), a real
 * worker host process with a live container ("canary") on a 1 s heartbeat, and this process as
 * the probe: one Get every 20 ms, each timed. Then, each from an applier process of its own:
 *   1. one Apply of N Containers (typed objects, ~300 bytes each; a module no host serves, so
 *      they stay Pending and only the store, the controllers and the scheduler work),
 *   2. a ReplicaSet of built-in echo workers scaled 0 -> R (until R are Running on the host)
 *      and back to 0 (until all are gone).
 * Printed per phase: its duration, the probe's latency (p50, p99, max) against the idle
 * baseline measured first in the same run, the probes that took over 100 ms, the server's peak
 * RSS, and whether the live host was dropped (HostLost events, canary restarts).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Command } from "commander";
import { createClient, type Container, type K4sClient, type ReplicaSet } from "../src/client/index.js";
import { startEtcd, type EtcdCluster } from "../test/etcd.js";
import { createLatencyRecorder, type LatencySummary } from "./lib/latency-recorder.js";
import { forkTs, freePort, spawnBinary, type Child } from "./lib/processes.js";
import { K4S_BIN } from "./lib/systems.js";

const opts = new Command("bench:huge")
  .option("--objects <n>", "Containers in the one Apply", (v) => Number(v), 10_000)
  .option("--replicas <n>", "replicas of the scaled ReplicaSet (0: skip)", (v) => Number(v), 10_000)
  .option("--store <kind>", "sqlite or etcd", "sqlite")
  .parse(process.argv)
  .opts<{ objects: number; replicas: number; store: string }>();

const PROBE_EVERY_MS = 20;

/** Peak resident set size of a process (VmHWM), in MiB. */
function peakRssMib(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** Times one Get every PROBE_EVERY_MS until stopped; each phase reads its own recorder. */
function startProbe(client: K4sClient) {
  let recorder = createLatencyRecorder();
  let slow = 0;
  let stopped = false;
  const done = (async () => {
    while (!stopped) {
      const t0 = performance.now();
      await client.get("Container", "canary");
      const ms = performance.now() - t0;
      recorder.record(ms);
      if (ms > 100) slow++;
      await new Promise((r) => setTimeout(r, PROBE_EVERY_MS));
    }
  })();
  return {
    /** Starts a new phase; returns the summary of the one that ended. */
    phase(): { latency: LatencySummary; slow: number } {
      const out = { latency: recorder.summary(), slow };
      recorder = createLatencyRecorder();
      slow = 0;
      return out;
    },
    async stop() {
      stopped = true;
      await done;
    },
  };
}

async function waitFor(what: string, timeoutMs: number, test: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await test())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main(): Promise<void> {
  const children: Child[] = [];
  const dir = mkdtempSync(join(tmpdir(), "k4s-huge-"));
  let etcd: EtcdCluster | undefined;
  let client: K4sClient | undefined;
  try {
    if (opts.store === "etcd") etcd = await startEtcd();
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const storeArgs = etcd ? ["--store", etcd.storeUrl] : ["--data-dir", join(dir, "data")];
    const server = await spawnBinary(
      "k4s server",
      process.execPath,
      [K4S_BIN, "server", "--port", String(port), "--no-local-worker", "--heartbeat-ms", "1000", ...storeArgs],
      /listening on/,
      30_000,
    );
    children.push(server);
    const host = await spawnBinary("worker host", process.execPath, [K4S_BIN, "worker", "--server", address, "--name", "live"], /serving containers/, 30_000);
    children.push(host);
    client = createClient({ address });
    const c = client;
    await c.apply("kind: Container\nmetadata: {name: canary}\nspec: {module: workers, function: echo_worker}\n");
    await waitFor("the canary to run", 30_000, async () => (await c.get("Container", "canary")).status?.phase === "Running");

    // HostLost events are followed live: the server keeps only its last 1,000 events, far fewer
    // than a scale of 10,000 makes, so reading them at the end missed every one.
    const lost: string[] = [];
    const follow = new AbortController();
    const following = (async () => {
      try {
        for await (const e of c.events({ kind: "Container", follow: true, signal: follow.signal })) if (e.reason === "HostLost") lost.push(`${e.name}: ${e.message}`);
      } catch {
        // Aborted at the end.
      }
    })();
    const probe = startProbe(c);
    const rows: Record<string, string | number>[] = [];
    const measure = async (name: string, work: () => Promise<void>) => {
      probe.phase();
      const t0 = performance.now();
      await work();
      const seconds = (performance.now() - t0) / 1000;
      const { latency, slow } = probe.phase();
      rows.push({ phase: name, seconds: +seconds.toFixed(2), p50: +latency.p50.toFixed(1), p99: +latency.p99.toFixed(1), max: +latency.max.toFixed(0), over100ms: slow, serverPeakRssMib: +peakRssMib(server.pid).toFixed(0) });
    };

    await measure("idle (baseline, 3 s)", () => new Promise((r) => setTimeout(r, 3000)));

    if (opts.objects > 0) {
      await measure(`apply ${opts.objects} Containers`, async () => {
        const applier = await forkTs("applier", new URL("./k4s/huge-apply-process.ts", import.meta.url), [address, String(opts.objects)], { readyTimeoutMs: 600_000 });
        children.push(applier.child);
        if (applier.ready.ev === "error") throw new Error(`apply failed: ${String(applier.ready.message)}`);
        await applier.child.stop();
      });
      await measure("settle (Pending status written, 5 s)", () => new Promise((r) => setTimeout(r, 5000)));
    }

    if (opts.replicas > 0) {
      await c.apply(`kind: ReplicaSet\nmetadata: {name: huge-rs}\nspec: {replicas: 0, template: {spec: {module: workers, function: echo_worker}}}\n`);
      const count = async () => {
        const rs = (await c.get("ReplicaSet", "huge-rs")) as ReplicaSet;
        return { replicas: rs.status?.replicas ?? 0, ready: rs.status?.readyReplicas ?? 0 };
      };
      await measure(`scale rs 0 -> ${opts.replicas} (all Running)`, async () => {
        await c.scale("huge-rs", opts.replicas);
        await waitFor(`${opts.replicas} ready replicas`, 900_000, async () => (await count()).ready === opts.replicas);
      });
      await measure(`scale rs ${opts.replicas} -> 0 (all gone)`, async () => {
        await c.scale("huge-rs", 0);
        await waitFor("no replica left", 900_000, async () => (await c.list("Container", { nameGlob: "huge-rs-*", limit: 1 })).items.length === 0);
      });
    }
    await probe.stop();

    follow.abort();
    await following;
    const canary = (await c.get("Container", "canary")) as Container;
    console.log(`\nk4s huge-apply bench (store ${opts.store}, ${opts.objects} objects, ${opts.replicas} replicas; load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")})`);
    console.table(rows);
    const idle = rows[0]!;
    for (const r of rows.slice(1)) {
      console.log(`${r.phase}: probe max ${r.max} ms = ${(Number(r.max) / Math.max(1, Number(idle.max))).toFixed(1)}x idle max, p99 ${r.p99} ms = ${(Number(r.p99) / Math.max(0.1, Number(idle.p99))).toFixed(1)}x idle p99`);
    }
    console.log(`live host: HostLost events ${lost.length}, canary restarts ${canary.status?.restarts ?? "?"}, canary phase ${canary.status?.phase}`);
  } finally {
    await client?.close();
    for (const ch of children.reverse()) await ch.stop(5000);
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
