/**
 * `npm run bench [-- --quick] [--rounds N] [--out FILE]`: starts k4s and its peers (bare
 * grpc-js, NATS, Moleculer) in separate processes, runs every scenario for each system
 * interleaved over several rounds, runs the k4s control-plane benchmark, prints a table of
 * medians with ratios k4s/peer, writes every round to a JSON file, and stops everything it
 * started.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import type { ClosedLoopResult, OpenLoopResult } from "./lib/load-drivers.js";
import { cpuMicros, forkTs, rssBytes, spawnBinary, type Child } from "./lib/processes.js";
import { median } from "./lib/latency-recorder.js";
import { measureStatsWork } from "./lib/stats-work.js";
import { medians, renderTable } from "./lib/report.js";
import { dataPlaneScenarios, type Scenario } from "./lib/scenarios.js";
import { K4S_BIN, k4sExecArgv, startGrpc, startK4s, startMoleculer, startNats, type RunningSystem } from "./lib/systems.js";

interface Options {
  quick: boolean;
  rounds?: number;
  out?: string;
  systems: string;
  only?: string;
  warmupMs?: number;
  durationMs?: number;
  replicas?: number;
  controlPlane: boolean;
}

const program = new Command("bench")
  .description("k4s benchmark: k4s vs bare grpc-js, NATS and Moleculer, interleaved rounds, medians and ratios")
  .option("--quick", "1 round, short windows, 200 replicas (under a minute)", false)
  .option("--rounds <n>", "rounds (default 5; --quick 1)", (v) => positiveInt(v, "--rounds"))
  .option("--out <file>", "JSON file of all rounds (default bench/results/<time>.json)")
  .option("--systems <list>", "comma-separated systems to run (k4s-nostats: k4s with its live stats off, C=64 only; k4s-grpcjs: k4s with its workers' and load client's session streams on grpc-js)", "k4s,k4s-nostats,grpc,nats,moleculer")
  .option("--only <text>", "run only scenarios whose id contains text (e.g. c64, ff, open)")
  .option("--warmup-ms <ms>", "warm-up per run (default 500; --quick 150)", (v) => positiveInt(v, "--warmup-ms"))
  .option("--duration-ms <ms>", "measured window per run (default 2000; --quick 400)", (v) => positiveInt(v, "--duration-ms"))
  .option("--replicas <n>", "control plane: ReplicaSet size (default 1000; --quick 200)", (v) => positiveInt(v, "--replicas"))
  .option("--no-control-plane", "skip the k4s control-plane benchmark")
  .parse(process.argv);

function positiveInt(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} must be a whole number >= 1, got "${v}"`);
  return n;
}

const opts = program.opts<Options>();
const rounds = opts.rounds ?? (opts.quick ? 1 : 5);
const warmupMs = opts.warmupMs ?? (opts.quick ? 150 : 500);
const durationMs = opts.durationMs ?? (opts.quick ? 400 : 2000);
/** The open loop needs more samples than a closed one for a p99 worth reading. */
const openDurationMs = opts.quick ? Math.max(durationMs, 800) : Math.max(durationMs, 5000);
const replicas = opts.replicas ?? (opts.quick ? 200 : 1000);
const applies = opts.quick ? 30 : 200;
const wanted = opts.systems.split(",").map((s) => s.trim()).filter(Boolean);
const scenarios = dataPlaneScenarios().filter((s) => !opts.only || s.id.includes(opts.only));
const benchDir = dirname(fileURLToPath(import.meta.url));
const outFile = resolve(opts.out ?? `${benchDir}/results/${new Date().toISOString().replace(/[:.]/g, "-")}.json`);

const starters: Record<string, () => Promise<RunningSystem>> = {
  k4s: () => startK4s({ stats: true }),
  "k4s-nostats": () => startK4s({ stats: false }),
  "k4s-grpcjs": () => startK4s({ stats: true, grpcJs: true }),
  grpc: startGrpc,
  nats: startNats,
  moleculer: startMoleculer,
};

/** The scenarios the stats-off k4s runs: the 64-in-flight request loads, where stats cost most. */
const STATS_COST_SCENARIOS = ["req-1rep-c64-100B", "req-2rep-c64-100B"];

/** One measured run of one scenario on one system. */
interface RunRow {
  round: number;
  scenario: string;
  system: string;
  metrics?: Record<string, number>;
  raw?: unknown;
  error?: string;
  /** Why the first attempt measured nothing, when the run was made once more (see runOnceMore). */
  retriedAfter?: string;
}

interface Snapshot {
  t: number;
  serverCpu: number;
  /** CPU µs of each server-side process, by name, to tell where a call's cost goes. */
  byProcess: Record<string, number>;
  loadCpu: number;
  received: number;
}

async function snapshot(sys: RunningSystem, withCount: boolean): Promise<Snapshot> {
  const received = withCount ? (await sys.ffReceiver.ask<{ count: number }>({ cmd: "count" }, 10_000)).count : 0;
  const byProcess = Object.fromEntries(sys.serverSide.map((c) => [c.name, cpuMicros(c.pid)]));
  return {
    t: performance.now(),
    byProcess,
    serverCpu: Object.values(byProcess).reduce((sum, v) => sum + v, 0),
    loadCpu: cpuMicros(sys.load.pid),
    received,
  };
}

let runSeq = 0;

/** CPU µs per call of each server-side process over the window. */
function perProcess(a: Snapshot, b: Snapshot, calls: number): Record<string, number> {
  // One decimal: a fire-and-forget message costs a process a few µs.
  return Object.fromEntries(Object.keys(b.byProcess).map((k) => [k, Math.round((10 * (b.byProcess[k]! - a.byProcess[k]!)) / Math.max(1, calls)) / 10]));
}

async function runScenario(sys: RunningSystem, s: Scenario): Promise<{ metrics: Record<string, number>; raw: unknown }> {
  const run = ++runSeq;
  const window = s.kind === "open" ? openDurationMs : durationMs;
  const timeout = warmupMs + window + 15_000;
  const result = sys.load.ask<{ result: ClosedLoopResult | OpenLoopResult }>(
    { cmd: "run", run, scenario: s, warmupMs, durationMs: window },
    timeout,
  );
  const started = sys.load.waitMessage((m) => m.ev === "measuring" && m.run === run, timeout);
  const ended = sys.load.waitMessage((m) => m.ev === "measured" && m.run === run, timeout);
  for (const p of [result, started, ended]) p.catch(() => {});
  const failFirst = result.then(() => {
    throw new Error("load process answered before its window closed");
  });
  failFirst.catch(() => {});
  await Promise.race([started, failFirst]);
  const a = await snapshot(sys, s.kind === "ff");
  await Promise.race([ended, failFirst]);
  const b = await snapshot(sys, s.kind === "ff");
  const r = (await result).result;
  const seconds = (b.t - a.t) / 1000;
  if (s.kind === "closed") {
    const c = r as ClosedLoopResult;
    if (c.calls === 0) throw new Error(`no call answered${c.firstError ? `: ${c.firstError}` : ""}`);
    const metrics = {
      rate: c.rate,
      p50: c.latency.p50,
      p99: c.latency.p99,
      errors: c.errors,
      serverCpuPerCall: (b.serverCpu - a.serverCpu) / c.calls,
      loadCpuPerCall: (b.loadCpu - a.loadCpu) / c.calls,
    };
    return { metrics, raw: { ...c, serverCpuPerCallByProcess: perProcess(a, b, c.calls) } };
  }
  if (s.kind === "ff") {
    const c = r as ClosedLoopResult;
    const received = b.received - a.received;
    if (received === 0) throw new Error(`receiver counted no message${c.firstError ? `: ${c.firstError}` : ""}`);
    const metrics = {
      recvRate: received / seconds,
      sendRate: c.rate,
      errors: c.errors,
      serverCpuPerCall: (b.serverCpu - a.serverCpu) / received,
      loadCpuPerCall: (b.loadCpu - a.loadCpu) / Math.max(1, c.calls),
    };
    return { metrics, raw: { ...c, serverCpuPerMsgByProcess: perProcess(a, b, received) } };
  }
  const o = r as OpenLoopResult;
  if (o.answered === 0) throw new Error(`no call answered${o.firstError ? `: ${o.firstError}` : ""}`);
  const metrics = {
    p50: o.latency.p50,
    p99: o.latency.p99,
    serviceP50: o.serviceLatency.p50,
    serviceP99: o.serviceLatency.p99,
    rate: o.rate,
    errors: o.errors + o.unanswered,
    serverCpuPerCall: (b.serverCpu - a.serverCpu) / o.answered,
  };
  return { metrics, raw: { ...o, serverCpuPerCallByProcess: perProcess(a, b, o.answered) } };
}

function applicable(sys: RunningSystem, s: Scenario): boolean {
  if (s.target === "rr2" && s.kind !== "ff" && sys.name === "grpc") return false;
  if (sys.name === "k4s-nostats") return STATS_COST_SCENARIOS.includes(s.id);
  return true;
}

/**
 * What the live stats cost at the 64-in-flight loads. End to end: the k4s server process's CPU
 * per call with stats on (and a stats stream open) against off, as the median of the per-round
 * ratios (each round runs both back to back, so they share the machine's load of the moment).
 * In isolation: the stats' own work per message and per window, against the server process's
 * CPU per call and per second at that load.
 */
function statsCostReport(rows: RunRow[]): { lines: string[]; figures: Record<string, Record<string, number>> } {
  const lines: string[] = [];
  const figures: Record<string, Record<string, number>> = {};
  const serverUs = (r: RunRow | undefined) => (r?.raw as { serverCpuPerCallByProcess?: Record<string, number> } | undefined)?.serverCpuPerCallByProcess?.["k4s server"];
  const work = measureStatsWork();
  for (const id of STATS_COST_SCENARIOS) {
    const of = (system: string) => rows.filter((r) => r.scenario === id && r.system === system && r.metrics);
    const on = of("k4s");
    const off = of("k4s-nostats");
    if (on.length === 0 || off.length === 0) continue;
    const ratios = on.flatMap((r) => {
      const a = serverUs(r);
      const b = serverUs(off.find((o) => o.round === r.round));
      return a !== undefined && b !== undefined && b > 0 ? [a / b] : [];
    });
    const serverUsOff = median(off.map(serverUs).filter((v): v is number => v !== undefined));
    const rateOff = median(off.map((r) => r.metrics!.rate!));
    const f = {
      endToEndPercent: (median(ratios) - 1) * 100,
      endToEndMinPercent: (Math.min(...ratios) - 1) * 100,
      endToEndMaxPercent: (Math.max(...ratios) - 1) * 100,
      serverUsOn: median(on.map(serverUs).filter((v): v is number => v !== undefined)),
      serverUsOff,
      rateOn: median(on.map((r) => r.metrics!.rate!)),
      rateOff,
      perMessageNs: work.perMessageNs,
      perWindowUs: work.perWindowUs,
      // Per message, plus one window a second spread over that second's calls.
      isolatedPercent: ((work.perMessageNs / 1000 + work.perWindowUs / Math.max(1, rateOff)) / serverUsOff) * 100,
    };
    figures[id] = f;
    const pct = (v: number) => `${v >= 0 ? "+" : ""}${v.toFixed(1)} %`;
    lines.push(
      `  ${id}: end to end ${pct(f.endToEndPercent)} server process CPU per call (median of ${ratios.length} paired rounds, ` +
        `range ${pct(f.endToEndMinPercent)} to ${pct(f.endToEndMaxPercent)}; ${f.serverUsOn.toFixed(1)} µs on, ${f.serverUsOff.toFixed(1)} off; ` +
        `${Math.round(f.rateOn)} req/s on, ${Math.round(f.rateOff)} off)`,
      `  ${" ".repeat(id.length)}  in isolation ${f.perMessageNs.toFixed(0)} ns per message + ${f.perWindowUs.toFixed(0)} µs per window = ` +
        `${f.isolatedPercent.toFixed(2)} % of the server process's ${serverUsOff.toFixed(1)} µs per call`,
    );
  }
  return { lines, figures };
}

/** The k4s control-plane benchmark on a fresh server and worker host of its own. */
async function runControlPlane(round: number): Promise<RunRow> {
  const children: Child[] = [];
  try {
    const srv = await forkTs("k4s control-plane server", new URL("./k4s/k4s-server-process.ts", import.meta.url), [], { execArgv: k4sExecArgv });
    children.push(srv.child);
    const address = String(srv.ready.address);
    const host = await spawnBinary("k4s worker host", process.execPath, [...k4sExecArgv, K4S_BIN, "worker", "--server", address], /serving containers/, 30_000);
    children.push(host);
    const cp = await forkTs("k4s control-plane client", new URL("./k4s/control-plane-process.ts", import.meta.url), [
      address,
      String(replicas),
      String(applies),
    ]);
    children.push(cp.child);
    const memory: Record<string, number> = {};
    cp.child.process.on("message", (m: { ev?: string; label?: string }) => {
      if (m.ev !== "memory") return;
      memory[`serverRss_${m.label}`] = rssBytes(srv.child.pid);
      memory[`hostRss_${m.label}`] = rssBytes(host.pid);
      // CPU from the empty point to all N Running: the scale-up's cost, which a loaded machine stretches less than its wall time.
      memory[`serverCpu_${m.label}`] = cpuMicros(srv.child.pid);
      memory[`hostCpu_${m.label}`] = cpuMicros(host.pid);
      cp.child.process.send({ cmd: "memory-read", label: m.label });
    });
    const done = await cp.child.waitMessage<{ result: Record<string, number> & { applyToWatch: { p50: number; p99: number }; applyRoundTrip: { p50: number; p99: number } } }>(
      (m) => m.ev === "result" || m.ev === "error",
      600_000,
    );
    const r = done.result;
    const mib = (b: number | undefined) => (b ?? Number.NaN) / (1024 * 1024);
    return {
      round,
      scenario: "control-plane",
      system: "k4s",
      metrics: {
        replicas: r.replicas!,
        scaleUpS: r.scaleUpMs! / 1000,
        scaleUpServerCpuS: (memory.serverCpu_idle! - memory.serverCpu_empty!) / 1e6,
        scaleUpHostCpuS: (memory.hostCpu_idle! - memory.hostCpu_empty!) / 1e6,
        scaleDownS: r.scaleDownMs! / 1000,
        scaleDownServerCpuS: (memory.serverCpu_gone! - memory.serverCpu_idle!) / 1e6,
        applyToWatchP50: r.applyToWatch.p50,
        applyToWatchP99: r.applyToWatch.p99,
        applyRoundTripP50: r.applyRoundTrip.p50,
        serverRssEmptyMiB: mib(memory.serverRss_empty),
        serverRssIdleMiB: mib(memory.serverRss_idle),
        hostRssEmptyMiB: mib(memory.hostRss_empty),
        hostRssIdleMiB: mib(memory.hostRss_idle),
      },
      raw: r,
    };
  } catch (err) {
    return { round, scenario: "control-plane", system: "k4s", error: err instanceof Error ? err.message : String(err) };
  } finally {
    for (const c of children.reverse()) await c.stop().catch(() => {});
  }
}

/**
 * CPU each system's own processes use while nothing is sent (heartbeats, timers), in percent of
 * one core, measured over the same window for all: the part of "CPU per call" that is not per call.
 */
async function idleCpu(systems: RunningSystem[], windowMs: number): Promise<Record<string, number>> {
  const sum = (sys: RunningSystem) => sys.serverSide.reduce((acc, c) => acc + cpuMicros(c.pid), 0);
  const before = systems.map(sum);
  const t = performance.now();
  await new Promise((r) => setTimeout(r, windowMs));
  const elapsedUs = (performance.now() - t) * 1000;
  return Object.fromEntries(systems.map((sys, i) => [sys.name, ((sum(sys) - before[i]!) / elapsedUs) * 100]));
}

function hasNatsServer(): boolean {
  try {
    execFileSync("nats-server", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const t0 = performance.now();
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "", memGiB: totalmem() / 2 ** 30, node: process.version, loadavg: loadavg() };
  console.log(
    `k4s bench: ${rounds} round(s), warm-up ${warmupMs} ms, window ${durationMs} ms (open loop ${openDurationMs} ms), ` +
      `${machine.cpus} CPUs, node ${machine.node}, load average ${machine.loadavg.map((l) => l.toFixed(2)).join(" ")}`,
  );
  const setupErrors: Record<string, string> = {};
  const names = wanted.filter((n) => {
    if (!starters[n]) {
      setupErrors[n] = `unknown system (known: ${Object.keys(starters).join(", ")})`;
      return false;
    }
    if (n === "nats" && !hasNatsServer()) {
      setupErrors[n] = "nats-server not found on PATH (Debian: apt-get install nats-server)";
      return false;
    }
    return true;
  });
  // Started together: much of a start is waiting (Moleculer's gossip, connects), which overlaps.
  const ts = performance.now();
  const started = await Promise.allSettled((scenarios.length > 0 ? names : []).map((n) => starters[n]!()));
  const systems: RunningSystem[] = [];
  started.forEach((r, i) => {
    const n = names[i]!;
    if (r.status === "fulfilled") systems.push(r.value);
    else {
      setupErrors[n] = r.reason instanceof Error ? r.reason.message : String(r.reason);
      console.log(`  ${n} could not start: ${setupErrors[n]!.split("\n")[0]}`);
    }
  });
  if (systems.length > 0) console.log(`  started ${systems.map((s) => s.name).join(", ")} in ${((performance.now() - ts) / 1000).toFixed(1)} s`);
  const rows: RunRow[] = [];
  const broken = new Map<string, string>();
  const idle = await idleCpu(systems, opts.quick ? 500 : 1000);
  // One unrecorded run per system first: freshly started processes run cold code (tsx-loaded,
  // not yet optimised by V8), which would otherwise weigh on whichever scenario comes first.
  const jitWarmup = dataPlaneScenarios().find((s) => s.id === "req-1rep-c64-100B")!;
  for (const sys of systems) {
    await runScenario(sys, jitWarmup).catch(() => {});
  }
  if (systems.length > 0) {
    console.log(`  idle CPU of each system's own processes: ${systems.map((s) => `${s.name} ${idle[s.name]!.toFixed(1)}%`).join(", ")}`);
  }
  try {
    for (let round = 1; round <= rounds; round++) {
      console.log(`round ${round}/${rounds}`);
      for (const s of scenarios) {
        // Rotate the order each round so no system always runs first (or right after another).
        const order = systems.map((_, i) => systems[(i + round - 1) % systems.length]!);
        const parts: string[] = [];
        for (const sys of order) {
          if (!applicable(sys, s)) continue;
          if (broken.has(sys.name)) {
            rows.push({ round, scenario: s.id, system: sys.name, error: `skipped: ${broken.get(sys.name)}` });
            continue;
          }
          try {
            const { metrics, raw, retriedAfter } = await runOnceMore(sys, s);
            rows.push({ round, scenario: s.id, system: sys.name, metrics, raw, ...(retriedAfter ? { retriedAfter } : {}) });
            const main = s.kind === "ff" ? `${Math.round(metrics.recvRate!)} msg/s` : s.kind === "open" ? `p99 ${metrics.p99!.toFixed(2)} ms` : `${Math.round(metrics.rate!)} req/s`;
            parts.push(`${sys.name} ${main}${retriedAfter ? ` (run again after: ${retriedAfter.split("\n")[0]!.slice(0, 60)})` : ""}`);
          } catch (err) {
            const message = err instanceof Error ? err.message : String(err);
            rows.push({ round, scenario: s.id, system: sys.name, error: message });
            parts.push(`${sys.name} FAILED (${message.split("\n")[0]!.slice(0, 100)})`);
            // A load process that stopped answering would only burn the remaining runs' timeouts.
            if (brokenProcess(message)) broken.set(sys.name, `${sys.name} stopped answering in ${s.id}`);
          }
        }
        console.log(`  ${s.id.padEnd(22)} ${parts.join(", ")}`);
      }
      if (opts.controlPlane && wanted.includes("k4s")) {
        const cp = await runControlPlane(round);
        rows.push(cp);
        console.log(
          cp.error
            ? `  control-plane          k4s FAILED: ${cp.error.split("\n")[0]}`
            : `  control-plane          k4s 0→${replicas} in ${cp.metrics!.scaleUpS!.toFixed(2)} s (CPU server ${cp.metrics!.scaleUpServerCpuS!.toFixed(2)} s, host ${cp.metrics!.scaleUpHostCpuS!.toFixed(2)} s), →0 in ${cp.metrics!.scaleDownS!.toFixed(2)} s (CPU server ${cp.metrics!.scaleDownServerCpuS!.toFixed(2)} s), apply→watch p50 ${cp.metrics!.applyToWatchP50!.toFixed(2)} ms`,
        );
      }
    }
  } finally {
    for (const sys of systems) await sys.stop();
  }

  const med = medians(rows);
  const columns = ["k4s", "k4s-nostats", "k4s-grpcjs", "grpc", "nats", "moleculer"].filter((s) => wanted.includes(s));
  const table = renderTable(
    [...scenarios, ...(opts.controlPlane && wanted.includes("k4s") ? [{ id: "control-plane", title: "control plane", kind: "control" }] : [])],
    columns,
    med,
  );
  console.log(`\nMedians over ${rounds} round(s)${opts.controlPlane ? `; control plane with N = ${replicas}` : ""}:\n`);
  console.log(table);
  const statsCost = statsCostReport(rows);
  if (statsCost.lines.length > 0) console.log(`\nCost of the live stats (k4s with a stats stream open vs k4s-nostats, same run):\n${statsCost.lines.join("\n")}`);
  const errors = rows.filter((r) => r.error);
  const distinct = new Map<string, string>();
  for (const e of errors) distinct.set(`${e.system} ${e.scenario}`, e.error!.split("\n")[0]!);
  for (const [sys, msg] of Object.entries(setupErrors)) distinct.set(`${sys} setup`, msg.split("\n")[0]!);
  if (distinct.size > 0) {
    console.log("\nFailures:");
    for (const [k, v] of distinct) console.log(`  ${k}: ${v}`);
  }
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(
    outFile,
    JSON.stringify(
      {
        startedAt: startedAt.toISOString(),
        elapsedS: (performance.now() - t0) / 1000,
        options: { rounds, warmupMs, durationMs, openDurationMs, replicas, applies, systems: wanted, only: opts.only ?? null },
        machine: { ...machine, loadavgAtEnd: loadavg() },
        placement: Object.fromEntries(systems.map((s) => [s.name, s.placement])),
        idleCpuPercent: idle,
        statsCost: statsCost.figures,
        scenarios,
        setupErrors,
        medians: med,
        rounds: rows,
        table,
      },
      null,
      2,
    ),
  );
  console.log(`\nall rounds written to ${outFile} (${((performance.now() - t0) / 1000).toFixed(1)} s in all)`);
  return Object.keys(setupErrors).length > 0 || errors.length > 0 ? 1 : 0;
}

/** Whether a run's failure says the system's load process stopped answering (no use running it again). */
function brokenProcess(message: string): boolean {
  return /no answer within|exited/.test(message);
}

/**
 * Runs a scenario, and once more when the run measured nothing (no call answered, no message
 * counted) while the processes still answer: on a loaded shared machine a short window can pass
 * with a stalled process. The first failure is kept with the row; a second one is the run's.
 */
async function runOnceMore(sys: RunningSystem, s: Scenario): Promise<{ metrics: Record<string, number>; raw: unknown; retriedAfter?: string }> {
  try {
    return await runScenario(sys, s);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (brokenProcess(message)) throw err;
    return { ...(await runScenario(sys, s)), retriedAfter: message };
  }
}

process.exitCode = await main();
