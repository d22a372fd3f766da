/**
 * The live stats: the latency histogram and the collector in memory, then StatsService on a
 * real server with a real worker host: counts, rates, percentiles, service and host sums, the
 * stream's cadence, and `k4s top`.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createClient, type K4sClient, type Stats } from "../src/client/index.js";
import type { K4sServer } from "../src/server/server.js";
import { bucketMiddleUs, LATENCY_BUCKETS, latencyBucket, LoadCounters, quantileMs } from "../src/server/stats/load-counters.js";
import { createStatsCollector, type ContainerLoad } from "../src/server/stats/stats-collector.js";
import { spawn } from "node:child_process";
import { eventually, K4S_BIN, runK4s, spawnK4s, startTestServer, type Proc } from "./helpers.js";

test("latency buckets are monotonic, cover 0 to 2^32 µs, and their middles are within 6.25 % of what they hold", () => {
  let last = -1;
  for (let us = 0; us < 1e7; us = us < 100 ? us + 1 : Math.ceil(us * 1.01)) {
    const b = latencyBucket(us);
    if (b < last) assert.fail(`bucket of ${us} µs (${b}) below the previous (${last})`);
    last = b;
    const mid = bucketMiddleUs(b);
    if (us >= 16 && Math.abs(mid - us) / us > 0.0625) assert.fail(`${us} µs in bucket ${b} shown as ${mid}`);
  }
  assert.equal(latencyBucket(-5), 0);
  assert.equal(latencyBucket(2 ** 40), LATENCY_BUCKETS - 1);
  assert.equal(latencyBucket(0xffffffff), LATENCY_BUCKETS - 1);
});

test("quantiles of a histogram: p50, p90, p99 of 1..1000 ms", () => {
  const counts = new Uint32Array(LATENCY_BUCKETS);
  for (let ms = 1; ms <= 1000; ms++) counts[latencyBucket(ms * 1000)]!++;
  const near = (got: number, want: number) => assert.ok(Math.abs(got - want) / want < 0.07, `${got} vs ${want}`);
  near(quantileMs(counts, 1000, 0.5), 500);
  near(quantileMs(counts, 1000, 0.9), 900);
  near(quantileMs(counts, 1000, 0.99), 990);
  assert.equal(quantileMs(counts, 0, 0.5), 0);
});

test("the collector turns counter differences into per-window rates, sums services and hosts, and forgets deleted containers", async () => {
  const mk = (name: string, hostName: string): ContainerLoad & { counters: LoadCounters; inFlight: number } => ({
    name,
    hostName,
    phase: "Running",
    restarts: 1,
    inFlight: 0,
    inboxDepth: 0,
    counters: new LoadCounters(),
  });
  const a = mk("a-0", "h1");
  const b = mk("a-1", "h2");
  const c = mk("lonely", "h1");
  let containers = [a, b, c];
  const collector = createStatsCollector({
    source: { containers: () => containers, services: () => [{ name: "svc", endpoints: ["a-1", "a-0"] }] },
    windowMs: 100,
  });
  collector.start();
  const abort = new AbortController();
  const it = collector.watch(abort.signal)[Symbol.asyncIterator]();
  try {
    const first = (await it.next()).value as Stats;
    assert.deepEqual(first.containers.map((x) => x.load!.messagesPerSecond), [0, 0, 0]);
    for (let i = 0; i < 30; i++) a.counters.record(2, true, false);
    for (let i = 0; i < 10; i++) b.counters.record(8, false, i === 0);
    a.inFlight = 3;
    const next = (await it.next()).value as Stats;
    // windowMs is rounded to whole milliseconds; the rates use the exact window.
    const seconds = next.windowMs / 1000;
    const close = (got: number, want: number) => assert.ok(Math.abs(got - want) / want < 0.02, `${got} vs ${want}`);
    const byName = new Map(next.containers.map((x) => [x.name, x]));
    close(byName.get("a-0")!.load!.messagesPerSecond, 30 / seconds);
    assert.equal(byName.get("a-0")!.load!.requestsPerSecond, byName.get("a-0")!.load!.messagesPerSecond);
    assert.equal(byName.get("a-0")!.load!.inFlight, 3);
    assert.equal(byName.get("a-0")!.restarts, 1);
    close(byName.get("a-1")!.load!.errorsPerSecond, 1 / seconds);
    const svc = next.services[0]!;
    assert.deepEqual(svc.endpoints, ["a-0", "a-1"]);
    assert.equal(svc.load!.messagesTotal, 40n);
    assert.equal(svc.load!.requestsTotal, 30n);
    assert.equal(svc.load!.errorsTotal, 1n);
    assert.equal(svc.load!.inFlight, 3);
    // 30 at 2 ms and 10 at 8 ms: the median is 2 ms, the 90th percentile 8 ms.
    assert.ok(Math.abs(svc.load!.latencyP50Ms - 2) < 0.13, String(svc.load!.latencyP50Ms));
    assert.ok(Math.abs(svc.load!.latencyP90Ms - 8) < 0.5, String(svc.load!.latencyP90Ms));
    assert.deepEqual(
      next.hosts.map((h) => [h.name, h.containers, Number(h.load!.messagesTotal)]),
      [
        ["h1", ["a-0", "lonely"], 30],
        ["h2", ["a-1"], 10],
      ],
    );
    // The next window without traffic: rates back to zero, totals kept, latency empty.
    const quiet = (await it.next()).value as Stats;
    assert.equal(quiet.services[0]!.load!.messagesPerSecond, 0);
    assert.equal(quiet.services[0]!.load!.messagesTotal, 40n);
    assert.equal(quiet.services[0]!.load!.latencyP50Ms, 0);
    // A container deleted and created again under its name starts from zero.
    containers = [mk("a-0", "h1"), b];
    const again = (await it.next()).value as Stats;
    assert.deepEqual(
      again.containers.map((x) => [x.name, Number(x.load!.messagesTotal)]),
      [
        ["a-0", 0],
        ["a-1", 10],
      ],
    );
  } finally {
    abort.abort();
    collector.stop();
  }
});

let server: K4sServer;
let host: Proc;
let client: K4sClient;

before(async () => {
  server = await startTestServer();
  host = spawnK4s(["worker", "--server", server.address, "--name", "stats-host"]);
  client = createClient({ address: server.address });
  await client.apply(`
kind: Container
metadata: {name: tpl-calc}
spec: {module: workers, function: calculator_worker, concurrency: 4}
---
kind: ReplicaSet
metadata: {name: calc}
spec: {replicas: 2, container: tpl-calc}
---
kind: Service
metadata: {name: calc-svc}
spec: {selector: "calc-*", strategy: round-robin}
`);
  await eventually(async () => (await client.get("Service", "calc-svc")).status?.endpoints.length === 2, 30_000, "2 endpoints");
});

after(async () => {
  await client?.close();
  await host?.kill();
  await server?.stop();
});

test("StatsService counts a real service's messages per endpoint, service and host, with errors and latency", async () => {
  const before = await client.stats();
  const totalOf = (s: Stats, name: string) => Number(s.services.find((x) => x.name === name)?.load?.messagesTotal ?? 0);
  const base = totalOf(before, "calc-svc");
  const n = 200;
  await Promise.all(Array.from({ length: n }, (_, i) => client.request("service/calc-svc", { operation: "sum", operands: [i, 1] })));
  await assert.rejects(client.request("service/calc-svc", { operation: "nope", operands: [] }));
  await client.send("service/calc-svc", { operation: "sum", operands: [1] });
  // Totals move at once in the counters; a snapshot shows them after the next window.
  const s = (await eventually(async () => {
    const snap = await client.stats();
    return totalOf(snap, "calc-svc") - base === n + 2 ? snap : undefined;
  }, 10_000, "the service's total"))!;
  const svc = s.services.find((x) => x.name === "calc-svc")!;
  assert.deepEqual(svc.endpoints, ["calc-0", "calc-1"]);
  assert.equal(Number(svc.load!.requestsTotal) - Number(before.services.find((x) => x.name === "calc-svc")?.load?.requestsTotal ?? 0), n + 1);
  assert.ok(Number(svc.load!.errorsTotal) >= 1);
  const endpoints = s.containers.filter((c) => c.name.startsWith("calc-"));
  // Round robin: each endpoint took half.
  for (const e of endpoints) assert.ok(Number(e.load!.messagesTotal) >= n / 2 - 2, `${e.name}: ${e.load!.messagesTotal}`);
  assert.ok(endpoints.every((e) => e.host === "stats-host" && e.phase === "Running"));
  const h = s.hosts.find((x) => x.name === "stats-host")!;
  assert.deepEqual(h.containers, ["calc-0", "calc-1", "tpl-calc"]);
  // The stream: a snapshot at once, then one a window (about a second) apart, with the rates of
  // traffic sent meanwhile.
  const abort = new AbortController();
  const seen: Stats[] = [];
  const load = (async () => {
    while (!abort.signal.aborted) await client.request("service/calc-svc", { operation: "sum", operands: [1] });
  })();
  for await (const snap of client.watchStats({ signal: abort.signal })) {
    seen.push(snap);
    if (seen.length === 4) break;
  }
  abort.abort();
  await load.catch(() => {});
  const windows = seen.slice(2).map((x) => x.windowMs);
  for (const w of windows) assert.ok(w >= 900 && w < 5000, `window ${w} ms`);
  const busy = seen[3]!.services.find((x) => x.name === "calc-svc")!.load!;
  assert.ok(busy.messagesPerSecond > 0, "rate under load");
  const { latencyP50Ms: p50, latencyP90Ms: p90, latencyP99Ms: p99 } = busy;
  assert.ok(p50 > 0 && p50 <= p90 && p90 <= p99, `p50 ${p50} p90 ${p90} p99 ${p99}`);
});

test("k4s top prints containers, services and hosts; -o json once", async () => {
  const table = await runK4s(["top", "services", "--server", server.address, "--once"]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^NAME\s+ENDPOINTS\s+MSG\/S\s+REQ\/S\s+ERR\/S\s+IN-FLIGHT\s+QUEUED\s+P50\s+P90\s+P99/m);
  assert.match(table.stdout, /^calc-svc\s+2\s/m);
  const containers = await runK4s(["top", "containers", "--server", server.address, "--once"]);
  assert.match(containers.stdout, /^NAME\s+HOST\s+PHASE\s+RESTARTS/m);
  assert.match(containers.stdout, /^calc-0\s+stats-host\s+Running\s+0\s/m);
  const hosts = await runK4s(["top", "hosts", "--server", server.address, "--once"]);
  assert.match(hosts.stdout, /^stats-host\s+3\s/m);
  const json = await runK4s(["top", "containers", "-o", "json", "--server", server.address]);
  assert.equal(json.code, 0, json.stderr);
  const parsed = JSON.parse(json.stdout) as { containers: { name: string; load: { messagesTotal: string } }[] };
  assert.ok(parsed.containers.some((c) => c.name === "calc-0" && Number(c.load.messagesTotal) > 0), json.stdout);
  const bad = await runK4s(["top", "pods", "--server", server.address]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /error: unknown kind "pods" for top: use containers, services or hosts/);
});

test("k4s top on a terminal redraws the table once a window until interrupted", async () => {
  // `script` gives the command a pseudo-terminal, as a user's shell would.
  const command = [process.execPath, K4S_BIN, "top", "services", "--server", server.address].map((a) => `'${a}'`).join(" ");
  const child = spawn("script", ["-qfec", command, "/dev/null"], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  try {
    const screens = () => out.split("\x1b[H\x1b[2J").length - 1;
    await eventually(() => screens() >= 4, 30_000, "four screens of k4s top");
    // The newest screen may still be arriving in pieces: read the one before it, complete.
    const parts = out.split("\x1b[H\x1b[2J");
    const last = parts[parts.length - 2];
    assert.match(last, /k4s top services · .* · window \d\.\ds · Ctrl-C to quit/);
    assert.match(last, /calc-svc\s+2\s/);
  } finally {
    child.kill("SIGINT");
    await new Promise((resolve) => child.once("exit", resolve));
  }
});
