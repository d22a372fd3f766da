/**
 * `npm run bench:cluster [-- --quick] [--rounds N]`: the cost of routing between servers, in one
 * run. Two `k4s server` processes over one etcd member (in /dev/shm when there is one); a worker
 * host connected to the leader serves an echo container (concurrency 256); this process is the
 * load generator:
 *
 *   direct        client -> leader -> worker                      (one server, the baseline)
 *   via standby   client -> standby -> peer link -> leader -> worker   (the forwarding cost)
 *   2 servers     half the calls on each server                   (2 servers vs 1 on the same load)
 *
 * Closed loop, 100-byte requests, with 64 and with 1 in flight: req/s, p50, p99 and the CPU per
 * call of both server processes, medians over rounds (the order rotates each round), and the
 * ratios against `direct`. BENCH_CPU_PROF=DIR writes a V8 CPU profile of each server there.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "../src/client/index.js";
import { startEtcd, type EtcdCluster } from "../test/etcd.js";
import { median } from "./lib/latency-recorder.js";
import { closedLoop } from "./lib/load-drivers.js";
import { parseRoundOptions } from "./lib/round-options.js";
import { cpuMicros, freePort, spawnBinary, type Child } from "./lib/processes.js";
import { K4S_BIN, k4sExecArgv } from "./lib/systems.js";

const { rounds, warmupMs, durationMs } = parseRoundOptions();
const payload = { pad: "x".repeat(88) }; // 100 bytes as JSON
const WORKERS_SDK_JS = new URL("../dist/workers/index.js", import.meta.url).href;

interface Row {
  scenario: string;
  inFlight: number;
  rate: number;
  p50: number;
  p99: number;
  cpuUsPerCall: number;
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
  etcd = await startEtcd();
  const servers = [await startServer(etcd.storeUrl), await startServer(etcd.storeUrl)];
  const clients = servers.map((s) => createClient({ address: s.address, reconnect: false }));
  let leaderAt = -1;
  await waitFor("a leader", async () => {
    const list = await clients[0]!.servers();
    leaderAt = servers.findIndex((s) => list.some((m) => m.leader && m.address === s.address));
    return leaderAt >= 0;
  });
  const leader = clients[leaderAt]!;
  const standby = clients[1 - leaderAt]!;
  const module = join(dir, "echo.mjs");
  writeFileSync(module, `import { defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};\nexport const echo = defineWorker(async (ctx) => { await ctx.handle((m) => m.value); });\n`);
  await leader.apply("kind: Container\nmetadata: {name: bench-echo}\nspec: {module: echo, function: echo, concurrency: 256, queueLimit: 10000}\n");
  const hostArgs = [K4S_BIN, "worker", "--server", servers.map((s) => s.address).join(","), "--name", "bench-host", "--module", `echo=${module}`];
  children.push(await spawnBinary("k4s worker", process.execPath, hostArgs, /serving/, 60_000));
  await waitFor("bench-echo ready", async () => (await leader.get("Container", "bench-echo")).status?.ready === true);
  // Each server's messaging session is opened before anything is measured.
  for (const c of clients) await c.request("container/bench-echo", payload);

  const pids = servers.map((s) => s.child.pid);
  let turn = 0;
  const scenarios: Record<string, () => Promise<unknown>> = {
    direct: () => leader.request("container/bench-echo", payload),
    "via standby": () => standby.request("container/bench-echo", payload),
    "2 servers": () => clients[turn++ % 2]!.request("container/bench-echo", payload),
  };
  const measure = async (scenario: string, inFlight: number): Promise<Row> => {
    let cpu0 = 0;
    let cpu1 = 0;
    const cpu = () => pids.reduce((sum, pid) => sum + cpuMicros(pid), 0);
    const r = await closedLoop(scenarios[scenario]!, inFlight, {
      warmupMs,
      durationMs,
      onMeasureStart: () => (cpu0 = cpu()),
      onMeasureEnd: () => (cpu1 = cpu()),
    });
    return { scenario, inFlight, rate: r.rate, p50: r.latency.p50, p99: r.latency.p99, cpuUsPerCall: (cpu1 - cpu0) / Math.max(1, r.calls), errors: r.errors, firstError: r.firstError };
  };
  const names = Object.keys(scenarios);
  const rows: Row[] = [];
  for (const inFlight of [64, 1]) {
    // One unmeasured pass each, so that whoever runs first is not measured cold.
    for (const n of names) await measure(n, inFlight);
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < names.length; i++) {
        const row = await measure(names[(i + round) % names.length]!, inFlight);
        rows.push(row);
        console.log(
          `round ${round + 1} ${row.scenario} c${inFlight}: ${row.rate.toFixed(0)} req/s, p50 ${row.p50.toFixed(2)} ms, p99 ${row.p99.toFixed(2)} ms, servers' CPU ${row.cpuUsPerCall.toFixed(0)} µs/call${row.errors ? `, ${row.errors} errors (${row.firstError})` : ""}`,
        );
      }
    }
  }
  console.log(`\nmedians of ${rounds} round(s), 100-byte requests, load average ${loadavg()[0]!.toFixed(1)}:`);
  console.log("| scenario | in flight | req/s | p50 ms | p99 ms | servers' CPU µs/call | req/s vs direct | p50 vs direct |\n| --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const inFlight of [64, 1]) {
    const med = (scenario: string, key: "rate" | "p50" | "p99" | "cpuUsPerCall") =>
      median(rows.filter((r) => r.scenario === scenario && r.inFlight === inFlight).map((r) => r[key]));
    for (const n of names) {
      console.log(
        `| ${n} | ${inFlight} | ${med(n, "rate").toFixed(0)} | ${med(n, "p50").toFixed(2)} | ${med(n, "p99").toFixed(2)} | ${med(n, "cpuUsPerCall").toFixed(0)} | ` +
          `${(med(n, "rate") / med("direct", "rate")).toFixed(2)}x | ${(med(n, "p50") / med("direct", "p50")).toFixed(2)}x |`,
      );
    }
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
