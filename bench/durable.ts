/**
 * `npm run bench:durable [-- --quick] [--rounds N]`: durable fire-and-forget in k4s against NATS
 * JetStream's acknowledged publish, in the same run, with k4s's in-memory send as a second
 * baseline. Every system runs in processes of its own, on disk in a temp dir:
 *
 *   k4s server (SQLite data dir) | k4s worker host (acks every message) | this process (sender)
 *   nats-server -js (file store)  | JetStream consumer process (acks)    | this process (sender)
 *
 * The sender keeps 64 sends in flight (closed loop, 100-byte payloads) and counts acknowledged
 * sends: for k4s a `send()` answered once the message is in the journal (durable) or the
 * inbox (memory); for JetStream a `js.publish()` answered with its PubAck. Consumers drain both
 * so neither store only grows. Prints msg/s, p50/p99 of the acknowledgement and server CPU per
 * message, medians over rounds (the order of systems rotates each round), and the ratios.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { connect, type JetStreamClient, type NatsConnection } from "nats";
import { createClient, type K4sClient } from "../src/client/index.js";
import { closedLoop } from "./lib/load-drivers.js";
import { parseRoundOptions } from "./lib/round-options.js";
import { cpuMicros, freePort, spawnBinary, type Child } from "./lib/processes.js";
import { K4S_BIN } from "./lib/systems.js";

const { rounds, warmupMs, durationMs } = parseRoundOptions();
const CONCURRENCY = 64;
const payload = { pad: "x".repeat(88) }; // 100 bytes as JSON
const payloadBytes = new TextEncoder().encode(JSON.stringify(payload));
const WORKERS_SDK_JS = new URL("../dist/workers/index.js", import.meta.url).href;
const NATS_JS = pathToFileURL(createRequire(import.meta.url).resolve("nats")).href;

interface Row {
  system: string;
  rate: number;
  p50: number;
  p99: number;
  cpuUsPerMsg: number;
  errors: number;
  firstError?: string;
}

const dir = mkdtempSync(join(tmpdir(), "k4s-bench-durable-"));
const children: Child[] = [];

async function startK4s(): Promise<{ client: K4sClient; server: Child }> {
  const port = await freePort();
  const server = await spawnBinary(
    "k4s server",
    process.execPath,
    [K4S_BIN, "server", "--port", String(port), "--data-dir", join(dir, "k4s-data"), "--no-local-worker", "--no-dashboard"],
    /listening on/,
    60_000,
  );
  children.push(server);
  const module = join(dir, "sink.mjs");
  writeFileSync(
    module,
    `import { defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};\nexport const sink = defineWorker(async (ctx) => { await ctx.handle(() => undefined); });\n`,
  );
  const address = `127.0.0.1:${port}`;
  const client = createClient({ address, reconnect: false });
  const spec = (delivery: string) => `{module: sink, function: sink, delivery: ${delivery}, concurrency: 256, queueLimit: 10000}`;
  await client.apply(
    `kind: Container\nmetadata: {name: durable-sink}\nspec: ${spec("durable")}\n---\nkind: Container\nmetadata: {name: memory-sink}\nspec: ${spec("memory")}\n`,
  );
  children.push(await spawnBinary("k4s worker", process.execPath, [K4S_BIN, "worker", "--server", address, "--name", "sink-host", "--module", `sink=${module}`], /serving/, 60_000));
  for (const name of ["durable-sink", "memory-sink"]) {
    for (let t = Date.now(); !(await client.get("Container", name)).status?.ready; ) {
      if (Date.now() - t > 60_000) throw new Error(`${name} not ready within 60 s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { client, server };
}

async function startJetStream(): Promise<{ nc: NatsConnection; js: JetStreamClient; server: Child }> {
  const port = await freePort();
  const server = await spawnBinary("nats-server", "nats-server", ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", join(dir, "nats-store")], /Server is ready/);
  children.push(server);
  const nc = await connect({ servers: `127.0.0.1:${port}` });
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: "BENCH", subjects: ["bench.>"] });
  await jsm.consumers.add("BENCH", { durable_name: "sink", ack_policy: "explicit" as never });
  const consumer = join(dir, "consumer.mjs");
  writeFileSync(
    consumer,
    `import { connect } from ${JSON.stringify(NATS_JS)};
const nc = await connect({ servers: ${JSON.stringify(`127.0.0.1:${port}`)} });
const c = await nc.jetstream().consumers.get("BENCH", "sink");
const messages = await c.consume({ max_messages: 1000 });
console.log("consumer ready");
for await (const m of messages) m.ack();
`,
  );
  children.push(await spawnBinary("JetStream consumer", process.execPath, [consumer], /consumer ready/));
  return { nc, js: nc.jetstream(), server };
}

async function measure(system: string, pid: number, call: () => Promise<unknown>): Promise<Row> {
  let cpu0 = 0;
  let cpu1 = 0;
  const r = await closedLoop(call, CONCURRENCY, {
    warmupMs,
    durationMs,
    onMeasureStart: () => (cpu0 = cpuMicros(pid)),
    onMeasureEnd: () => (cpu1 = cpuMicros(pid)),
  });
  return { system, rate: r.rate, p50: r.latency.p50, p99: r.latency.p99, cpuUsPerMsg: (cpu1 - cpu0) / Math.max(1, r.calls), errors: r.errors, firstError: r.firstError };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  try {
    execFileSync("nats-server", ["--version"], { stdio: "ignore" });
  } catch {
    throw new Error("nats-server not found on PATH (Debian: apt-get install nats-server)");
  }
  const k4s = await startK4s();
  const nats = await startJetStream();
  const runs: Record<string, () => Promise<Row>> = {
    "k4s durable": () => measure("k4s durable", k4s.server.pid, () => k4s.client.send("durable-sink", payload)),
    "k4s memory": () => measure("k4s memory", k4s.server.pid, () => k4s.client.send("memory-sink", payload)),
    "JetStream publish": () => measure("JetStream publish", nats.server.pid, () => nats.js.publish("bench.x", payloadBytes)),
  };
  const names = Object.keys(runs);
  // One unmeasured pass each, so that whoever runs first in round 1 is not measured cold.
  for (const name of names) await runs[name]!();
  const rows: Row[] = [];
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + round) % names.length]!;
      const row = await runs[name]!();
      rows.push(row);
      console.log(
        `round ${round + 1} ${name}: ${row.rate.toFixed(0)} msg/s, p50 ${row.p50.toFixed(2)} ms, p99 ${row.p99.toFixed(2)} ms, server CPU ${row.cpuUsPerMsg.toFixed(0)} µs/msg${row.errors ? `, ${row.errors} errors (${row.firstError})` : ""}`,
      );
    }
  }
  const med = (system: string, key: "rate" | "p50" | "p99" | "cpuUsPerMsg") => median(rows.filter((r) => r.system === system).map((r) => r[key]));
  console.log(`\nmedians of ${rounds} round(s), ${CONCURRENCY} sends in flight, 100-byte payloads, load average ${(await import("node:os")).loadavg()[0]!.toFixed(1)}:`);
  console.log("| system | msg/s | p50 ms | p99 ms | server CPU µs/msg |\n| --- | --- | --- | --- | --- |");
  for (const n of names) console.log(`| ${n} | ${med(n, "rate").toFixed(0)} | ${med(n, "p50").toFixed(2)} | ${med(n, "p99").toFixed(2)} | ${med(n, "cpuUsPerMsg").toFixed(0)} |`);
  console.log(`k4s durable / JetStream publish: ${(med("k4s durable", "rate") / med("JetStream publish", "rate")).toFixed(2)}x msg/s`);
  console.log(`k4s durable / k4s memory: ${(med("k4s durable", "rate") / med("k4s memory", "rate")).toFixed(2)}x msg/s`);
  await k4s.client.close();
  await nats.nc.close();
}

try {
  await main();
} finally {
  for (const c of children.reverse()) await c.stop(2000);
  rmSync(dir, { recursive: true, force: true });
}
