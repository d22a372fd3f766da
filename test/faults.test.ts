/**
 * Worker faults with real worker host processes: a host SIGKILLed with messages and requests in
 * flight, a host frozen with SIGSTOP (heartbeat loss), a slow consumer, a worker that never
 * replies, and a server restart under live hosts and clients. Workers record every delivery in
 * a file, so what was delivered survives the process that handled it.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { createClient, type K4sClient } from "../src/client/index.js";
import { ContainerSchema, ContainerSpecSchema } from "../src/gen/k4s/v1/resources_pb.js";
import type { K4sServer } from "../src/server/server.js";
import { eventually, spawnK4s, startTestServer, WORKERS_SDK_JS, type Proc, recorderLines } from "./helpers.js";


/**
 * Worker module of the fault tests: a recorder that writes each delivery down when it gets it
 * ("start") and when it has handled it ("done"), and a black hole. Under FAULTS_HOLD=1 (given to
 * one host) a message marked `hold` never finishes there, so it is surely in that host's hands
 * when the host is killed; a `gate` parameter (a file) makes the recorder wait for the file
 * before handling anything.
 */
const FAULTS_MODULE = `import { appendFileSync, existsSync } from "node:fs";
import { defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const recorder = defineWorker(async (ctx) => {
  await ctx.handle(async (msg) => {
    const line = (ev) => appendFileSync(ctx.params.file, JSON.stringify({ ev, v: msg.value, a: msg.attempt, r: msg.expectsReply, pid: process.pid }) + "\\n");
    line("start");
    if (process.env.FAULTS_HOLD === "1" && msg.value.hold) await new Promise(() => {});
    while (ctx.params.gate && !existsSync(ctx.params.gate)) await sleep(20);
    if (ctx.params.delayMs) await sleep(ctx.params.delayMs);
    line("done");
    return msg.expectsReply ? { echo: msg.value } : undefined;
  });
});
export const blackhole = defineWorker(async (ctx) => {
  await ctx.handle((msg) => new Promise((resolve) => msg.signal.addEventListener("abort", () => resolve(undefined))));
});
`;

let dir: string;
let modulePath: string;
const procs: Proc[] = [];
const clients: K4sClient[] = [];
const servers: K4sServer[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), "k4s-faults-"));
  modulePath = join(dir, "faults-module.mjs");
  writeFileSync(modulePath, FAULTS_MODULE);
});

after(async () => {
  for (const p of procs) {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGCONT");
  }
  await Promise.all(procs.map((p) => p.kill("SIGKILL")));
  await Promise.all(clients.map((c) => c.close()));
  for (const s of servers) await s.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function server(options: Parameters<typeof startTestServer>[0] = {}): Promise<K4sServer> {
  const s = await startTestServer({ heartbeatIntervalMs: 1000, ...options });
  servers.push(s);
  return s;
}

async function workerHost(s: K4sServer | string, name: string, env: Record<string, string> = {}): Promise<Proc> {
  const address = typeof s === "string" ? s : s.address;
  const p = spawnK4s(["worker", "--server", address, "--name", name, "--module", `faults=${modulePath}`], env);
  procs.push(p);
  await p.waitFor(`host ${name} serving`, 20_000);
  return p;
}

function client(address: string, reconnect = true): K4sClient {
  const c = createClient({ address, reconnect });
  clients.push(c);
  return c;
}

async function container(s: K4sServer, name: string, spec: MessageInitShape<typeof ContainerSpecSchema>): Promise<void> {
  await s.resources.create(create(ContainerSchema, { metadata: { name }, spec }));
}

async function readyOn(s: K4sServer, name: string, host?: string, timeoutMs = 30_000): Promise<void> {
  await eventually(
    async () => {
      const st = (await s.resources.get("Container", name))?.status;
      return st?.ready && (host === undefined || st.host === host);
    },
    timeoutMs,
    `${name} ready${host ? ` on ${host}` : ""}`,
  );
}

interface Record_ {
  ev: "start" | "done";
  v: { s?: number; q?: number; hold?: boolean };
  a: number;
  r: boolean;
  pid: number;
}

/** The recorder's lines of one kind: deliveries it got ("start") or handled ("done"). */
function records(file: string, ev: Record_["ev"] = "start"): Record_[] {
  return recorderLines<Record_>(file, ev);
}

function codeOf(err: unknown): Code {
  return ConnectError.from(err).code;
}

test("SIGKILL of a host mid-stream: no accepted send lost, no request run twice or left hanging", async () => {
  const s = await server();
  // fk-1 never finishes a message marked hold: one send and one request are surely in its hands
  // when it is killed.
  const h1 = await workerHost(s, "fk-1", { FAULTS_HOLD: "1" });
  const file = join(dir, "kill.log");
  await container(s, "fk-rec", { module: "faults", function: "recorder", concurrency: 4, parameters: { file, delayMs: 15 } as never });
  await readyOn(s, "fk-rec", "fk-1");
  await workerHost(s, "fk-2");
  const c = client(s.address);
  const SENDS = 300;
  const REQUESTS = 60;
  // Long enough that no request waiting in the inbox on a loaded machine reaches it: a request
  // here ends answered, or UNAVAILABLE because the host holding it died.
  const TIMEOUT = 30_000;
  const sends: Promise<boolean>[] = [];
  const requests: Promise<{ ok: boolean; code?: Code; message?: string; ms: number }>[] = [];
  for (let i = 0; i < SENDS; i++) {
    // One send and one request held: two of the four slots, so the host keeps working.
    sends.push(c.send("fk-rec", { s: i, hold: i === 10 }).then(() => true, () => false));
    if (i % 5 === 0) {
      const q = i / 5;
      const hold = q === 3;
      const t0 = Date.now();
      requests.push(
        c.request("fk-rec", { q, hold }, { timeoutMs: TIMEOUT }).then(
          (reply) => {
            assert.deepEqual(reply, { echo: { q, hold } });
            return { ok: true, ms: Date.now() - t0 };
          },
          (err) => ({ ok: false, code: codeOf(err), message: ConnectError.from(err).message, ms: Date.now() - t0 }),
        ),
      );
    }
  }
  // Started by fk-1 and not finished by fk-1: once it is killed, the same messages are handed to
  // fk-2, whose "done" lines must not hide what fk-1 had in its hands.
  const inHands = () => {
    const done = new Set(records(file, "done").filter((r) => r.pid === h1.child.pid).map((r) => JSON.stringify(r.v)));
    return records(file).filter((r) => r.pid === h1.child.pid && !done.has(JSON.stringify(r.v)));
  };
  await eventually(
    () => records(file).length >= 40 && inHands().some((r) => r.v.q !== undefined) && inHands().some((r) => r.v.s !== undefined),
    30_000,
    "40 deliveries, and a send and a request in fk-1's hands, before the kill",
  );
  await h1.kill("SIGKILL");
  // What the killed host got and never finished: at least one send and one request.
  const lost = inHands();
  const lostSends = lost.filter((r) => r.v.s !== undefined).map((r) => r.v.s!);
  const lostRequests = lost.filter((r) => r.v.q !== undefined).map((r) => r.v.q!);
  assert.ok(lostSends.length > 0 && lostRequests.length > 0, `in fk-1's hands at the kill: sends ${lostSends}, requests ${lostRequests}`);
  const accepted = (await Promise.all(sends)).filter(Boolean).length;
  assert.equal(accepted, SENDS, "every send was accepted (the inbox stays on the server)");
  const outcomes = await Promise.all(requests);
  assert.equal(requests.length, REQUESTS);
  // None hangs: one left hanging would end DEADLINE_EXCEEDED, which fails the checks below.
  for (const [q, o] of outcomes.entries()) {
    if (lostRequests.includes(q)) {
      assert.equal(o.code, Code.Unavailable, `request ${q}, in the killed host's hands, ended with ${o.ok ? "an answer" : `${Code[o.code!]}: ${o.message}`}, not UNAVAILABLE`);
    } else if (!o.ok) {
      // On its way to fk-1 when it died (sent, not yet recorded there): that host's loss too.
      assert.equal(o.code, Code.Unavailable, `request ${q} failed with ${Code[o.code!]}: ${o.message}, not UNAVAILABLE`);
      assert.match(o.message!, /lost its host "fk-1"/);
    }
  }
  // Every accepted send is handled to the end at least once (counted when handled, not when
  // received): the ones lost in fk-1's hands too, on fk-2.
  await eventually(
    () => new Set(records(file, "done").filter((r) => r.v.s !== undefined).map((r) => r.v.s)).size === accepted,
    60_000,
    `all ${accepted} accepted sends handled`,
  );
  const done = records(file, "done");
  for (const i of lostSends) {
    assert.ok(done.some((r) => r.v.s === i && r.pid !== h1.child.pid && r.a > 1), `send ${i}, lost in the killed host, delivered again on fk-2`);
  }
  // At most once: a request is received at most once, in any host.
  const perRequest = new Map<number, number>();
  for (const r of records(file).filter((r) => r.v.q !== undefined)) perRequest.set(r.v.q!, (perRequest.get(r.v.q!) ?? 0) + 1);
  for (const [q, n] of perRequest) assert.equal(n, 1, `request ${q} was delivered ${n} times (at most once)`);
  for (const [q, o] of outcomes.entries()) if (o.ok) assert.equal(perRequest.get(q), 1, `answered request ${q} is recorded once`);
  const sendRecords = records(file).filter((r) => r.v.s !== undefined);
  const redelivered = sendRecords.length - new Set(sendRecords.map((r) => r.v.s)).size;
  console.log(
    `faults/kill figures: sends ${SENDS} accepted ${accepted} received ${sendRecords.length} redelivered ${redelivered}; in the killed host's hands: sends ${lostSends.join(",")} requests ${lostRequests.join(",")}; requests answered ${outcomes.filter((o) => o.ok).length} UNAVAILABLE ${outcomes.filter((o) => !o.ok).length}, slowest settled after ${Math.max(...outcomes.map((o) => o.ms))} ms`,
  );
  assert.ok(done.some((r) => r.pid !== h1.child.pid), "the container moved to the other host");
});

test("a host frozen with SIGSTOP loses its heartbeat: its request in flight fails UNAVAILABLE, its containers move with their unacked sends", async () => {
  const s = await server({ heartbeatIntervalMs: 200 });
  const h1 = await workerHost(s, "fs-1");
  const file = join(dir, "stop.log");
  await container(s, "fs-echo", { module: "workers", function: "echo_worker", parameters: { prefix: "FS" } as never });
  await container(s, "fs-slow", { module: "faults", function: "recorder", concurrency: 2, parameters: { file, delayMs: 60_000 } as never });
  await readyOn(s, "fs-echo", "fs-1");
  await readyOn(s, "fs-slow", "fs-1");
  await workerHost(s, "fs-2");
  const c = client(s.address);
  assert.equal(await c.request("fs-echo", "before", { timeoutMs: 30_000 }), "FS: before");
  const t0 = Date.now();
  const stuck = c.request("fs-slow", { q: 1 }, { timeoutMs: 20_000 }).then(
    () => ({ code: 0, ms: Date.now() - t0 }),
    (err) => ({ code: codeOf(err) as number, ms: Date.now() - t0 }),
  );
  await c.send("fs-slow", { s: 1 });
  await eventually(() => records(file).length === 2, 30_000, "both deliveries in the frozen host's hands");
  h1.child.kill("SIGSTOP");
  try {
    const r = await stuck;
    // UNAVAILABLE, not DEADLINE_EXCEEDED: it failed on the heartbeat's loss, not at its 20 s deadline.
    assert.equal(r.code, Code.Unavailable, `the request on the frozen host ended with ${Code[r.code]}`);
    console.log(`faults/stop figures: the request on the frozen host failed UNAVAILABLE after ${r.ms} ms (heartbeat 200 ms, deadline 20 s)`);
    await readyOn(s, "fs-echo", "fs-2");
    assert.equal(await c.request("fs-echo", "after", { timeoutMs: 30_000 }), "FS: after");
    await readyOn(s, "fs-slow", "fs-2");
    await eventually(() => records(file).filter((x) => x.v.s === 1).length === 2, 30_000, "the unacked send delivered again on fs-2");
    assert.equal(records(file).filter((x) => x.v.q === 1).length, 1, "the request was not run again");
  } finally {
    h1.child.kill("SIGCONT");
    await h1.kill("SIGKILL");
  }
});

test("a slow consumer: a full inbox answers RESOURCE_EXHAUSTED and nothing accepted is lost", async () => {
  const s = await server();
  await workerHost(s, "fc-1");
  const file = join(dir, "slow.log");
  const gate = join(dir, "slow.gate");
  const LIMIT = 20;
  // The worker holds its first message until the gate opens: the inbox fills and stays full.
  await container(s, "fc-slow", { module: "faults", function: "recorder", queueLimit: LIMIT, parameters: { file, gate } as never });
  await readyOn(s, "fc-slow");
  const c = client(s.address);
  const results = await Promise.all(
    Array.from({ length: 150 }, (_, i) => c.send("fc-slow", { s: i }).then(() => ({ i, err: undefined }), (err) => ({ i, err: ConnectError.from(err) }))),
  );
  const accepted = results.filter((r) => !r.err).map((r) => r.i);
  const refused = results.filter((r) => r.err);
  for (const r of refused) {
    assert.equal(r.err!.code, Code.ResourceExhausted, r.err!.message);
    assert.match(r.err!.rawMessage, /fc-slow/);
  }
  // The inbox's worth, plus at most the one message in the worker's hands.
  assert.ok(accepted.length >= LIMIT && accepted.length <= LIMIT + 1, `accepted ${accepted.length} with queueLimit ${LIMIT}`);
  assert.equal(refused.length, 150 - accepted.length);
  writeFileSync(gate, "");
  await eventually(() => new Set(records(file, "done").map((r) => r.v.s)).size === accepted.length, 30_000, `all ${accepted.length} accepted handled`);
  const handled = records(file, "done").map((r) => r.v.s!);
  assert.equal(handled.length, new Set(handled).size, "each handled once");
  assert.deepEqual(new Set(handled), new Set(accepted));
  console.log(`faults/slow figures: sent 150 accepted ${accepted.length} refused ${refused.length} (queueLimit ${LIMIT})`);
});

test("a worker that never replies: requests fail DEADLINE_EXCEEDED at their deadline, other containers unaffected", async () => {
  const s = await server();
  await workerHost(s, "fn-1");
  const file = join(dir, "ok.log");
  await container(s, "fn-hole", { module: "faults", function: "blackhole", concurrency: 8 });
  await container(s, "fn-ok", { module: "faults", function: "recorder", parameters: { file } as never });
  await readyOn(s, "fn-hole");
  await readyOn(s, "fn-ok");
  const c = client(s.address);
  const DEADLINE = 800;
  const holes = Array.from({ length: 12 }, () => {
    const t0 = Date.now();
    return c.request("fn-hole", "anyone?", { timeoutMs: DEADLINE }).then(
      () => ({ code: 0, ms: Date.now() - t0 }),
      (err) => ({ code: codeOf(err) as number, ms: Date.now() - t0 }),
    );
  });
  const oks = await Promise.all(Array.from({ length: 30 }, (_, i) => c.request("fn-ok", { q: i }, { timeoutMs: 30_000 })));
  assert.deepEqual(oks, Array.from({ length: 30 }, (_, i) => ({ echo: { q: i } })));
  const ended = await Promise.all(holes);
  for (const h of ended) {
    assert.equal(h.code, Code.DeadlineExceeded, `never-answered request ended with ${Code[h.code]}`);
    // Not before its deadline (how long after it depends on the machine's load: a figure).
    assert.ok(h.ms >= DEADLINE - 50, `ended after ${h.ms} ms, before its deadline ${DEADLINE}`);
  }
  console.log(`faults/never figures: ${ended.length} never-answered requests ended DEADLINE_EXCEEDED after ${Math.min(...ended.map((h) => h.ms))}-${Math.max(...ended.map((h) => h.ms))} ms (deadline ${DEADLINE} ms)`);
});

test("a server restart on the same data dir: a host and a client survive, errors in the gap are UNAVAILABLE", async () => {
  const dataDir = join(dir, "restart-data");
  const first = await startTestServer({ dataDir, heartbeatIntervalMs: 1000 });
  const port = first.port;
  await workerHost(first.address, "fr-1");
  await container(first, "fr-echo", { module: "workers", function: "echo_worker", parameters: { prefix: "FR" } as never });
  await readyOn(first, "fr-echo");
  const address = first.address;
  const c = client(address);
  assert.equal(await c.request("fr-echo", "one", { timeoutMs: 30_000 }), "FR: one");
  await first.stop();

  const oneShot = client(address, false);
  await assert.rejects(oneShot.request("fr-echo", "gap", { timeoutMs: 10_000 }), (err) => {
    assert.equal(codeOf(err), Code.Unavailable, ConnectError.from(err).message);
    return true;
  });
  await assert.rejects(oneShot.get("Container", "fr-echo"), (err) => {
    assert.equal(codeOf(err), Code.Unavailable, ConnectError.from(err).message);
    return true;
  });

  const second = await server({ dataDir, port });
  assert.equal(second.port, port);
  assert.ok(await second.resources.get("Container", "fr-echo"), "the container survived the restart");
  // The long-lived client waits within its timeout for the server to come back.
  assert.equal(await c.request("fr-echo", "two", { timeoutMs: 30_000 }), "FR: two");
  await readyOn(second, "fr-echo", "fr-1");
  assert.equal(await oneShot.request("fr-echo", "three", { timeoutMs: 30_000 }), "FR: three");
});
