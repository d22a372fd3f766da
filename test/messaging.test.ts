/**
 * The messaging plane's semantics through a real server: inboxes, flow control, services,
 * deadlines, cancel, errors, lost hosts, restart policy and graceful deletion. Workers are raw
 * protocol peers (fake hosts and attached processes), so every frame is observable.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { clone, create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ContainerSchema, ContainerSpecSchema, ReplicaSetSchema, ServiceSchema, type Container, type ContainerSpec } from "../src/gen/k4s/v1/resources_pb.js";
import { MessagingService } from "../src/gen/k4s/v1/messaging_service_pb.js";
import type { Delivery } from "../src/gen/k4s/v1/worker_service_pb.js";
import { openRawPeer, type RawPeer } from "./raw-peer.js";
import type { K4sServer } from "../src/server/server.js";
import { eventually, spawnK4s, startTestServer, type Proc } from "./helpers.js";

const HB = 1000;
const enc = new TextEncoder();
const dec = new TextDecoder();

let server: K4sServer;
const peers: RawPeer[] = [];
const heartbeats: NodeJS.Timeout[] = [];

before(async () => {
  server = await startTestServer({ heartbeatIntervalMs: HB });
});
const procs: Proc[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.kill("SIGKILL")));
  heartbeats.forEach(clearInterval);
  for (const p of peers) p.cancel();
  await server.stop();
});

/** Opens a peer that heartbeats, so only the tests that mean to lose it do. */
function peer(first: Parameters<typeof openRawPeer>[1], beat = true): RawPeer {
  const p = openRawPeer(server.address, first);
  peers.push(p);
  if (beat) heartbeats.push(setInterval(() => p.send({ case: "heartbeat", value: {} }), HB / 2));
  return p;
}

async function container(name: string, spec: MessageInitShape<typeof ContainerSpecSchema>, labels: Record<string, string> = {}) {
  return server.resources.create(create(ContainerSchema, { metadata: { name, labels }, spec: spec as ContainerSpec }));
}

async function service(name: string, spec: { selector?: string; matchLabels?: Record<string, string>; strategy?: string }) {
  return server.resources.create(create(ServiceSchema, { metadata: { name }, spec }));
}

async function status(name: string) {
  return (await server.resources.get("Container", name))?.status;
}

async function ready(name: string) {
  await eventually(async () => (await status(name))?.ready, 5000, `${name} ready`);
}

/** Creates an external container and attaches a process to it. */
async function external(name: string, spec: MessageInitShape<typeof ContainerSpecSchema> = {}, labels: Record<string, string> = {}) {
  await container(name, spec, labels);
  const p = peer({ case: "attach", value: { container: name, host: `${name}-proc` } });
  await p.next("welcome");
  await ready(name);
  return p;
}

async function host(name: string, modules: string[], options: { beat?: boolean } = {}) {
  const p = peer({ case: "hello", value: { name, role: "host", modules } }, options.beat ?? true);
  await p.next("welcome");
  return p;
}

/** Takes the next Assign of a container and reports it Running. */
async function run(h: RawPeer, name: string) {
  const a = await h.next("assign", (x) => x.container === name);
  h.send({ case: "state", value: { container: name, uid: a.uid, phase: "Running" } });
  return a;
}

async function client() {
  const c = peer({ case: "hello", value: { role: "client" } });
  await c.next("welcome");
  return c;
}

const messaging = () => createClient(MessagingService, createGrpcTransport({ baseUrl: `http://${server.address}` }));

const ack = (p: RawPeer, d: Delivery, data = "") => p.send({ case: "result", value: { id: d.id, data: enc.encode(data), contentType: "text/plain" } });

async function rejects(promise: Promise<unknown>, code: Code, message: RegExp) {
  await assert.rejects(promise, (err: unknown) => {
    const e = ConnectError.from(err);
    assert.equal(e.code, code, `code of: ${e.message}`);
    assert.match(e.rawMessage, message);
    return true;
  });
}

describe("inboxes and flow control", () => {
  test("a send waits in the inbox until a worker attaches", async () => {
    await container("inbox-ext", {});
    const res = await messaging().send({ target: "inbox-ext", data: enc.encode('"early"') });
    assert.equal(res.container, "inbox-ext");
    const p = peer({ case: "attach", value: { container: "inbox-ext" } });
    const d = await p.next("delivery");
    assert.equal(dec.decode(d.data), '"early"');
    assert.equal(d.expectsReply, false);
    assert.equal(d.attempt, 1);
    assert.equal(d.contentType, "application/json");
  });

  test("concurrency 1 delivers one at a time in FIFO order", async () => {
    const p = await external("fifo-ext");
    const c = messaging();
    for (let i = 0; i < 5; i++) await c.send({ target: "container/fifo-ext", data: enc.encode(String(i)), contentType: "text/plain" });
    for (let i = 0; i < 5; i++) {
      const d = await p.next("delivery");
      assert.equal(dec.decode(d.data), String(i));
      assert.equal(p.pending("delivery").length, 0, "nothing else in flight");
      ack(p, d);
    }
  });

  test("concurrency N keeps N deliveries in flight", async () => {
    const p = await external("conc-ext", { concurrency: 3 });
    const c = messaging();
    for (let i = 0; i < 5; i++) await c.send({ target: "conc-ext", data: enc.encode(String(i)) });
    await eventually(() => p.pending("delivery").length === 3, 5000, "3 in flight");
    const first = await p.next("delivery");
    ack(p, first);
    await eventually(() => p.pending("delivery").length === 3, 5000, "a 4th replaces the settled one");
    assert.deepEqual(p.pending("delivery").map((d) => dec.decode(d.data)), ["1", "2", "3"]);
  });

  test("a full inbox answers RESOURCE_EXHAUSTED naming the container and its limit", async () => {
    await container("full-ext", { queueLimit: 3 });
    const c = messaging();
    for (let i = 0; i < 3; i++) await c.send({ target: "full-ext", data: enc.encode("x") });
    await rejects(c.send({ target: "full-ext", data: enc.encode("x") }), Code.ResourceExhausted, /inbox of container "full-ext" is full \(queueLimit 3\)/);
  });

  test("unknown targets answer NOT_FOUND; malformed ones INVALID_ARGUMENT", async () => {
    const c = messaging();
    await rejects(c.send({ target: "service/ghost" }), Code.NotFound, /no service named "ghost"/);
    await rejects(c.request({ target: "container/ghost" }), Code.NotFound, /no container named "ghost"/);
    await rejects(c.send({ target: "pod/x" }), Code.InvalidArgument, /unknown kind "pod"/);
  });

  test("the JSON Value form is sent as application/json bytes and replies carry json", async () => {
    const p = await external("json-ext");
    const c = messaging();
    const reply = c.request({ target: "json-ext", json: { kind: { case: "structValue", value: { fields: { a: { kind: { case: "numberValue", value: 1 } } } } } } });
    const d = await p.next("delivery");
    assert.equal(d.contentType, "application/json");
    assert.deepEqual(JSON.parse(dec.decode(d.data)), { a: 1 });
    p.send({ case: "result", value: { id: d.id, data: enc.encode('{"sum":3}'), contentType: "application/json" } });
    const r = await reply;
    assert.equal(r.json?.kind.case, "structValue");
    assert.equal(dec.decode(r.data), '{"sum":3}');
  });
});

describe("services", () => {
  test("round-robin spreads messages evenly over the ready endpoints", async () => {
    const ps = await Promise.all(["rr-a", "rr-b", "rr-c"].map((n) => external(n, { concurrency: 100 }, { app: "rr" })));
    await service("rr-svc", { matchLabels: { app: "rr" } });
    const c = messaging();
    const seen = new Map<string, number>();
    for (let i = 0; i < 30; i++) {
      const r = await c.send({ target: "service/rr-svc", data: enc.encode(String(i)) });
      seen.set(r.container, (seen.get(r.container) ?? 0) + 1);
    }
    assert.deepEqual([...seen.entries()].sort(), [["rr-a", 10], ["rr-b", 10], ["rr-c", 10]]);
    await eventually(() => ps.every((p) => p.pending("delivery").length === 10), 5000, "10 deliveries each");
  });

  test("least-in-flight avoids the busy endpoint", async () => {
    const [busy, idle] = await Promise.all([external("lif-a", { concurrency: 10 }), external("lif-b", { concurrency: 10 })]);
    await service("lif-svc", { selector: "lif-*", strategy: "least-in-flight" });
    const c = messaging();
    const first = await c.send({ target: "lif-svc", data: enc.encode("0") });
    const other = first.container === "lif-a" ? "lif-b" : "lif-a";
    // The first endpoint keeps its message unsettled; the next ones go to the other while it
    // has fewer in flight.
    const second = await c.send({ target: "lif-svc", data: enc.encode("1") });
    assert.equal(second.container, other);
    const idlePeer = other === "lif-b" ? idle : busy;
    const d = await idlePeer.next("delivery");
    ack(idlePeer, d);
    await eventually(() => idlePeer.pending("delivery").length === 0, 5000, "settled");
    await new Promise((r) => setImmediate(r));
    const third = await c.send({ target: "lif-svc", data: enc.encode("2") });
    assert.equal(third.container, other);
  });

  test("a request to a service with no ready endpoint waits until one is ready", async () => {
    await service("late-svc", { selector: "late-*" });
    const reply = messaging().request({ target: "late-svc", data: enc.encode('"q"'), timeoutMs: 5000 });
    await container("late-1", {});
    const p = peer({ case: "attach", value: { container: "late-1" } });
    const d = await p.next("delivery");
    assert.ok(d.timeoutMs > 0 && d.timeoutMs <= 5000);
    ack(p, d, "answer");
    const r = await reply;
    assert.equal(dec.decode(r.data), "answer");
    assert.equal(r.container, "late-1");
  });

  test("messages a service queued at a deleted container go to another endpoint", async () => {
    const a = await external("rt-a", {}, { app: "rt" });
    const b = await external("rt-b", {}, { app: "rt" });
    await service("rt-svc", { matchLabels: { app: "rt" } });
    const c = messaging();
    const where: string[] = [];
    for (let i = 0; i < 4; i++) where.push((await c.send({ target: "rt-svc", data: enc.encode(String(i)) })).container);
    assert.deepEqual(where, ["rt-a", "rt-b", "rt-a", "rt-b"]);
    const a0 = await a.next("delivery");
    assert.equal(dec.decode(a0.data), "0");
    await server.resources.delete("Container", "rt-a");
    // rt-a finishes what it holds; what waited in its inbox moves to rt-b.
    ack(a, a0);
    const ended = await a.ended;
    assert.equal(ended?.code, Code.NotFound);
    const got: string[] = [];
    for (let i = 0; i < 3; i++) {
      const d = await b.next("delivery");
      got.push(dec.decode(d.data));
      ack(b, d);
    }
    assert.deepEqual(got.sort(), ["1", "2", "3"]);
    await eventually(async () => !(await server.resources.get("Container", "rt-a")), 5000, "rt-a finalized");
  });

  test("no endpoint before the deadline answers UNAVAILABLE", async () => {
    await service("empty-svc", { selector: "nobody-*" });
    const started = Date.now();
    await rejects(messaging().request({ target: "service/empty-svc", timeoutMs: 300 }), Code.Unavailable, /no endpoint of service "empty-svc" became ready/);
    assert.ok(Date.now() - started >= 250);
  });
});

describe("deadlines, cancel and errors", () => {
  test("an expired request answers DEADLINE_EXCEEDED and the worker gets CancelDelivery", async () => {
    const p = await external("slow-ext");
    const c = messaging();
    const started = Date.now();
    const reply = c.request({ target: "slow-ext", data: enc.encode("1"), timeoutMs: 300 });
    const d = await p.next("delivery");
    await rejects(reply, Code.DeadlineExceeded, /deadline exceeded waiting for container "slow-ext"/);
    assert.ok(Date.now() - started >= 280);
    const cancel = await p.next("cancelDelivery", (x) => x.id === d.id);
    assert.ok(cancel.reason.length > 0);
    // The late result is dropped, and the slot it held is free again.
    ack(p, d, "too late");
    await c.send({ target: "slow-ext", data: enc.encode("next") });
    const next = await p.next("delivery");
    assert.equal(dec.decode(next.data), "next");
  });

  test("protocol: an attached process reports no state; a cancelled delivery needs no result; deleting it ends its stream NOT_FOUND after its in-flight results", async () => {
    // Ready from the Welcome of its Attach: external() waits for ready, and no state frame was sent.
    const p = await external("proto-ext", { terminationGraceSeconds: 10 });
    const c = messaging();
    const expired = c.request({ target: "proto-ext", data: enc.encode("1"), timeoutMs: 300 });
    const d1 = await p.next("delivery");
    await assert.rejects(expired);
    await p.next("cancelDelivery", (x) => x.id === d1.id);
    // No result for d1 was sent: its slot (concurrency 1) is free anyway.
    const second = c.request({ target: "proto-ext", data: enc.encode("2"), timeoutMs: 10_000 });
    const d2 = await p.next("delivery");
    assert.equal(dec.decode(d2.data), "2");
    // Deleted while d2 is in flight: no new delivery, d2's result still reaches its caller, then
    // the stream ends NOT_FOUND.
    await server.resources.delete("Container", "proto-ext");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await Promise.race([p.ended.then(() => "ended"), Promise.resolve("open")]), "open", "the stream waits for the in-flight result");
    ack(p, d2, "two");
    assert.equal(dec.decode((await second).data), "two");
    const end = await p.ended;
    assert.equal(end?.code, Code.NotFound);
    assert.match(end!.rawMessage, /container "proto-ext" was deleted/);
  });

  test("a request that expires in the inbox of a container that is not ready says why", async () => {
    await container("nohost", { module: "nohostmod", function: "f" });
    await eventually(async () => (await status("nohost"))?.message.includes("nohostmod"), 5000, "pending reason");
    await rejects(
      messaging().request({ target: "nohost", timeoutMs: 300 }),
      Code.DeadlineExceeded,
      /container "nohost" to answer; it is not ready: no worker host serves module "nohostmod"/,
    );
  });

  test("CancelCall answers CANCELLED and the worker gets CancelDelivery", async () => {
    const p = await external("cancel-ext");
    const c = await client();
    c.send({ case: "call", value: { id: 1n, target: "cancel-ext", data: enc.encode("x"), expectsReply: true, timeoutMs: 10_000 } });
    const d = await p.next("delivery");
    c.send({ case: "cancelCall", value: { id: 1n } });
    const r = await c.next("callResult", (x) => x.id === 1n);
    assert.equal(r.error?.code, Code.Canceled);
    await p.next("cancelDelivery", (x) => x.id === d.id);
  });

  test("a unary caller's cancel reaches the worker", async () => {
    const p = await external("ucancel-ext");
    const abort = new AbortController();
    const reply = messaging().request({ target: "ucancel-ext", timeoutMs: 10_000 }, { signal: abort.signal });
    const d = await p.next("delivery");
    abort.abort();
    await assert.rejects(reply);
    await p.next("cancelDelivery", (x) => x.id === d.id);
  });

  test("a nested request inherits what remains of its parent's deadline", async () => {
    const a = await external("nest-a");
    const b = await external("nest-b");
    const reply = messaging().request({ target: "nest-a", timeoutMs: 1500 });
    const parent = await a.next("delivery");
    a.send({ case: "call", value: { id: 1n, target: "nest-b", expectsReply: true, timeoutMs: 30_000, parentDelivery: parent.id } });
    const child = await b.next("delivery");
    assert.ok(child.timeoutMs > 0 && child.timeoutMs <= 1500, `child timeout ${child.timeoutMs}`);
    assert.equal(child.sender, "nest-a", "an attached process sends as its container");
    ack(b, child, "inner");
    const inner = await a.next("callResult", (x) => x.id === 1n);
    assert.equal(dec.decode(inner.data), "inner");
    ack(a, parent, "outer");
    assert.equal(dec.decode((await reply).data), "outer");
  });

  test("a worker's error code and message reach the caller; a failed send is acked, not redelivered", async () => {
    const p = await external("err-ext");
    const c = messaging();
    const reply = c.request({ target: "err-ext" });
    const d = await p.next("delivery");
    p.send({ case: "result", value: { id: d.id, error: { code: Code.FailedPrecondition, message: "bad input: x" } } });
    await rejects(reply, Code.FailedPrecondition, /^bad input: x$/);

    await c.send({ target: "err-ext", data: enc.encode("poison") });
    const s = await p.next("delivery");
    p.send({ case: "result", value: { id: s.id, error: { code: Code.Unknown, message: "boom" } } });
    await eventually(() => server.events.recent({ name: "err-ext" }).some((e) => e.reason === "MessageFailed" && e.message.includes("boom")), 5000, "MessageFailed event");
    await c.send({ target: "err-ext", data: enc.encode("after") });
    const after = await p.next("delivery");
    assert.equal(dec.decode(after.data), "after", "the failed message is not delivered again");
  });

  test("a send the worker reports as not processed (UNAVAILABLE) is delivered again", async () => {
    const p = await external("unproc-ext");
    const c = messaging();
    await c.send({ target: "unproc-ext", data: enc.encode("again") });
    const first = await p.next("delivery");
    p.send({ case: "result", value: { id: first.id, error: { code: Code.Unavailable, message: "container not running here" } } });
    const second = await p.next("delivery");
    assert.equal(dec.decode(second.data), "again");
    assert.equal(second.attempt, 2);
    ack(p, second);
  });
});

describe("hosts, restarts and deletion", () => {
  test("a lost host fails its requests with UNAVAILABLE and its sends go to the next host", async () => {
    await container("lost-echo", { module: "lostmod", function: "echo", concurrency: 2 });
    const h1 = await host("lost-h1", ["lostmod"]);
    await run(h1, "lost-echo");
    await ready("lost-echo");
    const c = messaging();
    await c.send({ target: "lost-echo", data: enc.encode("keep me") });
    const reply = c.request({ target: "lost-echo", data: enc.encode("q"), timeoutMs: 10_000 });
    await eventually(() => h1.pending("delivery").length === 2, 5000, "both in flight");
    h1.cancel();
    await rejects(reply, Code.Unavailable, /container "lost-echo" lost its host "lost-h1" while handling the request/);
    await eventually(async () => (await status("lost-echo"))?.phase === "Pending", 5000, "pending again");
    assert.ok(server.events.recent({ name: "lost-echo" }).some((e) => e.reason === "HostLost" && e.message.includes('host "lost-h1" was lost')));
    const h2 = await host("lost-h2", ["lostmod"]);
    const a = await run(h2, "lost-echo");
    assert.equal(a.restarts, 1);
    const again = await h2.next("delivery");
    assert.equal(dec.decode(again.data), "keep me");
    assert.equal(again.attempt, 2);
  });

  test("restart policy Always restarts with a growing back-off; Never and OnFailure end", async () => {
    await container("crash-a", { module: "crashmod", function: "f" });
    const h = await host("crash-h", ["crashmod"]);
    const a0 = await run(h, "crash-a");
    h.send({ case: "state", value: { container: "crash-a", uid: a0.uid, phase: "Failed", message: "oops" } });
    const t0 = Date.now();
    const a1 = await run(h, "crash-a");
    const d1 = Date.now() - t0;
    assert.equal(a1.restarts, 1);
    assert.ok(d1 >= 180, `first back-off ${d1} ms`);
    h.send({ case: "state", value: { container: "crash-a", uid: a1.uid, phase: "Failed", message: "oops" } });
    const t1 = Date.now();
    const a2 = await run(h, "crash-a");
    const d2 = Date.now() - t1;
    assert.equal(a2.restarts, 2);
    assert.ok(d2 >= 380, `second back-off ${d2} ms`);
    const backoffs = server.events.recent({ name: "crash-a" }).filter((e) => e.reason === "BackOff").map((e) => e.message);
    assert.deepEqual(backoffs, ["back-off 200 ms before restart 1", "back-off 400 ms before restart 2"]);
    assert.ok(server.events.recent({ name: "crash-a" }).some((e) => e.reason === "Failed" && e.message.includes("oops")));

    await container("once-never", { module: "crashmod", function: "f", restartPolicy: "Never" });
    const n = await run(h, "once-never");
    h.send({ case: "state", value: { container: "once-never", uid: n.uid, phase: "Failed", message: "fatal", exitCode: 3 } });
    await eventually(async () => (await status("once-never"))?.phase === "Failed", 5000, "Failed for good");
    const st = await status("once-never");
    assert.equal(st?.message, "fatal");
    assert.equal(st?.exitCode, 3);
    await rejects(messaging().request({ target: "once-never", timeoutMs: 2000 }), Code.Unavailable, /has ended \(Failed\)/);

    await container("once-ok", { module: "crashmod", function: "f", restartPolicy: "OnFailure" });
    const o = await run(h, "once-ok");
    h.send({ case: "state", value: { container: "once-ok", uid: o.uid, phase: "Succeeded" } });
    await eventually(async () => (await status("once-ok"))?.phase === "Succeeded", 5000, "Succeeded");
    assert.equal(h.pending("assign").length, 0, "not restarted");
  });

  test("deleting a running container stops it with its grace, then finalizes it", async () => {
    await container("del-echo", { module: "delmod", function: "echo", terminationGraceSeconds: 2 });
    const h = await host("del-h", ["delmod"]);
    const a = await run(h, "del-echo");
    await ready("del-echo");
    await server.resources.delete("Container", "del-echo");
    const stop = await h.next("stop", (s) => s.container === "del-echo");
    assert.equal(stop.graceMs, 2000);
    assert.equal(stop.uid, a.uid);
    assert.equal((await server.resources.get("Container", "del-echo"))?.status?.phase, "Terminating");
    h.send({ case: "state", value: { container: "del-echo", uid: a.uid, phase: "Stopped" } });
    await eventually(async () => !(await server.resources.get("Container", "del-echo")), 5000, "del-echo removed");
    assert.ok(server.events.recent({ name: "del-echo" }).some((e) => e.reason === "Killing"));
  });

  test("a host that never reports the stop is cut off after the grace, and the container finalized", async () => {
    await container("del-stuck", { module: "stuckmod", function: "echo", terminationGraceSeconds: 1 });
    const h = await host("stuck-h", ["stuckmod"]);
    await run(h, "del-stuck");
    await ready("del-stuck");
    const started = Date.now();
    await server.resources.delete("Container", "del-stuck");
    await h.next("stop", (s) => s.container === "del-stuck");
    await eventually(async () => !(await server.resources.get("Container", "del-stuck")), 5000, "del-stuck removed");
    assert.ok(Date.now() - started >= 1900, `after grace + 1 s, not ${Date.now() - started} ms; events: ${JSON.stringify(server.events.recent({ name: "del-stuck" }).map((e) => e.message))}`);
  });

  test("a spec change stops the container and starts it again with the new spec", async () => {
    const obj = await container("respec", { module: "respecmod", function: "v1" });
    const h = await host("respec-h", ["respecmod"]);
    const a = await run(h, "respec");
    await ready("respec");
    const next = clone(ContainerSchema, obj as Container);
    next.spec!.function = "v2";
    next.metadata!.resourceVersion = "";
    await server.resources.update(next);
    const stop = await h.next("stop", (s) => s.container === "respec");
    assert.equal(stop.uid, a.uid);
    h.send({ case: "state", value: { container: "respec", uid: a.uid, phase: "Stopped" } });
    const b = await run(h, "respec");
    assert.equal(b.spec?.function, "v2");
    assert.equal(b.restarts, 0, "a spec change is not a restart");
    await eventually(async () => (await status("respec"))?.observedGeneration === 2n, 5000, "observedGeneration 2");
  });

  test("least-loaded hosts get new containers, and capacity is respected", async () => {
    const h1 = peer({ case: "hello", value: { name: "cap-1", role: "host", modules: ["capmod"], capacity: 1 } });
    const h2 = peer({ case: "hello", value: { name: "cap-2", role: "host", modules: ["capmod"], capacity: 1 } });
    await h1.next("welcome");
    await h2.next("welcome");
    for (const n of ["cap-x", "cap-y", "cap-z"]) await container(n, { module: "capmod", function: "f" });
    await eventually(() => h1.pending("assign").length + h2.pending("assign").length === 2, 5000, "two assigned");
    assert.equal(h1.pending("assign").length, 1);
    assert.equal(h2.pending("assign").length, 1);
    const assigned = [...h1.pending("assign"), ...h2.pending("assign")].map((a) => a.container);
    const left = ["cap-x", "cap-y", "cap-z"].find((n) => !assigned.includes(n))!;
    await eventually(async () => (await status(left))?.message.includes("at capacity"), 5000, "capacity reason");
  });
});

describe("with real worker host processes", () => {
  const workerHost = (name: string) => {
    const p = spawnK4s(["worker", "--server", server.address, "--name", name]);
    procs.push(p);
    return p;
  };
  const str = (value: string) => ({ kind: { case: "stringValue" as const, value } });

  test("a built-in echo runs in a real host, and moves to the next host when its host is killed", async () => {
    const h1 = workerHost("real-1");
    await container("real-echo", { module: "workers", function: "echo_worker", parameters: { prefix: "HI" } });
    await eventually(async () => (await status("real-echo"))?.ready && (await status("real-echo"))?.host === "real-1", 15_000, "real-echo on real-1");
    const c = messaging();
    const r1 = await c.request({ target: "real-echo", json: str("one"), timeoutMs: 5000 });
    assert.equal(r1.json?.kind.case, "stringValue");
    assert.match(String(r1.json?.kind.value), /^HI: .*one/);
    await h1.kill("SIGKILL");
    await eventually(async () => (await status("real-echo"))?.ready === false, 10_000, "real-echo not ready after its host died");
    workerHost("real-2");
    await eventually(async () => (await status("real-echo"))?.ready && (await status("real-echo"))?.host === "real-2", 15_000, "real-echo on real-2");
    assert.equal((await status("real-echo"))?.restarts, 1);
    const r2 = await c.request({ target: "real-echo", json: str("two"), timeoutMs: 5000 });
    assert.match(String(r2.json?.kind.value), /^HI: .*two/);
  });

  test("a ReplicaSet of calculators behind a round-robin service shares the requests evenly", async () => {
    workerHost("real-calc");
    await server.resources.create(
      create(ReplicaSetSchema, {
        metadata: { name: "calc" },
        spec: { replicas: 3, template: { spec: { module: "workers", function: "calculator_worker", concurrency: 4 } } },
      }),
    );
    await service("calc-svc", { selector: "calc-*" });
    for (const n of ["calc-0", "calc-1", "calc-2"]) await eventually(async () => (await status(n))?.ready, 15_000, `${n} ready`);
    const c = messaging();
    const counts = new Map<string, number>();
    const sum = { kind: { case: "structValue" as const, value: { fields: {
      operation: str("sum"),
      operands: { kind: { case: "listValue" as const, value: { values: [1, 2, 3].map((v) => ({ kind: { case: "numberValue" as const, value: v } })) } } },
    } } } };
    for (let i = 0; i < 9; i++) {
      const r = await c.request({ target: "service/calc-svc", json: sum, timeoutMs: 5000 });
      assert.equal(dec.decode(r.data).trim(), "6");
      counts.set(r.container, (counts.get(r.container) ?? 0) + 1);
    }
    assert.deepEqual([...counts.entries()].sort(), [["calc-0", 3], ["calc-1", 3], ["calc-2", 3]]);
  });
});
