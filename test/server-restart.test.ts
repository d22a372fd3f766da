/**
 * What a server restart keeps and how its clients ride it out: container output and events
 * survive it (graceful and SIGKILL), `logs -f` and `events -w` resume after it without repeating
 * a line and give up with one clear line when the server does not come back, a call that
 * reaches a stopping server is refused with RetryInfo and retried by the SDK, and the port
 * bounds its connections (idle timeout, connection limit, a token on /metrics).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect as http2Connect } from "node:http2";
import { mkdtempSync, rmSync } from "node:fs";
import { connect as tcpConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient as createConnectClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { retryDelayOf } from "../src/api/retry-info.js";
import { createClient } from "../src/client/index.js";
import { attach } from "../src/workers/runtime/attach.js";
import { defineWorker } from "../src/workers/runtime/define-worker.js";
import { ResourceService } from "../src/gen/k4s/v1/resource_service_pb.js";
import type { K4sServer } from "../src/server/server.js";
import { eventually, spawnK4s, startTestServer, type Proc } from "./helpers.js";

let dir: string;
const procs: Proc[] = [];
const servers: K4sServer[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), "k4s-server-restart-"));
});

after(async () => {
  await Promise.all(procs.map((p) => p.kill("SIGKILL")));
  for (const s of servers) await s.stop().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

async function server(options: Parameters<typeof startTestServer>[0] = {}): Promise<K4sServer> {
  const s = await startTestServer(options);
  servers.push(s);
  return s;
}

const EXTERNAL = (name: string) => `kind: Container\nmetadata: {name: ${name}}\nspec: {}\n`;

test("container output and events survive a graceful restart and a SIGKILL", async () => {
  const dataDir = join(dir, "tails");
  const first = await server({ dataDir });
  const c1 = createClient({ address: first.address, reconnect: false });
  await c1.apply(EXTERNAL("keeper"));
  first.logs.append("keeper", "log", ["one", "two"]);
  first.events.record({ reason: "Custom", kind: "Container", name: "keeper", message: "before the restart" });
  await c1.close();
  await first.stop();

  const second = await server({ dataDir, port: first.port });
  const c2 = createClient({ address: second.address, reconnect: false });
  try {
    const lines = [];
    for await (const l of c2.logs("keeper")) lines.push(l);
    assert.deepEqual(lines.map((l) => l.text), ["one", "two"]);
    assert.ok(lines[0]!.seq > 0n && lines[1]!.seq > lines[0]!.seq, "lines keep their increasing positions");
    const events = [];
    for await (const e of c2.events({ name: "keeper" })) events.push(e.message);
    assert.ok(events.includes("before the restart"), events.join("; "));
  } finally {
    await c2.close();
    await second.stop();
  }

  // SIGKILL: what was flushed (at least once a second) is there after the restart.
  const killedDir = join(dir, "tails-killed");
  const killed = spawnK4s(["server", "--port", "0", "--data-dir", killedDir, "--no-local-worker", "--no-dashboard"]);
  procs.push(killed);
  await killed.waitFor(/listening on (\S+)/, 30_000);
  const address = /listening on (\S+)/.exec(killed.stdout())![1]!;
  const c3 = createClient({ address, reconnect: false });
  await c3.apply(EXTERNAL("talker"));
  await c3.close();
  const worker = attach({
    address,
    container: "talker",
    reconnect: false,
    worker: defineWorker(async (ctx) => {
      ctx.log("said before the kill");
      for await (const m of ctx.messages) m.ack();
    }),
  });
  await worker.ready;
  await new Promise((r) => setTimeout(r, 2500));
  await killed.kill("SIGKILL");
  await worker.stop(0).catch(() => {});
  const after = await server({ dataDir: killedDir });
  const c4 = createClient({ address: after.address, reconnect: false });
  try {
    const texts = [];
    for await (const l of c4.logs("talker")) texts.push(l.text);
    assert.deepEqual(texts, ["said before the kill"], "the kept lines survive a SIGKILL");
    const reasons = [];
    for await (const e of c4.events({ name: "talker" })) reasons.push(e.reason);
    assert.ok(reasons.includes("Started"), `the events survive a SIGKILL: ${reasons.join(", ")}`);
  } finally {
    await c4.close();
  }
});

test("logs -f and events -w resume after a server restart, each line once, and say so once each way", async () => {
  const dataDir = join(dir, "follow");
  const first = await server({ dataDir });
  const port = first.port;
  const c = createClient({ address: first.address, reconnect: false });
  await c.apply(EXTERNAL("talker"));
  await c.close();
  first.logs.append("talker", "log", ["line 1", "line 2"]);
  const logs = spawnK4s(["logs", "-f", "talker", "--server", first.address]);
  const events = spawnK4s(["events", "-w", "--for", "container/talker", "--server", first.address]);
  procs.push(logs, events);
  await logs.waitFor("line 2", 20_000);
  await events.waitFor("LAST SEEN", 20_000);
  first.logs.append("talker", "log", ["line 3"]);
  first.events.record({ reason: "First", kind: "Container", name: "talker", message: "before" });
  await logs.waitFor("line 3", 20_000);
  await events.waitFor("before", 20_000);

  await first.stop();
  await logs.waitFor("lost the server", 20_000);
  const second = await server({ dataDir, port });
  second.logs.append("talker", "log", ["line 4"]);
  second.events.record({ reason: "Second", kind: "Container", name: "talker", message: "after" });
  await logs.waitFor("line 4", 30_000);
  await events.waitFor("after", 30_000);
  assert.equal(logs.child.exitCode, null);
  assert.deepEqual(logs.stdout().trim().split("\n"), ["line 1", "line 2", "line 3", "line 4"]);
  assert.equal(events.stdout().split("\n").filter((l) => l.includes("before")).length, 1, events.stdout());
  const stderr = logs.stderr().trim().split("\n");
  assert.equal(stderr.length, 2, logs.stderr());
  assert.match(stderr[0]!, /^k4s: lost the server at 127\.0\.0\.1:\d+ \(.*\); resuming when it is back$/);
  assert.match(stderr[1]!, /^k4s: the server at 127\.0\.0\.1:\d+ is back; resumed$/);
  await logs.kill("SIGINT");
  await events.kill("SIGINT");
});

test("get -w resumes from its last resource version after a server restart, and gives up with one line", async () => {
  const dataDir = join(dir, "get-watch");
  const first = await server({ dataDir });
  const port = first.port;
  const c1 = createClient({ address: first.address, reconnect: false });
  await c1.apply(EXTERNAL("watched-1"));
  await c1.close();
  // A quiet watch: nothing changes between its listing and the stop.
  const watch = spawnK4s(["get", "containers", "-w", "--server", first.address]);
  const quitter = spawnK4s(["get", "containers", "-w", "--server", first.address, "--reconnect-timeout", "2s"]);
  procs.push(watch, quitter);
  await watch.waitFor("watched-1", 20_000);
  await quitter.waitFor("watched-1", 20_000);
  await first.stop();
  await watch.waitFor("lost the server", 20_000);
  assert.equal(await quitter.exited, 1, quitter.stderr());
  const last = quitter.stderr().trim().split("\n").pop()!;
  assert.match(last, /^error: UNAVAILABLE: the k4s server at 127\.0\.0\.1:\d+ went away \(not back after \d+ s\)$/);

  const second = await server({ dataDir, port });
  const c2 = createClient({ address: second.address, reconnect: false });
  await c2.apply(EXTERNAL("watched-2"));
  await c2.close();
  await watch.waitFor("watched-2", 30_000);
  assert.equal(watch.child.exitCode, null, watch.stderr());
  // watched-1 did not change: its listing row is its only row.
  const rows = watch.stdout().trim().split("\n");
  assert.equal(rows.filter((r) => r.startsWith("watched-1")).length, 1, watch.stdout());
  const stderr = watch.stderr().trim().split("\n");
  assert.equal(stderr.length, 2, watch.stderr());
  assert.match(stderr[0]!, /^k4s: lost the server at 127\.0\.0\.1:\d+ \(.*\); resuming when it is back$/);
  assert.match(stderr[1]!, /^k4s: the server at 127\.0\.0\.1:\d+ is back; resumed$/);
  await watch.kill("SIGINT");
});

test("a follow whose server does not come back gives up with one line naming the server", async () => {
  const s = await startTestServer();
  const c = createClient({ address: s.address, reconnect: false });
  await c.apply(EXTERNAL("gone"));
  await c.close();
  s.logs.append("gone", "log", ["hello"]);
  const logs = spawnK4s(["logs", "-f", "gone", "--server", s.address, "--reconnect-timeout", "2s"]);
  procs.push(logs);
  await logs.waitFor("hello", 20_000);
  await s.stop();
  assert.equal(await logs.exited, 1);
  const last = logs.stderr().trim().split("\n").pop()!;
  assert.match(last, /^error: UNAVAILABLE: the k4s server at 127\.0\.0\.1:\d+ went away \(not back after \d+ s\)$/);
  assert.doesNotMatch(logs.stderr(), /TLS/);
});

test("a call that reaches a stopping server is refused with RetryInfo, and the SDK retries it until the server is back", async () => {
  const dataDir = join(dir, "refusal");
  const first = await startTestServer({ dataDir });
  const port = first.port;
  const raw = createConnectClient(ResourceService, createGrpcTransport({ baseUrl: `http://${first.address}` }));
  const sdk = createClient({ address: first.address, reconnect: false });
  await raw.list({ kind: "Container" });
  await sdk.apply(EXTERNAL("survivor"));
  const stopping = first.stop();
  const refused = raw.list({ kind: "Container" }).then(
    () => undefined,
    (err: unknown) => err,
  );
  const waiting = sdk.get("Container", "survivor");
  const err = await refused;
  // Refused as not run: UNAVAILABLE with RetryInfo while the server stops, or HTTP/2's
  // REFUSED_STREAM once it closes the connection; either is safe to send again.
  assert.ok(err instanceof ConnectError, `a call during the stop is refused, not served: ${String(err)}`);
  const withRetryInfo = err.code === Code.Unavailable && retryDelayOf(err) !== undefined;
  assert.ok(withRetryInfo || /REFUSED_STREAM/.test(err.rawMessage), `refused as not run: ${err.message}`);
  await stopping;
  await new Promise((r) => setTimeout(r, 1000));
  const second = await server({ dataDir, port });
  assert.equal(second.port, port);
  const obj = await waiting;
  assert.equal(obj.metadata?.name, "survivor");
  await sdk.close();
});

test("the port closes idle connections, holds at most maxConnections, and /metrics needs the token", async () => {
  const s = await server({ idleConnectionTimeoutMs: 1000, maxConnections: 4, token: "m3trics", metricsPort: 0 });
  const session = http2Connect(`http://${s.address}`);
  session.on("error", () => {});
  const closedAt = await new Promise<number>((resolve, reject) => {
    const t0 = Date.now();
    const timer = setTimeout(() => reject(new Error("an idle connection stayed open for 10 s")), 10_000);
    session.once("close", () => {
      clearTimeout(timer);
      resolve(Date.now() - t0);
    });
  });
  assert.ok(closedAt >= 900, `closed after ${closedAt} ms idle`);

  const sockets: Socket[] = [];
  const closed = new Set<Socket>();
  for (let i = 0; i < 8; i++) {
    const sock = tcpConnect(s.port, "127.0.0.1");
    sock.on("error", () => {});
    sock.on("close", () => closed.add(sock));
    sockets.push(sock);
    await new Promise((r) => sock.once("connect", r));
  }
  try {
    await eventually(() => closed.size >= 4, 10_000, "the connections beyond the limit to be closed");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(closed.size, 4, `4 of 8 kept (limit 4), ${closed.size} closed`);
  } finally {
    for (const sock of sockets) sock.destroy();
  }

  const url = `http://127.0.0.1:${s.metricsPort}/metrics`;
  const anonymous = await fetch(url);
  assert.equal(anonymous.status, 401);
  assert.match(await anonymous.text(), /missing bearer token/);
  const withToken = await fetch(url, { headers: { authorization: "Bearer m3trics" } });
  assert.equal(withToken.status, 200);
  assert.match(await withToken.text(), /k4s_worker_sessions/);
});
