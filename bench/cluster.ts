/**
 * `npm run bench:cluster [-- --quick] [--rounds N] [--scenarios NAME...]`: routing between
 * servers, in one run (`--scenarios "via peer" crossed`: only those). Two `k4s server` processes
 * over one etcd member (in /dev/shm when there is one), a `k4s worker` host connected to each
 * (host-0 to server 0, host-1 to server 1), a ReplicaSet of two echo containers (concurrency
 * 256) that the scheduler places one on each host, and a Service over them; this process is the
 * load generator:
 *
 *   direct              client -> server 0 -> host-0               (one server, one host: the baseline)
 *   via peer            client -> server 1 -> peer link -> server 0 -> host-0   (the hop's cost)
 *   2 servers           half the calls through server 0 to host-0's replica, half through
 *                       server 1 to host-1's: each served where it arrives (2 servers vs 1)
 *   crossed             half the calls through server 0 to host-1's replica, half through
 *                       server 1 to host-0's: every call hops, both ways at once
 *   2 servers, Service  the calls alternate between the servers, to the Service: the router picks
 *                       an endpoint in turn cluster-wide, so about half the calls hop
 *
 * Closed loop, 100-byte requests, with 64 and with 1 in flight (the same total in every
 * scenario): req/s, p50, p99, and the CPU and the read and write system calls (each a batch of
 * frames or more) per call of both server processes, medians over rounds
 * (the order rotates each round), and the ratios against `direct`. BENCH_CPU_PROF=DIR writes a
 * V8 CPU profile of each server there and prints when each window was measured: `node --import
 * tsx bench/read-profiles.ts OUTPUT DIR SCENARIO IN_FLIGHT` reads the servers' CPU per call in them.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "../src/client/index.js";
import { startEtcd, type EtcdCluster } from "../test/etcd.js";
import { median } from "./lib/latency-recorder.js";
import { closedLoop } from "./lib/load-drivers.js";
import { parseRoundOptions } from "./lib/round-options.js";
import { cpuMicros, freePort, ioSyscalls, spawnBinary, type Child } from "./lib/processes.js";
import { K4S_BIN, k4sExecArgv } from "./lib/systems.js";

const { rounds, warmupMs, durationMs, scenarios: only } = parseRoundOptions();
const payload = { pad: "x".repeat(88) }; // 100 bytes as JSON
const WORKERS_SDK_JS = new URL("../dist/workers/index.js", import.meta.url).href;

interface Row {
  scenario: string;
  inFlight: number;
  rate: number;
  p50: number;
  p99: number;
  cpuUsPerCall: number;
  /** The servers' read and write system calls per call. */
  syscallsPerCall: number;
  errors: number;
  firstError?: string;
}

const dir = mkdtempSync(join(tmpdir(), "k4s-bench-cluster-"));
const children: Child[] = [];
let etcd: EtcdCluster | undefined;

async function startServer(storeUrl: string): Promise<{ child: Child; address: string }> {
  const port = await freePort();
  const args = [...k4sExecArgv, K4S_BIN, "server", "--port", String(port), "--store", storeUrl, "--lease-ttl", "2", "--no-local-worker", "--no-dashboard"];
  const child = await spawnBinary("k4s server", process.execPath, args, /listening on/, 60_000);
  children.push(child);
  return { child, address: `127.0.0.1:${port}` };
}

async function waitFor(what: string, check: () => Promise<boolean>): Promise<void> {
  for (const t = Date.now(); !(await check().catch(() => false)); ) {
    if (Date.now() - t > 60_000) throw new Error(`${what} not within 60 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main(): Promise<void> {
  console.log(`load average at start ${loadavg().map((l) => l.toFixed(1)).join(" ")}`);
  etcd = await startEtcd();
  const servers = [await startServer(etcd.storeUrl), await startServer(etcd.storeUrl)];
  const clients = servers.map((s) => createClient({ address: s.address, reconnect: false }));
  await waitFor("a leader", async () => (await clients[0]!.servers()).some((m) => m.leader));
  const module = join(dir, "echo.mjs");
  writeFileSync(module, `import { defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};\nexport const echo = defineWorker(async (ctx) => { await ctx.handle((m) => m.value); });\n`);
  // host-i connects to server i (the other one second, for failover only).
  for (const i of [0, 1]) {
    const hostArgs = [K4S_BIN, "worker", "--server", `${servers[i]!.address},${servers[1 - i]!.address}`, "--name", `host-${i}`, "--module", `echo=${module}`];
    children.push(await spawnBinary("k4s worker", process.execPath, hostArgs, /serving/, 60_000));
  }
  const holders = async () => Object.fromEntries((await clients[0]!.servers()).flatMap((m) => m.sessions.map((x) => [x.name, m.address])));
  await waitFor("host-i held by server i", async () => {
    const h = await holders();
    return h["host-0"] === servers[0]!.address && h["host-1"] === servers[1]!.address;
  });
  // Both hosts are up before the ReplicaSet exists, so the scheduler puts one replica on each.
  await clients[0]!.apply(`kind: ReplicaSet
metadata: {name: bench-echo}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: bench-echo}}
    spec: {module: echo, function: echo, concurrency: 256, queueLimit: 10000}
---
kind: Service
metadata: {name: bench-echo}
spec: {matchLabels: {app: bench-echo}}
`);
  await waitFor("2 ready replicas", async () => (await clients[0]!.get("ReplicaSet", "bench-echo")).status?.readyReplicas === 2);
  const placed = (await clients[0]!.list("Container")).items;
  const on = [0, 1].map((i) => placed.find((c) => c.status?.host === `host-${i}`)?.metadata?.name);
  if (!on[0] || !on[1]) throw new Error(`the replicas are not one on each host: ${placed.map((c) => `${c.metadata?.name} on ${c.status?.host}`).join(", ")}`);
  const [local0, local1] = [`container/${on[0]}`, `container/${on[1]}`];
  console.log(`${on[0]} on host-0 (server 0 ${servers[0]!.address}), ${on[1]} on host-1 (server 1 ${servers[1]!.address})`);
  // Each server's messaging session, and its peer link, are opened before anything is measured.
  for (const c of clients) for (const to of [local0, local1, "service/bench-echo"]) await c.request(to, payload);

  const pids = servers.map((s) => s.child.pid);
  let turn = 0;
  let svcTurn = 0;
  const scenarios: Record<string, () => Promise<unknown>> = {
    direct: () => clients[0]!.request(local0, payload),
    "via peer": () => clients[1]!.request(local0, payload),
    "2 servers": () => (turn++ % 2 === 0 ? clients[0]!.request(local0, payload) : clients[1]!.request(local1, payload)),
    crossed: () => (turn++ % 2 === 0 ? clients[0]!.request(local1, payload) : clients[1]!.request(local0, payload)),
    "2 servers, Service": () => clients[svcTurn++ % 2]!.request("service/bench-echo", payload),
  };
  const measure = async (scenario: string, inFlight: number): Promise<Row> => {
    let cpu0 = 0;
    let cpu1 = 0;
    let t0 = 0n;
    let t1 = 0n;
    let io0 = 0;
    let io1 = 0;
    const cpu = () => pids.reduce((sum, pid) => sum + cpuMicros(pid), 0);
    const io = () => pids.reduce((sum, pid) => sum + ioSyscalls(pid), 0);
    const r = await closedLoop(scenarios[scenario]!, inFlight, {
      warmupMs,
      durationMs,
      onMeasureStart: () => {
        cpu0 = cpu();
        io0 = io();
        t0 = process.hrtime.bigint() / 1000n;
      },
      onMeasureEnd: () => {
        cpu1 = cpu();
        io1 = io();
        t1 = process.hrtime.bigint() / 1000n;
      },
    });
    // Profiled: when each window was (µs on the monotonic clock V8's profiles use), to read them per call.
    if (process.env.BENCH_CPU_PROF) console.log(`window ${JSON.stringify({ scenario, inFlight, fromUs: Number(t0), toUs: Number(t1), calls: r.calls })}`);
    return { scenario, inFlight, rate: r.rate, p50: r.latency.p50, p99: r.latency.p99, cpuUsPerCall: (cpu1 - cpu0) / Math.max(1, r.calls), syscallsPerCall: (io1 - io0) / Math.max(1, r.calls), errors: r.errors, firstError: r.firstError };
  };
  const unknown = only.filter((n) => !(n in scenarios));
  if (unknown.length > 0) throw new Error(`no scenario ${unknown.map((n) => JSON.stringify(n)).join(", ")} (there are: ${Object.keys(scenarios).join("; ")})`);
  const names = Object.keys(scenarios).filter((n) => only.length === 0 || only.includes(n));
  const rows: Row[] = [];
  for (const inFlight of [64, 1]) {
    // One unmeasured pass each, so that whoever runs first is not measured cold.
    for (const n of names) await measure(n, inFlight);
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < names.length; i++) {
        const row = await measure(names[(i + round) % names.length]!, inFlight);
        rows.push(row);
        console.log(
          `round ${round + 1} ${row.scenario} c${inFlight}: ${row.rate.toFixed(0)} req/s, p50 ${row.p50.toFixed(2)} ms, p99 ${row.p99.toFixed(2)} ms, servers' CPU ${row.cpuUsPerCall.toFixed(0)} µs/call, ${row.syscallsPerCall.toFixed(2)} read/write syscalls/call${row.errors ? `, ${row.errors} errors (${row.firstError})` : ""}`,
        );
      }
    }
  }
  console.log(`\nmedians of ${rounds} round(s), 100-byte requests, load average at the end ${loadavg().map((l) => l.toFixed(1)).join(" ")}:`);
  console.log("| scenario | in flight | req/s | p50 ms | p99 ms | servers' CPU µs/call | servers' syscalls/call | req/s vs direct | p50 vs direct |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const inFlight of [64, 1]) {
    const med = (scenario: string, key: "rate" | "p50" | "p99" | "cpuUsPerCall" | "syscallsPerCall") =>
      median(rows.filter((r) => r.scenario === scenario && r.inFlight === inFlight).map((r) => r[key]));
    for (const n of names) {
      console.log(
        `| ${n} | ${inFlight} | ${med(n, "rate").toFixed(0)} | ${med(n, "p50").toFixed(2)} | ${med(n, "p99").toFixed(2)} | ${med(n, "cpuUsPerCall").toFixed(0)} | ${med(n, "syscallsPerCall").toFixed(2)} | ` +
          `${(med(n, "rate") / med("direct", "rate")).toFixed(2)}x | ${(med(n, "p50") / med("direct", "p50")).toFixed(2)}x |`,
      );
    }
  }
  for (const inFlight of names.includes("direct") ? [64, 1] : []) {
    const rate = (scenario: string) => median(rows.filter((r) => r.scenario === scenario && r.inFlight === inFlight).map((r) => r.rate));
    console.log(`${inFlight} in flight: 2 servers (2 hosts) vs 1 server (1 host) ${(rate("2 servers") / rate("direct")).toFixed(2)}x req/s; via peer vs direct ${(rate("via peer") / rate("direct")).toFixed(2)}x`);
  }
  const failed = rows.filter((r) => r.errors > 0);
  for (const c of clients) await c.close();
  if (failed.length > 0) {
    console.error(`${failed.length} runs had errors`);
    process.exitCode = 1;
  }
}

try {
  await main();
} finally {
  for (const c of children.reverse()) await c.stop(2000);
  await etcd?.stop();
  rmSync(dir, { recursive: true, force: true });
}
