/**
 * Durable delivery through real parts: a `k4s server` process on a data dir, SIGKILLed and
 * started again on the same port, real `k4s worker` host processes, the SDK as the sender. A
 * worker writes a line when it has handled a message (not when it got it), so "delivered"
 * means handled. Sends to a durable container are acked only once journaled: after a SIGKILL
 * every acked send is handled (at least once); requests are never run again.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { createClient, type K4sClient } from "../src/client/index.js";
import { JOURNAL_PREFIX } from "../src/server/messaging/send-journal.js";
import { openStore } from "../src/server/store/open-store.js";
import { startEtcd } from "./etcd.js";
import { eventually, spawnK4s, startTestServer, WORKERS_SDK_JS, type Proc, recorderLines } from "./helpers.js";

/**
 * The recorder: appends {v, a, r, ev} to params.file when it starts and when it is done with a
 * message; waits for params.gate (a file) before handling anything while it is set.
 */
const MODULE = `import { appendFileSync, existsSync } from "node:fs";
import { defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const recorder = defineWorker(async (ctx) => {
  await ctx.handle(async (msg) => {
    const line = (ev) => appendFileSync(ctx.params.file, JSON.stringify({ ev, v: msg.value, a: msg.attempt, r: msg.expectsReply }) + "\\n");
    line("start");
    while (ctx.params.gate && !existsSync(ctx.params.gate)) await sleep(20);
    if (ctx.params.delayMs) await sleep(ctx.params.delayMs);
    line("done");
    return msg.expectsReply ? { ok: true } : undefined;
  });
});
`;

interface Line {
  ev: "start" | "done";
  v: { i?: number; q?: number; mark?: string };
  a: number;
  r: boolean;
}

let dir: string;
let modulePath: string;
const procs: Proc[] = [];
const clients: K4sClient[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), "k4s-durable-"));
  modulePath = join(dir, "recorder.mjs");
  writeFileSync(modulePath, MODULE);
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(procs.map((p) => p.kill("SIGKILL")));
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A `k4s server` process (port 0 the first time, then the same port again) on a data dir, or on
 * a store given as `--store URL`.
 */
async function serverProc(dataDir: string, port = 0): Promise<{ proc: Proc; address: string; port: number }> {
  const state = dataDir.startsWith("etcd://") ? ["--store", dataDir] : ["--data-dir", dataDir];
  const proc = spawnK4s(["server", "--port", String(port), ...state, "--no-local-worker", "--no-dashboard"]);
  procs.push(proc);
  await proc.waitFor(/listening on (\S+)/, 60_000);
  const address = /listening on (\S+)/.exec(proc.stdout())![1]!;
  return { proc, address, port: Number(address.slice(address.lastIndexOf(":") + 1)) };
}

async function workerHost(address: string, name: string, modules = ["dur"]): Promise<Proc> {
  const p = spawnK4s(["worker", "--server", address, "--name", name, ...modules.flatMap((m) => ["--module", `${m}=${modulePath}`])]);
  procs.push(p);
  await p.waitFor(`host ${name} serving`, 30_000);
  return p;
}

function client(address: string): K4sClient {
  const c = createClient({ address, reconnect: false });
  clients.push(c);
  return c;
}

function lines(file: string, ev: Line["ev"] = "done"): Line[] {
  return recorderLines<Line>(file, ev);
}

const durable = (name: string, file: string, params: Record<string, unknown> = {}, module = "dur") =>
  `kind: Container\nmetadata: {name: ${name}, labels: {app: ${name}}}\nspec: {module: ${module}, function: recorder, delivery: durable, parameters: ${JSON.stringify({ file, ...params })}}\n`;

/** Waits until every acked value was handled; returns the values handled. */
function allHandled(file: string, acked: Iterable<number>, timeoutMs: number, what: string): Promise<Set<number | undefined>> {
  const want = [...acked];
  return eventually(
    () => {
      const got = new Set(lines(file).map((l) => l.v.i));
      return want.every((i) => got.has(i)) ? got : undefined;
    },
    timeoutMs,
    what,
  ) as Promise<Set<number | undefined>>;
}

/**
 * Sends queued at a durable ReplicaSet's replica (its worker holds the first one), through a
 * Service over it, and at a container no host serves; then the server and the host are
 * SIGKILLed, the server starts again on the same port and state, and a new host handles all.
 */
async function queuedForStoppedWorker(state: string, tag: string): Promise<void> {
  const file = join(dir, `queued-${tag}.jsonl`);
  const gate = join(dir, `queued-${tag}.gate`);
  let srv = await serverProc(state);
  const c1 = client(srv.address);
  await c1.apply(
    "kind: ReplicaSet\nmetadata: {name: keeper}\nspec:\n  replicas: 1\n  template:\n    metadata: {labels: {app: keeper}}\n" +
      `    spec: {module: dur, function: recorder, delivery: durable, parameters: ${JSON.stringify({ file, gate })}}\n` +
      "---\nkind: Service\nmetadata: {name: keepers}\nspec: {matchLabels: {app: keeper}}\n" +
      // Sends to a container no host serves yet wait in its journal too.
      "---\n" +
      durable("absent", file, {}, "later"),
  );
  // The worker takes the first message and holds it (gate closed); the rest wait in the inbox.
  const host = await workerHost(srv.address, `h1-${tag}`);
  await eventually(async () => (await c1.get("Service", "keepers"))?.status?.endpoints.length === 1, 30_000, "keepers has its endpoint");
  const acked: number[] = [];
  for (let i = 0; i < 150; i++) {
    const target = ["container/keeper-0", "service/keepers", "container/absent"][i % 3]!;
    await c1.send(target, { i });
    acked.push(i);
  }
  await eventually(() => lines(file, "start").length >= 1, 30_000, "the worker holds a message");
  assert.equal(lines(file).length, 0, "nothing was handled before the kill");
  await srv.proc.kill("SIGKILL");
  await host.kill("SIGKILL");
  await c1.close();

  srv = await serverProc(state, srv.port);
  writeFileSync(gate, "");
  await workerHost(srv.address, `h2-${tag}`, ["dur", "later"]);
  const handled = await allHandled(file, acked, 90_000, "every acked send handled after the restart");
  const done = lines(file);
  const duplicates = done.length - handled.size;
  console.log(`queued durable sends (${tag}): acked ${acked.length}, handled ${handled.size}, duplicates ${duplicates}, lost 0`);
  assert.ok(duplicates <= 1, `only the message held at the kill may run twice (${duplicates})`);
  assert.ok(done.some((l) => l.a > 1), "the held message is delivered again, as a redelivery");
  await srv.proc.kill("SIGKILL");
}

test("SIGKILL of the server with durable sends queued for a stopped worker: every acked send is handled after the restart", async () => {
  await queuedForStoppedWorker(join(dir, "queued"), "sqlite");
});

test("the same over etcd: a server SIGKILLed with durable sends queued; its successor on the same etcd delivers every acked one", async () => {
  const etcd = await startEtcd();
  try {
    await queuedForStoppedWorker(etcd.storeUrl, "etcd");
  } finally {
    await etcd.stop();
  }
});

test("crash rounds: sends in flight at every SIGKILL; acked sends are all handled (sent / acked / delivered / duplicated / lost)", async () => {
  const rounds = 5;
  const dataDir = join(dir, "rounds");
  const file = join(dir, "rounds.jsonl");
  let srv = await serverProc(dataDir);
  const c0 = client(srv.address);
  await c0.apply(durable("busy", file, { delayMs: 2 }));
  await c0.close();
  // One host for all rounds: it reconnects to each new server on its own.
  await workerHost(srv.address, "rounds-host");
  let next = 0;
  let sent = 0;
  const acked = new Set<number>();
  const report: string[] = [];
  for (let round = 1; round <= rounds; round++) {
    const c = client(srv.address);
    await eventually(async () => (await c.get("Container", "busy"))?.status?.ready, 60_000, "busy ready");
    const ackedBefore = acked.size;
    let outstanding = 0;
    let stop = false;
    // Eight senders keep sends in flight until the kill.
    const senders = Array.from({ length: 8 }, async () => {
      while (!stop) {
        const i = next++;
        sent++;
        outstanding++;
        try {
          await c.send("busy", { i });
          acked.add(i);
        } catch {
          // Not acked: the server died first. Such a send may or may not be handled.
        } finally {
          outstanding--;
        }
      }
    });
    await eventually(() => acked.size - ackedBefore >= 200, 60_000, `round ${round}: 200 acks`);
    const inFlight = outstanding;
    const handledNow = new Set(lines(file).map((l) => l.v.i));
    const backlog = [...acked].filter((i) => !handledNow.has(i)).length;
    await srv.proc.kill("SIGKILL");
    stop = true;
    await Promise.all(senders);
    await c.close();
    report.push(`round ${round}: ${inFlight} sends unanswered and ${backlog} acked-but-unhandled at the kill`);
    assert.ok(inFlight > 0, `round ${round}: sends were in flight at the kill`);
    srv = await serverProc(dataDir, srv.port);
  }
  const handled = await allHandled(file, acked, 120_000, "every acked send handled");
  const done = lines(file);
  const lost = [...acked].filter((i) => !handled.has(i)).length;
  const duplicated = done.length - handled.size;
  console.log(report.join("\n"));
  console.log(`crash rounds: ${rounds} SIGKILLs, sent ${sent}, acked ${acked.size}, delivered ${handled.size} (acked ${[...acked].filter((i) => handled.has(i)).length}, unacked ${handled.size - [...acked].filter((i) => handled.has(i)).length}), duplicated ${duplicated}, lost ${lost}`);
  assert.equal(lost, 0);
});

test("a request to a durable container is not run again after a server SIGKILL", async () => {
  const dataDir = join(dir, "request");
  const file = join(dir, "request.jsonl");
  const gate = join(dir, "request.gate");
  let srv = await serverProc(dataDir);
  const c1 = client(srv.address);
  await c1.apply(durable("asked", file, { gate }));
  await workerHost(srv.address, "req-host");
  await eventually(async () => (await c1.get("Container", "asked"))?.status?.ready, 60_000, "asked ready");
  const answer = c1.request("asked", { q: 1 }, { timeoutMs: 60_000 }).then(
    () => 0,
    (err) => ConnectError.from(err).code as number,
  );
  // Sent after it, so both are in the server's hands at the kill.
  await c1.send("asked", { i: 1 });
  await eventually(() => lines(file, "start").some((l) => l.v.q === 1), 30_000, "the request is being handled");
  await srv.proc.kill("SIGKILL");
  assert.equal(await answer, Code.Unavailable, "the caller learns the server went away");
  writeFileSync(gate, "");
  await c1.close();

  srv = await serverProc(dataDir, srv.port);
  const c2 = client(srv.address);
  // A send after the restart as a barrier: once it is handled, anything replayed was too.
  await eventually(async () => (await c2.get("Container", "asked"))?.status?.ready, 60_000, "asked ready again");
  await c2.send("asked", { mark: "after" });
  await eventually(() => lines(file).some((l) => l.v.mark === "after") && lines(file).some((l) => l.v.i === 1), 60_000, "barrier and journaled send handled");
  const runs = lines(file, "start").filter((l) => l.v.q === 1).length;
  assert.equal(runs, 1, "the request ran once, never replayed from a journal");
});

test("a full journal refuses with RESOURCE_EXHAUSTED naming the limit; deleting the container deletes its journal", async () => {
  const dataDir = join(dir, "bounds");
  const srv = await startTestServer({ dataDir, journalMaxMessages: 3 });
  try {
    const c = client(srv.address);
    await c.apply(durable("bounded", join(dir, "bounds.jsonl")));
    for (let i = 0; i < 3; i++) await c.send("bounded", { i });
    const err = await c.send("bounded", { i: 3 }).then(
      () => undefined,
      (e) => ConnectError.from(e),
    );
    assert.equal(err?.code, Code.ResourceExhausted);
    assert.match(err!.rawMessage, /durable journal of container "bounded" is full \(limit 3 messages/);
    await c.delete("Container", "bounded");
    await eventually(() => c.get("Container", "bounded").then(() => false, () => true), 30_000, "bounded deleted");
    await c.close();
  } finally {
    await srv.stop();
  }
  const store = await openStore({ url: `sqlite:${dataDir}` });
  try {
    assert.deepEqual((await store.range(JOURNAL_PREFIX)).kvs.map((kv) => kv.key), [], "no journal left after the delete");
  } finally {
    await store.close();
  }
});
