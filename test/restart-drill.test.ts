/**
 * The restart drill: a real `k4s server` (with its local worker host), a separate `k4s worker`
 * host running a ReplicaSet of 3 behind a Service, and a `k4s get -w` and a `k4s logs -f` left
 * open. The server is stopped with SIGTERM and started again, then killed with SIGKILL and
 * started again. Nothing else is touched: the host, the watch and the log follower must carry on
 * by themselves.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "../src/client/index.js";
import type { Container } from "../src/gen/k4s/v1/resources_pb.js";
import { childrenOf, eventually, isAlive, spawnK4s, WORKERS_SDK_JS, type Proc } from "./helpers.js";

/** The drill's worker: logs a numbered tick every 200 ms and answers requests with its name. */
const DRILL_MODULE = `import { defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};
export const ticker = defineWorker(async (ctx) => {
  let n = 0;
  const timer = setInterval(() => ctx.log(\`tick \${ctx.name} \${++n}\`), 200);
  try {
    await ctx.handle((msg) => ({ from: ctx.name, got: msg.value }));
  } finally {
    clearInterval(timer);
  }
});
`;

const MANIFEST = `kind: ReplicaSet
metadata: {name: drill}
spec:
  replicas: 3
  template:
    metadata: {labels: {app: drill}}
    spec: {module: drill, function: ticker}
---
kind: Service
metadata: {name: drill-svc}
spec: {selector: "drill-*"}
`;

/** A line of a process's output and when it arrived. */
interface Stamped {
  at: number;
  line: string;
}

/** Collects a process's output lines with their arrival times. */
function stamp(p: Proc): Stamped[] {
  const lines: Stamped[] = [];
  for (const stream of [p.child.stdout!, p.child.stderr!]) {
    let partial = "";
    stream.on("data", (d: Buffer) => {
      const parts = (partial + d.toString("utf8")).split("\n");
      partial = parts.pop() ?? "";
      const at = Date.now();
      for (const line of parts) lines.push({ at, line });
    });
  }
  return lines;
}

/** Lines printed again less than a second after they were last printed, with how many times. */
function fastRepeats(lines: readonly Stamped[]): string[] {
  const last = new Map<string, number>();
  const found: string[] = [];
  for (const { at, line } of lines) {
    if (line.trim() === "") continue;
    const prev = last.get(line);
    if (prev !== undefined && at - prev < 1000) found.push(line);
    last.set(line, at);
  }
  return found;
}

let dir: string;
const procs: Proc[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), "k4s-drill-"));
  writeFileSync(join(dir, "drill.mjs"), DRILL_MODULE);
  writeFileSync(join(dir, "drill.yaml"), MANIFEST);
});

after(async () => {
  await Promise.all(procs.map((p) => p.kill("SIGKILL")));
  rmSync(dir, { recursive: true, force: true });
});

/** Prints a step of the drill with the seconds since it began, so a failure shows where it was. */
let began = Date.now();
function step(what: string): void {
  console.log(`# drill ${((Date.now() - began) / 1000).toFixed(1)} s: ${what}`);
}

function track(p: Proc): Proc {
  procs.push(p);
  return p;
}


test("restart drill: SIGTERM then SIGKILL of the server under a live host, get -w and logs -f", { timeout: 240_000 }, async () => {
  began = Date.now();
  const dataDir = join(dir, "data");
  const serverArgs = (port: number) => ["server", "--port", String(port), "--data-dir", dataDir, "--heartbeat-ms", "1000", "--metrics-port", "0", "--no-dashboard"];
  let server = track(spawnK4s(serverArgs(0)));
  const serverLines: Stamped[][] = [stamp(server)];
  await server.waitFor(/listening on 127\.0\.0\.1:(\d+)/, 30_000);
  const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(server.stdout())![1]);
  const address = `127.0.0.1:${port}`;

  const host = track(spawnK4s(["worker", "--server", address, "--name", "h1", "--module", `drill=${join(dir, "drill.mjs")}`]));
  const hostLines = stamp(host);
  await host.waitFor("host h1 serving", 30_000);

  const client = () => createClient({ address, reconnect: false });
  const apply = track(spawnK4s(["apply", "-f", join(dir, "drill.yaml"), "--server", address, "--wait", "--timeout", "60s"]));
  assert.equal(await apply.exited, 0, apply.stderr());

  const replicas = async (): Promise<Container[]> => {
    const c = client();
    try {
      return (await c.list("Container", { nameGlob: "drill-*" })).items;
    } finally {
      await c.close();
    }
  };
  const before = await replicas();
  assert.equal(before.length, 3);
  for (const c of before) assert.equal(c.status?.host, "h1", `${c.metadata?.name} runs on h1`);

  const watch = track(spawnK4s(["get", "containers", "-w", "--server", address]));
  const watchLines = stamp(watch);
  const follow = track(spawnK4s(["logs", "-f", "drill-0", "--server", address]));
  const followLines = stamp(follow);
  await watch.waitFor("drill-2", 20_000);
  await follow.waitFor("tick drill-0", 20_000);

  /** Restarts the server and returns how long after it listened the service answered. */
  const restart = async (signal: NodeJS.Signals, round: number): Promise<number> => {
    step(`${signal} of the server`);
    const oldPid = server.child.pid!;
    const localHosts = childrenOf(oldPid);
    assert.ok(localHosts.length >= 1, "the server runs a local worker host");
    await server.kill(signal);
    // The local worker host of the old server must end with it.
    await eventually(() => localHosts.every((pid) => !isAlive(pid)), 15_000, `the local worker host of the ${signal}ed server to exit`);
    step("the old server's local host exited; starting the server again");
    server = track(spawnK4s(serverArgs(port)));
    serverLines.push(stamp(server));
    await server.waitFor("listening on", 30_000);
    step("the server is back; waiting for the service to answer");
    const back = Date.now();
    let answeredAt = 0;
    await eventually(
      async () => {
        const c = client();
        try {
          const reply = await c.request<{ from: string }>("service/drill-svc", round, { timeoutMs: 1000 });
          answeredAt = Date.now();
          return reply.from.startsWith("drill-");
        } finally {
          await c.close();
        }
      },
      30_000,
      "the service to answer after the restart",
    );
    // The watch carries on: a change made now shows up in it.
    const probe = `probe-${round}`;
    const c = client();
    try {
      await c.apply(`kind: Container\nmetadata: {name: ${probe}}\nspec: {}\n`);
    } finally {
      await c.close();
    }
    step("the service answered; waiting for the watch to show a new object");
    await watch.waitFor(probe, 30_000);
    step("the watch showed it; waiting for a new log line");
    // The log follower carries on: a line logged after the restart reaches it.
    const seen = followLines.length;
    await eventually(() => followLines.slice(seen).some((l) => l.at > back && l.line.startsWith("tick drill-0")), 30_000, "a new log line after the restart");
    return answeredAt - back;
  };

  // Shortly before the test's own timeout, print what every process said (a hang shows where).
  const watchdog = setTimeout(() => {
    const tail = (name: string, lines: readonly Stamped[]) => `## ${name}\n${lines.slice(-15).map((l) => `${((l.at - began) / 1000).toFixed(1)} ${l.line}`).join("\n")}`;
    console.log([["host h1", hostLines], ["get -w", watchLines], ["logs -f", followLines], ...serverLines.map((l, i) => [`server ${i + 1}`, l] as const)].map(([n, l]) => tail(n as string, l as Stamped[])).join("\n"));
  }, 225_000);
  watchdog.unref();
  const afterTerm = await restart("SIGTERM", 1);
  // Each restart is a separate event that get -w and logs -f report ("... is back; resumed"): on
  // a fast machine the second came within a second of the first, which the repeat check below
  // (one event printed twice) cannot tell apart. Let a second pass between them.
  await new Promise((r) => setTimeout(r, 1500));
  const afterKill = await restart("SIGKILL", 2);
  clearTimeout(watchdog);
  step("both restarts done; checking the replicas, sessions, output and events");

  const after = await replicas();
  assert.equal(after.length, 3);
  for (const c of after) {
    assert.equal(c.status?.restarts, 0, `${c.metadata?.name} was not restarted: ${c.status?.message}`);
    assert.equal(c.status?.host, "h1");
    assert.equal(c.metadata?.uid, before.find((b) => b.metadata?.name === c.metadata?.name)?.metadata?.uid);
  }
  // No duplicate host: the new server has exactly its own local host and h1, and keeps it so.
  const metricsUrl = /metrics on (http:\/\/\S+)/.exec(server.stdout())![1]!;
  const hostSessions = async () => {
    const metrics = await (await fetch(metricsUrl)).text();
    return Number(/k4s_worker_sessions\{role="host"\} (\d+)/.exec(metrics)?.[1]);
  };
  await eventually(async () => (await hostSessions()) === 2, 30_000, "the local host and h1 to be connected");
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(await hostSessions(), 2, "host sessions on the new server");
  }
  assert.doesNotMatch(host.stdout() + host.stderr(), /reconnected on a new session/, "h1 was never evicted by another session");
  assert.equal(watch.child.exitCode, null, `get -w still runs: ${watch.stderr()}`);
  assert.equal(follow.child.exitCode, null, `logs -f still runs: ${follow.stderr()}`);
  // Each log line reaches the follower once; no process repeats a line within a second.
  const ticks = followLines.filter((l) => l.line.startsWith("tick drill-0")).map((l) => l.line);
  assert.equal(new Set(ticks).size, ticks.length, "no log line is followed twice");
  for (const [name, lines] of [
    ["host h1", hostLines],
    ["get -w", watchLines],
    ["logs -f", followLines],
    ...serverLines.map((l, i) => [`server ${i + 1}`, l] as const),
  ] as const) {
    assert.deepEqual(fastRepeats(lines), [], `${name} repeats lines within a second`);
  }
  // The restarts were not restarts of the containers: no rescheduling, back-off or kill events.
  const c = client();
  try {
    const churn = [];
    for await (const e of c.events({ kind: "Container" })) {
      if (e.name.startsWith("drill-") && /FailedScheduling|BackOff|Killing|Scheduled/.test(e.reason) && e.seq > 0n) churn.push(e);
    }
    const scheduled = churn.filter((e) => e.reason === "Scheduled");
    assert.equal(scheduled.length, 3, `each replica scheduled once: ${churn.map((e) => `${e.name} ${e.reason} ${e.message}`).join("; ")}`);
    assert.deepEqual(churn.filter((e) => e.reason !== "Scheduled").map((e) => `${e.name} ${e.reason}: ${e.message}`), []);
  } finally {
    await c.close();
  }
  // The issue's target is 3 s (measured here: ~1.6 s on a loaded 2-core machine, bounded by the
  // host's reconnect back-off of at most 1.2 s); the assertion keeps 5x headroom for load.
  console.log(`# service answered ${afterTerm} ms after the SIGTERM restart, ${afterKill} ms after the SIGKILL restart`);
  assert.ok(afterTerm <= 15_000, `answered ${afterTerm} ms after the SIGTERM restart`);
  assert.ok(afterKill <= 15_000, `answered ${afterKill} ms after the SIGKILL restart`);
});
