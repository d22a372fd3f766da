/**
 * Pins the WorkerService.Connect protocol from the server's side: a real server on port 0 and
 * raw gRPC peers that play worker hosts, attached processes and clients frame by frame.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ContainerSchema, type ContainerSpec } from "../src/gen/k4s/v1/resources_pb.js";
import { MessagingService } from "../src/gen/k4s/v1/messaging_service_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ContainerSpecSchema } from "../src/gen/k4s/v1/resources_pb.js";
import { openRawPeer, type RawPeer } from "./raw-peer.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually, startTestServer } from "./helpers.js";
import type { K4sServer } from "../src/server/server.js";

const HB = 200;
const enc = new TextEncoder();
const dec = new TextDecoder();

let server: K4sServer;
const peers: RawPeer[] = [];

before(async () => {
  server = await startTestServer({ heartbeatIntervalMs: HB });
});
after(async () => {
  for (const p of peers) p.cancel();
  await server.stop();
});

function peer(first: Parameters<typeof openRawPeer>[1]): RawPeer {
  const p = openRawPeer(server.address, first);
  peers.push(p);
  return p;
}

async function hostPeer(name: string, extra: { modules?: string[]; canSpawn?: boolean; capacity?: number } = {}) {
  const p = peer({ case: "hello", value: { name, role: "host", modules: extra.modules ?? ["workers"], canSpawn: extra.canSpawn ?? false, capacity: extra.capacity ?? 0 } });
  const welcome = await p.next("welcome");
  return { p, welcome };
}

async function container(name: string, spec: MessageInitShape<typeof ContainerSpecSchema>) {
  return server.resources.create(create(ContainerSchema, { metadata: { name }, spec: spec as ContainerSpec }));
}

async function status(name: string) {
  return (await server.resources.get("Container", name))?.status;
}

function messaging() {
  return createClient(MessagingService, createGrpcTransport({ baseUrl: `http://${server.address}` }));
}

describe("handshake", () => {
  test("hello is answered by welcome with a session id, the name and the heartbeat interval", async () => {
    const { welcome } = await hostPeer("hs-host");
    assert.ok(welcome.sessionId.length > 0);
    assert.equal(welcome.name, "hs-host");
    assert.equal(welcome.heartbeatIntervalMs, HB);
    const second = await hostPeer("hs-host");
    assert.equal(second.welcome.name, "hs-host-2", "a taken name gets a suffix");
    assert.notEqual(second.welcome.sessionId, welcome.sessionId);
  });

  test("a bad first frame ends the stream with INVALID_ARGUMENT", async () => {
    const p = peer({ case: "heartbeat", value: {} });
    const err = await p.ended;
    assert.equal(err?.code, Code.InvalidArgument);
    assert.match(err!.rawMessage, /first frame must be hello or attach, got heartbeat/);
    const q = peer({ case: "hello", value: { name: "x", role: "boss" } });
    const err2 = await q.ended;
    assert.equal(err2?.code, Code.InvalidArgument);
    assert.match(err2!.rawMessage, /hello.role must be "host" or "client", got "boss"/);
  });

  test("attach errors: unknown container, module container, wrong token, already attached", async () => {
    const unknown = await peer({ case: "attach", value: { container: "nope-nope" } }).ended;
    assert.equal(unknown?.code, Code.NotFound);
    assert.match(unknown!.rawMessage, /no container named "nope-nope"/);

    await container("att-module", { module: "nomodule", function: "f" });
    const mod = await peer({ case: "attach", value: { container: "att-module" } }).ended;
    assert.equal(mod?.code, Code.FailedPrecondition);
    assert.match(mod!.rawMessage, /runs function "f" of module "nomodule"/);

    await container("att-cmd", { command: ["true"] });
    const cmd = await peer({ case: "attach", value: { container: "att-cmd", token: "guess" } }).ended;
    assert.equal(cmd?.code, Code.PermissionDenied);
    assert.match(cmd!.rawMessage, /wrong token for container "att-cmd"/);

    await container("att-ext", {});
    const first = peer({ case: "attach", value: { container: "att-ext", host: "proc-1" } });
    await first.next("welcome");
    const second = await peer({ case: "attach", value: { container: "att-ext", host: "proc-2" } }).ended;
    assert.equal(second?.code, Code.FailedPrecondition);
    assert.match(second!.rawMessage, /already attached by "proc-1"/);
    await eventually(async () => (await status("att-ext"))?.ready === true, 5000, "att-ext ready");
    const st = await status("att-ext");
    assert.equal(st?.phase, "Running");
    assert.equal(st?.host, "proc-1");
  });

  test("an attached process acts only as its own container: a call claiming another sender is sent as its own", async () => {
    await container("own-a", {});
    await container("own-sink", {});
    const a = peer({ case: "attach", value: { container: "own-a" } });
    await a.next("welcome");
    const sink = peer({ case: "attach", value: { container: "own-sink" } });
    await sink.next("welcome");
    a.send({ case: "call", value: { id: 1n, target: "own-sink", data: enc.encode("x"), contentType: "text/plain", sender: "someone-else" } });
    const d = await sink.next("delivery");
    assert.equal(d.sender, "own-a");
    assert.equal((await a.next("callResult", (r) => r.id === 1n)).error, undefined);
  });
});

describe("hosts and containers", () => {
  test("a module container waits Pending with a plain reason, then is assigned to a host that serves its module", async () => {
    await container("pr-echo", { module: "prmod", function: "echo" });
    await eventually(async () => (await status("pr-echo"))?.message.includes('no worker host serves module "prmod"'), 5000, "pending reason");
    assert.equal((await status("pr-echo"))?.phase, "Pending");
    const { p } = await hostPeer("pr-host", { modules: ["prmod"] });
    const assign = await p.next("assign", (a) => a.container === "pr-echo");
    assert.equal(assign.spec?.function, "echo");
    assert.equal(assign.restarts, 0);
    assert.equal(assign.token, "", "module containers need no token");
    p.send({ case: "state", value: { container: "pr-echo", uid: assign.uid, phase: "Running" } });
    await eventually(async () => (await status("pr-echo"))?.ready, 5000, "pr-echo ready");
    const st = await status("pr-echo");
    assert.equal(st?.phase, "Running");
    assert.equal(st?.host, "pr-host");
    assert.ok(st?.startedAt);
    const reasons = server.events.recent({ name: "pr-echo" }).map((e) => e.reason);
    assert.ok(reasons.includes("Scheduled") && reasons.includes("Started"), reasons.join());
  });

  test("requests reach the host as deliveries and its results reach unary and stream callers", async () => {
    await container("rr-echo", { module: "rrmod", function: "echo" });
    const { p } = await hostPeer("rr-host", { modules: ["rrmod"] });
    const assign = await p.next("assign", (a) => a.container === "rr-echo");
    p.send({ case: "state", value: { container: "rr-echo", uid: assign.uid, phase: "Running" } });
    const client = messaging();
    const reply = client.request({ target: "container/rr-echo", data: enc.encode('"hi"'), contentType: "application/json", timeoutMs: 4000 });
    const d = await p.next("delivery");
    assert.equal(d.container, "rr-echo");
    assert.equal(d.expectsReply, true);
    assert.equal(dec.decode(d.data), '"hi"');
    assert.ok(d.timeoutMs > 0 && d.timeoutMs <= 4000, `timeoutMs ${d.timeoutMs}`);
    assert.equal(d.attempt, 1);
    p.send({ case: "result", value: { id: d.id, data: enc.encode('"ECHO: hi"'), contentType: "application/json" } });
    const res = await reply;
    assert.equal(dec.decode(res.data), '"ECHO: hi"');
    assert.equal(res.container, "rr-echo");
    assert.equal(res.json?.kind.case, "stringValue");

    // The same through a client session's Call frames, pipelined.
    const c = peer({ case: "hello", value: { name: "rr-client", role: "client" } });
    await c.next("welcome");
    c.send(
      { case: "call", value: { id: 7n, target: "rr-echo", data: enc.encode("1"), contentType: "application/json", expectsReply: true } },
      { case: "call", value: { id: 8n, target: "rr-echo", data: enc.encode("2"), contentType: "application/json", expectsReply: true } },
    );
    for (const want of ["1", "2"]) {
      const del = await p.next("delivery");
      assert.equal(dec.decode(del.data), want, "FIFO at concurrency 1");
      assert.equal(p.pending("delivery").length, 0, "one delivery in flight at concurrency 1");
      p.send({ case: "result", value: { id: del.id, data: enc.encode(`${want}!`), contentType: "text/plain" } });
    }
    const r7 = await c.next("callResult", (r) => r.id === 7n);
    const r8 = await c.next("callResult", (r) => r.id === 8n);
    assert.equal(dec.decode(r7.data), "1!");
    assert.equal(dec.decode(r8.data), "2!");
    assert.equal(r8.container, "rr-echo");
    assert.equal(r8.contentType, "text/plain");
  });

  test("frames queued in one tick leave in one ConnectResponse", async () => {
    await container("batch-ext", { concurrency: 50 });
    const w = peer({ case: "attach", value: { container: "batch-ext" } });
    await w.next("welcome");
    await eventually(async () => (await status("batch-ext"))?.ready, 5000, "batch-ext ready");
    const c = peer({ case: "hello", value: { role: "client" } });
    await c.next("welcome");
    const calls = Array.from({ length: 40 }, (_, i) => ({
      case: "call" as const,
      value: { id: BigInt(i + 1), target: "batch-ext", data: enc.encode(String(i)), expectsReply: false },
    }));
    c.send(...calls);
    await eventually(() => w.pending("delivery").length >= 40, 5000, "40 deliveries");
    assert.ok(Math.max(...w.batches) >= 40, `deliveries batched: ${w.batches.join(",")}`);
    await eventually(() => c.pending("callResult").length === 40, 5000, "40 call results");
    assert.ok(Math.max(...c.batches) >= 40, `call results batched: ${c.batches.join(",")}`);
  });

  test("a command container is assigned with a token and becomes ready when its process attaches with it; a wrong or missing token is refused", async () => {
    await container("cmd-one", { command: ["my-worker"], env: { A: "1" } });
    const { p } = await hostPeer("spawner", { modules: [], canSpawn: true });
    // The host answers the server's heartbeats, as a real one does, for as long as the test runs.
    const beat = setInterval(() => p.send({ case: "heartbeat", value: {} }), HB / 2);
    try {
      const assign = await p.next("assign", (a) => a.container === "cmd-one");
      assert.ok(assign.token.length >= 16);
      assert.deepEqual(assign.spec?.command, ["my-worker"]);
      p.send({ case: "state", value: { container: "cmd-one", uid: assign.uid, phase: "Running" } });
      await eventually(async () => (await status("cmd-one"))?.message.includes("waiting for it to attach"), 5000, "waiting for attach");
      assert.equal((await status("cmd-one"))?.ready, false);
      // The token now issued is compared: a wrong one and none are refused.
      for (const token of ["0".repeat(assign.token.length), "", assign.token.slice(1)]) {
        const refused = await peer({ case: "attach", value: { container: "cmd-one", token, host: "pid-666" } }).ended;
        assert.equal(refused?.code, Code.PermissionDenied, `attach with token "${token}": ${refused?.rawMessage ?? "accepted"}`);
        assert.match(refused!.rawMessage, /wrong token for container "cmd-one"/);
      }
      const proc = peer({ case: "attach", value: { container: "cmd-one", token: assign.token, host: "pid-42" } });
      await proc.next("welcome");
      await eventually(async () => (await status("cmd-one"))?.ready, 5000, "cmd-one ready");
      const reply = messaging().request({ target: "cmd-one", data: enc.encode("{}"), timeoutMs: 3000 });
      const d = await proc.next("delivery");
      proc.send({ case: "result", value: { id: d.id, data: enc.encode('{"ok":true}'), contentType: "application/json" } });
      assert.deepEqual((await reply).json?.kind, { case: "structValue", value: (await reply).json?.kind.value });
    } finally {
      clearInterval(beat);
    }
  });
});

describe("liveness", () => {
  test("the server heartbeats an idle session and declares a silent one lost after 3 intervals", async () => {
    await container("hb-echo", { module: "hbmod", function: "echo" });
    const { p } = await hostPeer("hb-host", { modules: ["hbmod"] });
    const assign = await p.next("assign", (a) => a.container === "hb-echo");
    p.send({ case: "state", value: { container: "hb-echo", uid: assign.uid, phase: "Running" } });
    await p.next("heartbeat", undefined, HB * 3);
    // The peer stays silent from here on: no heartbeats back. The server's own heartbeats count
    // the intervals it waited (a loaded machine delays its ticks, which only lowers the count).
    const from = p.received.length;
    const err = await p.ended;
    const heartbeats = p.received.slice(from).filter((f) => f.frame.case === "heartbeat").length;
    assert.equal(err?.code, Code.Unavailable);
    assert.match(err!.rawMessage, /declared lost/);
    assert.ok(heartbeats <= 3, `declared lost after ${heartbeats} more heartbeat intervals of silence, not 3`);
    await eventually(async () => (await status("hb-echo"))?.phase === "Pending", 5000, "hb-echo pending again");
    const st = await status("hb-echo");
    assert.equal(st?.ready, false);
    assert.equal(st?.restarts, 1);
    assert.ok(server.events.recent({ name: "hb-echo" }).some((e) => e.reason === "HostLost"));
  });

  test("a session that heartbeats stays alive", async () => {
    const c = peer({ case: "hello", value: { name: "beater", role: "client" } });
    await c.next("welcome");
    const timer = setInterval(() => c.send({ case: "heartbeat", value: { sentAtMs: BigInt(Date.now()) } }), HB / 2);
    try {
      await new Promise((r) => setTimeout(r, HB * 5));
      c.send({ case: "call", value: { id: 1n, target: "no-such-target", expectsReply: true } });
      const r = await c.next("callResult");
      assert.equal(r.error?.code, Code.NotFound);
      assert.match(r.error!.message, /no container or service named "no-such-target"/);
    } finally {
      clearInterval(timer);
    }
  });
});

describe("reconnecting hosts", () => {
  test("a host that reconnects with `running` resumes its containers without a new Assign", async () => {
    await container("resume-echo", { module: "resmod", function: "echo" });
    const first = await hostPeer("res-host", { modules: ["resmod"] });
    const a = await first.p.next("assign", (x) => x.container === "resume-echo");
    first.p.send({ case: "state", value: { container: "resume-echo", uid: a.uid, phase: "Running" } });
    await eventually(async () => (await status("resume-echo"))?.ready, 5000, "ready on the first session");
    // A second session of the same host (its old stream not yet declared lost) takes over.
    const credential = first.welcome.credential;
    assert.ok(credential.length > 0, "a host's Welcome carries its credential");
    const again = peer({
      case: "hello",
      value: { name: "res-host", role: "host", modules: ["resmod"], running: [{ name: "resume-echo", uid: a.uid }], credential },
    });
    const welcome = await again.next("welcome");
    assert.equal(welcome.name, "res-host", "same host, same name");
    assert.equal(welcome.credential, credential);
    // The older session is told a newer one took over, with a code that says: do not reconnect.
    const old = await first.p.ended;
    assert.equal(old?.code, Code.AlreadyExists);
    const reply = messaging().request({ target: "resume-echo", data: enc.encode("1"), timeoutMs: 3000 });
    const d = await again.next("delivery");
    again.send({ case: "result", value: { id: d.id, data: enc.encode("resumed") } });
    assert.equal(dec.decode((await reply).data), "resumed");
    assert.equal(again.pending("assign").length, 0, "no Assign for what runs already");
    const st = await status("resume-echo");
    assert.equal(st?.restarts, 0);
    assert.equal(st?.host, "res-host");

    // After a real loss the container is Pending; the host coming back with it resumes it.
    again.cancel();
    await eventually(async () => (await status("resume-echo"))?.ready === false, 5000, "not ready after the loss");
    const third = peer({
      case: "hello",
      value: { name: "res-host", role: "host", modules: ["resmod"], running: [{ name: "resume-echo", uid: a.uid }], credential },
    });
    await third.next("welcome");
    await eventually(async () => (await status("resume-echo"))?.ready, 5000, "ready again");
    assert.equal(third.pending("assign").length, 0);
    assert.ok(server.events.recent({ name: "resume-echo" }).some((e) => e.reason === "Resumed"));
  });

  test("a second session claiming a live host's name and its containers' uids gets nothing", async () => {
    await container("imp-echo", { module: "impmod", function: "echo" });
    const real = await hostPeer("imp-host", { modules: ["impmod"] });
    const a = await real.p.next("assign", (x) => x.container === "imp-echo");
    real.p.send({ case: "state", value: { container: "imp-echo", uid: a.uid, phase: "Running" } });
    await eventually(async () => (await status("imp-echo"))?.ready, 5000, "ready on the real host");
    // The impostor read the uid (Get shows it) and claims the name, with a made-up credential.
    const impostor = peer({
      case: "hello",
      value: { name: "imp-host", role: "host", modules: ["impmod"], running: [{ name: "imp-echo", uid: a.uid }], credential: "Zm9yZ2Vk" },
    });
    const w = await impostor.next("welcome");
    assert.equal(w.name, "imp-host-2", "a live host's name cannot be claimed");
    assert.notEqual(w.credential, real.welcome.credential);
    assert.equal((await impostor.next("stop", (s) => s.container === "imp-echo")).uid, a.uid, "its claim is answered with a Stop");
    const client = messaging();
    const replies = Array.from({ length: 10 }, (_, i) => client.request({ target: "imp-echo", data: enc.encode(String(i)), timeoutMs: 5000 }));
    for (let i = 0; i < 10; i++) {
      const d = await real.p.next("delivery");
      real.p.send({ case: "result", value: { id: d.id, data: enc.encode("real") } });
    }
    for (const r of replies) assert.equal(dec.decode((await r).data), "real");
    assert.equal(impostor.pending("delivery").length, 0, "the impostor got no delivery");
    assert.equal(real.p.pending("stop").length, 0, "the real host was not disturbed");
    assert.equal((await status("imp-echo"))?.host, "imp-host");
  });

  test("a host's call naming a container it does not run as its sender is refused PERMISSION_DENIED", async () => {
    await container("snd-own", { module: "sndmod", function: "f" });
    await container("snd-sink", {});
    await container("snd-victim", {});
    const sink = peer({ case: "attach", value: { container: "snd-sink" } });
    await sink.next("welcome");
    const { p } = await hostPeer("snd-host", { modules: ["sndmod"] });
    const a = await p.next("assign", (x) => x.container === "snd-own");
    p.send({ case: "state", value: { container: "snd-own", uid: a.uid, phase: "Running" } });
    p.send({ case: "call", value: { id: 1n, target: "snd-sink", data: enc.encode("x"), contentType: "text/plain", sender: "snd-victim" } });
    const refused = await p.next("callResult", (r) => r.id === 1n);
    assert.equal(refused.error?.code, Code.PermissionDenied);
    assert.match(refused.error!.message, /call.sender "snd-victim" is not a container this host runs/);
    p.send({ case: "call", value: { id: 2n, target: "snd-sink", data: enc.encode("y"), contentType: "text/plain", sender: "snd-own" } });
    const d = await sink.next("delivery");
    assert.equal(dec.decode(d.data), "y", "the forged call was not delivered");
    assert.equal(d.sender, "snd-own");
  });

  test("a host told it runs an unknown or moved container is asked to stop it", async () => {
    const { p } = await hostPeer("stale-host", { modules: ["stalemod"] });
    p.cancel();
    const q = peer({ case: "hello", value: { name: "stale-host-b", role: "host", modules: ["stalemod"], running: [{ name: "gone-one", uid: "u-1" }] } });
    await q.next("welcome");
    const stop = await q.next("stop", (s) => s.container === "gone-one");
    assert.equal(stop.uid, "u-1");
    assert.equal(stop.graceMs, 0);
  });
});

test("after a server restart, a container waits for its host to come back and resume it", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-resume-"));
  let s1: K4sServer | undefined = await startTestServer({ heartbeatIntervalMs: HB, dataDir: dir });
  let s2: K4sServer | undefined;
  try {
    await s1.resources.create(create(ContainerSchema, { metadata: { name: "survivor" }, spec: { module: "survmod", function: "f" } }));
    const h1 = openRawPeer(s1.address, { case: "hello", value: { name: "surv-host", role: "host", modules: ["survmod"] } });
    const { credential } = await h1.next("welcome");
    const a = await h1.next("assign");
    h1.send({ case: "state", value: { container: "survivor", uid: a.uid, phase: "Running" } });
    await eventually(async () => (await s1!.resources.get("Container", "survivor"))?.status?.ready, 5000, "running before the restart");
    h1.cancel();
    await s1.stop();
    s1 = undefined;

    s2 = await startTestServer({ heartbeatIntervalMs: HB, dataDir: dir });
    // Another host is there first; the container still waits for the host that ran it.
    const other = openRawPeer(s2.address, { case: "hello", value: { name: "other-host", role: "host", modules: ["survmod"] } });
    await other.next("welcome");
    // So is an impostor claiming the host's name and its container's uid, without its credential:
    // it gets the free name but not the container (a Stop answers its claim).
    const impostor = openRawPeer(s2.address, {
      case: "hello",
      value: { name: "surv-host", role: "host", modules: ["survmod"], running: [{ name: "survivor", uid: a.uid }] },
    });
    assert.equal((await impostor.next("welcome")).name, "surv-host");
    assert.equal((await impostor.next("stop", (s) => s.container === "survivor")).uid, a.uid);
    assert.equal((await s2.resources.get("Container", "survivor"))?.status?.ready, false, "the impostor resumed nothing");
    // The host with the credential (issued by the first server, valid on the second) takes its name back.
    const back = openRawPeer(s2.address, {
      case: "hello",
      value: { name: "surv-host", role: "host", modules: ["survmod"], running: [{ name: "survivor", uid: a.uid }], credential },
    });
    assert.equal((await back.next("welcome")).name, "surv-host");
    assert.equal((await impostor.ended)?.code, Code.AlreadyExists);
    await eventually(async () => (await s2!.resources.get("Container", "survivor"))?.status?.ready, 5000, "resumed");
    const st = (await s2.resources.get("Container", "survivor"))?.status;
    assert.equal(st?.host, "surv-host");
    assert.equal(st?.restarts, 0);
    assert.equal(other.pending("assign").length + back.pending("assign").length, 0, "nothing assigned anew");
    other.cancel();
    back.cancel();
  } finally {
    await s1?.stop();
    await s2?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("log lines of a container reach the log store", async () => {
  await container("logger", { module: "logmod", function: "f" });
  const { p } = await hostPeer("log-host", { modules: ["logmod"] });
  await p.next("assign", (x) => x.container === "logger");
  p.send({ case: "log", value: { container: "logger", lines: ["one", "two"], stream: "stdout" } });
  await eventually(() => server.logs.lines("logger").length === 2, 5000, "two lines");
  assert.deepEqual(server.logs.lines("logger").map((l) => [l.stream, l.text]), [["stdout", "one"], ["stdout", "two"]]);
});

test("ConnectError codes map to the wire", () => {
  // Guards the assumption the protocol relies on: Connect codes are gRPC codes.
  assert.equal(new ConnectError("x", Code.ResourceExhausted).code, 8);
});
