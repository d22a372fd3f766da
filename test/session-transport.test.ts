/**
 * The SDK session's transport (the lean HTTP/2 client by default, grpc-js's when
 * K4S_WORKER_TRANSPORT=grpc-js, with the hand-written frame codec either way): TLS with a
 * trusted certificate and servername, the bearer token, and batches split below the message
 * size limits, end to end through a real server and an attached worker.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { createClient } from "../src/client/index.js";
import { attach } from "../src/workers/runtime/attach.js";
import { defineWorker } from "../src/workers/runtime/define-worker.js";
import { eventually, startTestServer } from "./helpers.js";
import fc from "fast-check";
import * as http2 from "node:http2";
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from "node:net";
import { GrpcMessageReader, leanChannel, type LeanTimers } from "../src/transport/lean-channel.js";
import type { ConnectResponse } from "../src/gen/k4s/v1/worker_service_pb.js";
import { workerTransport } from "../src/transport/stream-channel.js";

const echo = defineWorker(async (ctx) => {
  for await (const m of ctx.messages) if (m.expectsReply) m.reply(m.data, { contentType: "application/octet-stream" });
});

function certificate(): { cert: Buffer; key: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), "k4s-session-tls-"));
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=k4s.test",
    "-addext", "subjectAltName=DNS:k4s.test",
    "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
  ], { stdio: "ignore" });
  return { cert: readFileSync(join(dir, "cert.pem")), key: readFileSync(join(dir, "key.pem")) };
}

test("sessions over TLS (servername checked) with a bearer token carry requests; a wrong token, a certificate for another name or an untrusted one is refused", async () => {
  const { cert, key } = certificate();
  const token = "tls-s3cret";
  const server = await startTestServer({ tls: { cert, key }, token });
  // The certificate names k4s.test, not 127.0.0.1: only servername makes it match.
  const tls = { ca: cert, servername: "k4s.test" };
  const client = createClient({ address: server.address, tls, token, reconnect: false });
  // Applied first: an attach that reaches the server before the container exists is refused NOT_FOUND.
  await client.apply("kind: Container\nmetadata: {name: tls-echo}\nspec: {concurrency: 8}\n");
  const worker = attach({ address: server.address, container: "tls-echo", token, tls, worker: echo, reconnect: false });
  try {
    await worker.ready;
    await eventually(async () => (await client.get("Container", "tls-echo"))?.status?.ready === true, 10_000, "tls-echo ready");
    const data = new Uint8Array([1, 2, 3, 250]);
    const reply = await client.request<Uint8Array>("tls-echo", data, { contentType: "application/octet-stream" });
    assert.deepEqual([...reply], [1, 2, 3, 250]);

    const wrongToken = createClient({ address: server.address, tls, token: "nope", reconnect: false });
    try {
      await assert.rejects(wrongToken.send("tls-echo", 1), (e: ConnectError) => e.code === Code.Unauthenticated);
    } finally {
      await wrongToken.close();
    }
    // Without servername the certificate is checked against the address, 127.0.0.1: no match.
    const wrongName = createClient({ address: server.address, tls: { ca: cert }, token, reconnect: false });
    try {
      await assert.rejects(wrongName.send("tls-echo", 1), (e: ConnectError) => e.code === Code.Unavailable);
    } finally {
      await wrongName.close();
    }
    const untrusted = createClient({ address: server.address, tls: { servername: "k4s.test" }, token, reconnect: false });
    try {
      await assert.rejects(untrusted.send("tls-echo", 1), (e: ConnectError) => e.code === Code.Unavailable);
    } finally {
      await untrusted.close();
    }
  } finally {
    await worker.stop(1000);
    await client.close();
    await server.stop();
  }
});

test("calls sent together beyond the server's 16 MiB message limit go in several batches; an oversized payload fails alone", async () => {
  const server = await startTestServer();
  const client = createClient({ address: server.address, reconnect: false });
  // The container first: an attach without reconnecting fails for good when it is not there yet.
  await client.apply("kind: Container\nmetadata: {name: big-echo}\nspec: {concurrency: 32}\n");
  const worker = attach({ address: server.address, container: "big-echo", worker: echo, reconnect: false });
  try {
    await worker.ready;
    await eventually(async () => (await client.get("Container", "big-echo"))?.status?.ready === true, 10_000, "big-echo ready");
    // Twenty 1 MiB requests made in one tick: joined into one ConnectRequest they would pass the
    // server's 16 MiB limit and end the stream; their replies would pass grpc clients' 4 MiB.
    const payloads = Array.from({ length: 20 }, (_, i) => new Uint8Array(1024 * 1024).fill(i + 1));
    const replies = await Promise.all(
      payloads.map((p) => client.request<Uint8Array>("big-echo", p, { contentType: "application/octet-stream", timeoutMs: 20_000 })),
    );
    replies.forEach((r, i) => {
      assert.equal(r.byteLength, 1024 * 1024);
      assert.ok(r.every((b) => b === i + 1), `reply ${i} carries request ${i}'s bytes`);
    });
    const huge = new Uint8Array(17 * 1024 * 1024);
    await assert.rejects(
      client.send("big-echo", huge, { contentType: "application/octet-stream" }),
      (e: ConnectError) => e.code === Code.ResourceExhausted && /exceeds the limit/.test(e.rawMessage),
    );
    assert.deepEqual(await client.send("big-echo", "small"), { container: "big-echo" });
  } finally {
    await worker.stop(1000);
    await client.close();
    await server.stop();
  }
});

test("the lean stream's reader splits DATA chunks cut anywhere into the messages sent, each within one chunk a view of it; a compressed one is refused", () => {
  const body = fc.integer({ min: 0, max: 40_000 }).map((n) => Buffer.from(Uint8Array.from({ length: n }, (_, k) => (k * 7 + n) & 0xff)));
  fc.assert(
    fc.property(fc.array(body, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (bodies, cutsAt) => {
      const stream = Buffer.concat(bodies.flatMap((b) => [Buffer.from([0, b.byteLength >>> 24, (b.byteLength >>> 16) & 0xff, (b.byteLength >>> 8) & 0xff, b.byteLength & 0xff]), b]));
      const cuts = [...new Set(cutsAt.map((c) => c % (stream.byteLength + 1)))].sort((a, b) => a - b);
      const bounds = [0, ...cuts, stream.byteLength];
      const reader = new GrpcMessageReader();
      const got: { body: Buffer; view: boolean }[] = [];
      for (let i = 0; i + 1 < bounds.length; i++) {
        // Each chunk in memory of its own, as the socket delivers it.
        const chunk = Buffer.alloc(bounds[i + 1]! - bounds[i]!);
        stream.copy(chunk, 0, bounds[i], bounds[i + 1]);
        assert.equal(reader.read(chunk, (b) => got.push({ body: b, view: b.buffer === chunk.buffer }), () => false), undefined);
      }
      assert.equal(got.length, bodies.length);
      let at = 0;
      bodies.forEach((b, i) => {
        assert.ok(got[i]!.body.equals(b), `message ${i}`);
        const start = at + 5;
        at = start + b.byteLength;
        // Within one chunk (no cut strictly inside it): a view of that chunk; else joined once.
        if (b.byteLength > 0) assert.equal(got[i]!.view, !cuts.some((c) => c > start && c < at), `message ${i}: a view iff it lay in one chunk`);
      });
    }),
    { numRuns: 200 },
  );
  const reader = new GrpcMessageReader();
  const seen: Buffer[] = [];
  assert.match(reader.read(Buffer.from([1, 0, 0, 0, 1, 42]), (b) => seen.push(b), () => false)?.details ?? "", /compressed/);
  assert.equal(seen.length, 0);
  // A length beyond the limit is refused before anything is allocated for it.
  const small = new GrpcMessageReader(10);
  assert.deepEqual(small.read(Buffer.from([0, 0, 0, 0, 11, 1]), (b) => seen.push(b), () => false), { code: Code.ResourceExhausted, details: "Received message larger than max (11 vs. 10)" });
  assert.equal(small.read(Buffer.from([0, 0, 0, 0, 10, 1]), (b) => seen.push(b), () => false), undefined);
  assert.ok(small.partial(), "a message begun and not completed");
  assert.equal(seen.length, 0);
});

/** The status a lean stream on this address ends with, and the messages before it. */
function leanStream(address: string, timing: LeanTimers = {}, tls?: boolean): { status: Promise<{ code: number; details: string }>; messages: ConnectResponse[]; close(): void } {
  const channel = leanChannel(address, tls, timing);
  const messages: ConnectResponse[] = [];
  const status = new Promise<{ code: number; details: string }>((resolve) => {
    const stream = channel.open("/k4s.v1.WorkerService/Connect", {}, { message: (m) => messages.push(m), status: (code, details) => resolve({ code, details }) });
    stream.write({ frames: [] });
  });
  return { status, messages, close: () => channel.close() };
}

/** A node:http2 server answering every stream with `answer`. */
async function h2Server(answer: (stream: http2.ServerHttp2Stream) => void): Promise<{ address: string; close(): void }> {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => sessions.add(s));
  server.on("stream", (stream) => {
    stream.on("error", () => {});
    answer(stream);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      for (const s of sessions) s.destroy();
      server.close();
    },
  };
}

/** A TCP relay to `target` that can close the client's connection (FIN, as a killed server's) or stop relaying (a frozen one). */
async function relay(target: string): Promise<{ address: string; accepted: Promise<void>; cut(): void; freeze(): void; close(): void }> {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
  const sockets: Socket[] = [];
  let frozen = false;
  let onAccept = () => {};
  const accepted = new Promise<void>((r) => (onAccept = r));
  const server = createNetServer((inbound) => {
    const outbound = connect(port, host);
    sockets.push(inbound, outbound);
    for (const s of [inbound, outbound]) s.on("error", () => {});
    inbound.on("data", (d) => frozen || outbound.write(d));
    outbound.on("data", (d) => frozen || inbound.write(d));
    inbound.on("close", () => outbound.destroy());
    onAccept();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    accepted,
    // Everything the client sent was read: its kernel sees a FIN, not a reset.
    cut: () => sockets[0]?.end(),
    freeze: () => (frozen = true),
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

const grpcHeaders = { ":status": 200, "content-type": "application/grpc" };

test("the lean stream ends UNAVAILABLE when its connection is lost: the server closes it, stops answering pings, or never completes the TLS handshake", { timeout: 60_000 }, async () => {
  let opened = () => {};
  const backend = await h2Server((s) => {
    s.respond(grpcHeaders);
    opened();
  });
  try {
    // The server side goes away (a killed server: FIN) while the stream is open.
    const killed = await relay(backend.address);
    const open = new Promise<void>((r) => (opened = r));
    const a = leanStream(killed.address);
    await open;
    killed.cut();
    const cut = await a.status;
    assert.equal(cut.code, Code.Unavailable, `closed connection: ${cut.code} ${cut.details}`);
    a.close();
    killed.close();

    // The server stops answering (pings go unanswered).
    const frozen = await relay(backend.address);
    const b = leanStream(frozen.address, { keepaliveTimeMs: 100, keepaliveTimeoutMs: 300 });
    await frozen.accepted;
    frozen.freeze();
    const unanswered = await b.status;
    assert.deepEqual(unanswered, { code: Code.Unavailable, details: "keepalive ping not answered" });
    b.close();
    frozen.close();

    // A TLS handshake never answered: the connection is up, the session never is.
    const silent = createNetServer((s) => s.on("error", () => {}));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const c = leanStream(`127.0.0.1:${(silent.address() as AddressInfo).port}`, { connectTimeoutMs: 300 }, true);
    const timedOut = await c.status;
    assert.equal(timedOut.code, Code.Unavailable, `connect timeout: ${timedOut.code} ${timedOut.details}`);
    assert.match(timedOut.details, /timed out/);
    c.close();
    silent.close();
  } finally {
    backend.close();
  }
});

test("the lean stream maps a non-gRPC answer as grpc-js does: an HTTP error status with a page, another content type, a bad grpc-status, a message cut short, a length beyond the limit", { timeout: 60_000 }, async () => {
  const cases: { name: string; answer: (s: http2.ServerHttp2Stream) => void; code: Code; details: RegExp }[] = [
    { name: "503 with a page", answer: (s) => { s.respond({ ":status": 503, "content-type": "text/html" }); s.end("<html>busy</html>"); }, code: Code.Unavailable, details: /HTTP status code 503/ },
    { name: "401 with a page", answer: (s) => { s.respond({ ":status": 401, "content-type": "text/html" }); s.end("<html>who</html>"); }, code: Code.Unauthenticated, details: /HTTP status code 401/ },
    { name: "404 with a page", answer: (s) => { s.respond({ ":status": 404, "content-type": "text/plain" }); s.end("not here"); }, code: Code.Unimplemented, details: /HTTP status code 404/ },
    { name: "200 text/html", answer: (s) => { s.respond({ ":status": 200, "content-type": "text/html" }); s.end("<html>hi</html>"); }, code: Code.Unknown, details: /content-type "text\/html"/ },
    {
      name: "grpc-status abc",
      answer: (s) => { s.respond(grpcHeaders, { waitForTrailers: true }); s.on("wantTrailers", () => s.sendTrailers({ "grpc-status": "abc", "grpc-message": "odd" })); s.end(); },
      code: Code.Unknown,
      details: /invalid grpc-status "abc": odd/,
    },
    {
      name: "message cut short, then OK",
      answer: (s) => { s.respond(grpcHeaders, { waitForTrailers: true }); s.on("wantTrailers", () => s.sendTrailers({ "grpc-status": "0" })); s.end(Buffer.from([0, 0, 0, 0, 10, 1, 2, 3])); },
      code: Code.Internal,
      details: /middle of a message/,
    },
    {
      name: "a 4 GiB length",
      answer: (s) => { s.respond(grpcHeaders); s.write(Buffer.from([0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3])); },
      code: Code.ResourceExhausted,
      details: /larger than max \(4294967295 vs\. 33554432\)/,
    },
  ];
  for (const c of cases) {
    const server = await h2Server(c.answer);
    const stream = leanStream(server.address);
    try {
      const got = await stream.status;
      assert.equal(got.code, c.code, `${c.name}: ${got.code} ${got.details}`);
      assert.match(got.details, c.details, c.name);
      assert.equal(stream.messages.length, 0, c.name);
    } finally {
      stream.close();
      server.close();
    }
  }
});

test("the worker transport is lean unless K4S_WORKER_TRANSPORT or the caller says grpc-js, or a proxy is configured; another name is refused", () => {
  assert.equal(workerTransport(undefined, {}), "lean");
  assert.equal(workerTransport(undefined, { K4S_WORKER_TRANSPORT: "grpc-js" }), "grpc-js");
  assert.equal(workerTransport("grpc-js", {}), "grpc-js");
  assert.equal(workerTransport("lean", { K4S_WORKER_TRANSPORT: "grpc-js" }), "lean");
  assert.equal(workerTransport(undefined, { https_proxy: "http://proxy:3128" }), "grpc-js");
  assert.throws(
    () => workerTransport(undefined, { K4S_WORKER_TRANSPORT: "h3" }),
    (e: ConnectError) => e.code === Code.InvalidArgument && e.rawMessage === 'invalid worker transport K4S_WORKER_TRANSPORT="h3": give "lean" or "grpc-js"',
  );
});
