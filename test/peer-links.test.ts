/**
 * Peer links: calls forwarded from one server to any other over a long-lived session, answered
 * with what the other server's router answers; and the cluster router, which forwards the calls
 * for containers another server delivers and routes the rest itself. Here the other server is a real one on port 0 with
 * a container served by an attached worker, and this process plays the forwarding server.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code } from "@connectrpc/connect";
import { Envelope, type CallAnswer } from "../src/server/messaging/envelope.js";
import type { Letter } from "../src/server/messaging/mailbox.js";
import { createClient } from "../src/client/index.js";
import { createClusterRouter } from "../src/server/cluster/cluster-router.js";
import { createPeerLinks, HeldSignal, PEER_SESSION_PREFIX } from "../src/server/cluster/peer-links.js";
import { WorkerLink } from "../src/server/messaging/worker-link.js";
import { createEventRecorder } from "../src/server/event-recorder.js";
import { createRouter } from "../src/server/messaging/router.js";
import { createServer } from "../src/server/server.js";
import { attach } from "../src/workers/runtime/attach.js";
import { defineWorker } from "../src/workers/runtime/define-worker.js";
import { eventually } from "./helpers.js";

/** A call as a client of this server made it, with the answer it gets. */
function call(value: unknown, options: { expectsReply?: boolean; timeoutMs?: number } = {}) {
  let answer: CallAnswer | undefined;
  const expectsReply = options.expectsReply ?? true;
  const env: Letter = new Envelope({
    data: Buffer.from(JSON.stringify(value)),
    contentType: "application/json",
    expectsReply,
    deadline: options.timeoutMs ? Date.now() + options.timeoutMs : 0,
    onAnswer: (a) => (answer = a),
  });
  return { env, answer: async () => (await eventually(() => answer, 30_000, "the call's answer"))! };
}

/** A real server on port 0 whose container pl-echo is served by a worker attached from this process. */
async function startEchoServer() {
  const server = createServer({ port: 0, onError: () => {} });
  await server.start();
  const cancelled: string[] = [];
  const client = createClient({ address: server.address, reconnect: false });
  await client.apply("kind: Container\nmetadata: {name: pl-echo}\nspec: {}\n");
  const worker = attach({
    address: server.address,
    container: "pl-echo",
    reconnect: false,
    worker: defineWorker(async (ctx) => {
      await ctx.handle(async (msg) => {
        const v = msg.value as { tag: string; sleep?: number };
        if (v.sleep) {
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, v.sleep);
            msg.signal.addEventListener("abort", () => (clearTimeout(t), cancelled.push(v.tag), resolve()));
          });
        }
        return `echo:${v.tag}`;
      });
    }),
  });
  await worker.ready;
  await eventually(async () => (await client.get("Container", "pl-echo")).status?.ready === true, 30_000, "pl-echo ready");
  await client.close();
  return {
    server,
    cancelled,
    async stop() {
      await worker.stop(0).catch(() => {});
      await server.stop();
    },
  };
}

test("peer links: the signal of a call held tells each listener of the abort once; a listener removed, or added after the abort, is not called", () => {
  const signal = new HeldSignal();
  const heard: string[] = [];
  const a = () => heard.push("a");
  const b = () => heard.push("b");
  const c = () => heard.push("c");
  signal.addEventListener("abort", a);
  signal.addEventListener("abort", a, { once: true });
  signal.addEventListener("abort", b);
  signal.addEventListener("abort", c);
  signal.removeEventListener("abort", c);
  assert.equal(signal.aborted, false);
  signal.abort();
  signal.abort();
  assert.equal(signal.aborted, true);
  signal.addEventListener("abort", c);
  signal.abort();
  assert.deepEqual(heard, ["a", "b"]);
});

test("peer links: a call forwarded to another server is answered by its router (reply, error code, deadline, cancel); a server that cannot be reached is UNAVAILABLE naming it; stop fails what is in flight", async () => {
  const { server, cancelled, stop } = await startEchoServer();
  const links = createPeerLinks({ self: () => "127.0.0.1:1" });
  try {
    const ok = call({ tag: "a" }, { timeoutMs: 30_000 });
    links.forward(ok.env, { kind: "container", name: "pl-echo" }, server.address);
    const a = await ok.answer();
    assert.equal(a.code, 0);
    assert.equal(a.container, "pl-echo");
    assert.equal(JSON.parse(Buffer.from(a.data).toString()), "echo:a");

    const missing = call({ tag: "b" }, { timeoutMs: 30_000 });
    links.forward(missing.env, { kind: "container", name: "nope" }, server.address);
    const b = await missing.answer();
    assert.equal(b.code, Code.NotFound, "the other server's error code comes back");
    assert.match(b.message, /no container named "nope"/);

    const late = call({ tag: "c", sleep: 60_000 }, { timeoutMs: 300 });
    links.forward(late.env, { kind: "container", name: "pl-echo" }, server.address);
    assert.equal((await late.answer()).code, Code.DeadlineExceeded, "the time left goes along as the call's deadline");

    const given = call({ tag: "d", sleep: 60_000 }, { timeoutMs: 60_000 });
    links.forward(given.env, { kind: "container", name: "pl-echo" }, server.address);
    await new Promise((r) => setTimeout(r, 200));
    links.abandon(given.env, Code.Canceled, "the caller cancelled");
    assert.equal((await given.answer()).code, Code.Canceled);
    await eventually(() => cancelled.includes("d"), 30_000, "the worker told of the cancel");

    const nowhere = call({ tag: "e" }, { timeoutMs: 30_000 });
    links.forward(nowhere.env, { kind: "container", name: "pl-echo" }, "127.0.0.1:1", "the server at port 1");
    const e = await nowhere.answer();
    assert.equal(e.code, Code.Unavailable);
    assert.match(e.message, /127\.0\.0\.1:1\b/);

    const held = call({ tag: "f", sleep: 60_000 }, { timeoutMs: 60_000 });
    links.forward(held.env, { kind: "container", name: "pl-echo" }, server.address);
    await new Promise((r) => setTimeout(r, 200));
    await links.stop("this server is stopping");
    const f = await held.answer();
    assert.equal(f.code, Code.Unavailable);
    assert.equal(f.message, "this server is stopping");
  } finally {
    await links.stop("done");
    await stop();
  }
});

test("cluster router: a call for a container another server delivers goes over the peer link to it (reply, cancel); every other call goes to this server's own router", async () => {
  const { server, cancelled, stop } = await startEchoServer();
  const links = createPeerLinks({ self: () => "127.0.0.1:1" });
  const local = createRouter({ events: createEventRecorder() });
  const where = new Map([["pl-echo", server.address], ["mine", "127.0.0.1:1"]]);
  const router = createClusterRouter({ local, links, self: () => "127.0.0.1:1", deliveredBy: (c) => where.get(c) ?? "" });
  try {
    const ok = call({ tag: "a" }, { timeoutMs: 30_000 });
    router.route(ok.env, { kind: "any", name: "pl-echo" });
    const a = await ok.answer();
    assert.equal(a.code, 0, a.message);
    assert.equal(JSON.parse(Buffer.from(a.data).toString()), "echo:a");

    const unknown = call({ tag: "b" }, { timeoutMs: 30_000 });
    router.route(unknown.env, { kind: "container", name: "nope" });
    const b = await unknown.answer();
    assert.equal(b.code, Code.NotFound);
    assert.match(b.message, /no container named "nope"/, "this server's own router answered");
    const own = call({ tag: "c" }, { timeoutMs: 30_000 });
    router.route(own.env, { kind: "container", name: "mine" });
    assert.equal((await own.answer()).code, Code.NotFound, "a container this server delivers is its own router's");
    assert.equal(router.knows({ kind: "container", name: "pl-echo" }), true);
    assert.equal(router.knows({ kind: "service", name: "pl-echo" }), false);

    const given = call({ tag: "d", sleep: 60_000 }, { timeoutMs: 60_000 });
    router.route(given.env, { kind: "container", name: "pl-echo" });
    await new Promise((r) => setTimeout(r, 200));
    router.abandon(given.env, Code.Canceled, "the caller cancelled");
    assert.equal((await given.answer()).code, Code.Canceled);
    await eventually(() => cancelled.includes("d"), 30_000, "the other server's worker told of the cancel");
  } finally {
    local.stop("done");
    await links.stop("done");
    await stop();
  }
});

test("cluster router: a service's calls go to its endpoints cluster-wide in turn; one an endpoint's server refused before accepting it (gone, or a link that never opened) goes to the next endpoint; a request whose server failed after it went out is not sent again", async () => {
  const { server, stop } = await startEchoServer();
  const links = createPeerLinks({ self: () => "127.0.0.1:1" });
  const local = createRouter({ events: createEventRecorder() });
  const where = new Map([["pl-echo", server.address], ["gone", server.address], ["far", "127.0.0.1:1"]]);
  const endpoints = new Map([["svc", ["gone", "pl-echo"]], ["sends", ["far", "pl-echo"]]]);
  const router = createClusterRouter({
    local,
    links,
    self: () => "127.0.0.2:1",
    deliveredBy: (c) => where.get(c) ?? "",
    endpoints: (s) => endpoints.get(s),
  });
  try {
    for (const tag of ["a", "b", "c"]) {
      const r = call({ tag }, { timeoutMs: 30_000 });
      router.route(r.env, { kind: "service", name: "svc" });
      const a = await r.answer();
      assert.equal(a.code, 0, `${tag}: ${a.message}`);
      assert.equal(a.container, "pl-echo", "the endpoint the other server does not have was passed over");
    }
    const viaAny = call({ tag: "d" }, { timeoutMs: 30_000 });
    router.route(viaAny.env, { kind: "any", name: "svc" });
    assert.equal((await viaAny.answer()).container, "pl-echo", "a name that is a service's reaches its endpoints");
    for (const tag of ["e", "f"]) {
      const s = call({ tag }, { expectsReply: false, timeoutMs: 30_000 });
      router.route(s.env, { kind: "service", name: "sends" });
      assert.equal((await s.answer()).code, 0, "a send the unreachable server never took went to the next endpoint");
    }
    // A request whose link never opened was sent nowhere: it goes to the next endpoint too.
    const unsent = call({ tag: "h" }, { timeoutMs: 30_000 });
    router.route(unsent.env, { kind: "service", name: "sends" });
    const h = await unsent.answer();
    assert.equal(h.code, 0, `a request the unreachable server never had went to the next endpoint: ${h.message}`);
    assert.equal(h.container, "pl-echo");
    const r = call({ tag: "g" }, { timeoutMs: 30_000 });
    router.route(r.env, { kind: "container", name: "far" });
    assert.equal((await r.answer()).code, Code.Unavailable, "a call for one container is not sent elsewhere");
    assert.equal(router.knows({ kind: "service", name: "svc" }), true);
    assert.equal(router.knows({ kind: "service", name: "nosvc" }), false);
  } finally {
    local.stop("done");
    await links.stop("done");
    await stop();
  }
});

test("cluster router: a call that came over another server's peer session (its credential verified: WorkerLink.peer) is answered by this server, never forwarded again (refused UNAVAILABLE before acceptance when another server delivers the container); a client that only names itself like a peer is not one", async () => {
  const { server, stop } = await startEchoServer();
  const links = createPeerLinks({ self: () => "127.0.0.1:1" });
  const local = createRouter({ events: createEventRecorder() });
  // This server believes another one delivers pl-echo (its view of the other server's may be a moment old).
  const router = createClusterRouter({ local, links, self: () => "127.0.0.1:1", deliveredBy: (c) => (c === "pl-echo" ? server.address : "") });
  const peer = new WorkerLink({ id: "id-peer", name: `${PEER_SESSION_PREFIX}127.0.0.1:2`, role: "client", modules: new Set(), peer: "127.0.0.1:2" });
  // A client may choose any name, that of a peer session included: it is not a peer for it.
  const impostor = new WorkerLink({ id: "id-impostor", name: `${PEER_SESSION_PREFIX}127.0.0.1:2`, role: "client", modules: new Set() });
  try {
    /** Routes a call made on a session of this server (as its frames would) and reads the error it is answered with. */
    const routeOn = async (link: WorkerLink, callId: bigint, tag: string) => {
      const env: Letter = new Envelope({ callId, origin: link, data: Buffer.from(JSON.stringify({ tag })), contentType: "application/json", expectsReply: true, deadline: Date.now() + 30_000 });
      link.calls.set(callId, env);
      router.route(env, { kind: "container", name: "pl-echo" });
      const answered = await eventually(async () => (await link.next())?.frames.find((f) => f.frame.case === "callResult"), 30_000, `the answer on ${link.id}`);
      return answered!.frame.case === "callResult" ? answered!.frame.value : undefined;
    };
    const refusal = await routeOn(peer, 7n, "p");
    const error = refusal?.error;
    // Marked as the server's refusal (no worker had it): what lets the sending server route it again.
    assert.equal(refusal?.refused, true, "the refusal says so");
    // Not forwarded: refused here before it was accepted, for the sending server to route it again.
    assert.equal(error?.code, Code.Unavailable, `this server answered (it holds no pl-echo): ${error?.message}`);
    assert.match(error?.message ?? "", /container "pl-echo" is not held by server 127\.0\.0\.1:1 \(server 127\.0\.0\.1:\d+ delivers it\)/);
    // The same call from a client of this server goes over the peer link.
    const ok = call({ tag: "q" }, { timeoutMs: 30_000 });
    router.route(ok.env, { kind: "container", name: "pl-echo" });
    assert.equal((await ok.answer()).code, 0);
    // So does one from a client named like a peer session: forwarded, and answered by the server delivering pl-echo.
    assert.equal((await routeOn(impostor, 8n, "n"))?.error, undefined, "the named client's call was forwarded");
  } finally {
    local.stop("done");
    await links.stop("done");
    await stop();
  }
});
