/**
 * The messaging plane's byte bounds end to end, on a real server (port 0) over real gRPC: a
 * worker that stops reading holds its deliveries back in its inbox (which refuses sends past
 * maxInboxBytes, naming the bound); a session whose unread frames pass maxSessionBufferBytes
 * anyway (answers to its own calls) is ended RESOURCE_EXHAUSTED naming that bound, and a peer
 * that cannot even take that status (its HTTP/2 window stays shut) has its stream reset.
 */
import { constants, connect } from "node:http2";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ContainerSchema } from "../src/gen/k4s/v1/resources_pb.js";
import { MessagingService } from "../src/gen/k4s/v1/messaging_service_pb.js";
import { ConnectRequestSchema, WorkerFrameSchema, type WorkerFrame } from "../src/gen/k4s/v1/worker_service_pb.js";
import type { K4sServer } from "../src/server/server.js";
import { eventually, startTestServer } from "./helpers.js";
import { openAnsweringPeer, openNonReadingPeer, openRawPeer, type AnsweringPeer, type NonReadingPeer } from "./raw-peer.js";

const MiB = 1024 * 1024;
const SESSION_BYTES = 8 * MiB;
const INBOX_BYTES = 16 * MiB;

let server: K4sServer;
before(async () => {
  server = await startTestServer({ maxSessionBufferBytes: SESSION_BYTES, maxInboxBytes: INBOX_BYTES });
});
after(() => server.stop());

const messaging = () => createClient(MessagingService, createGrpcTransport({ baseUrl: `http://${server.address}` }));

/** A payload of `bytes` that starts with its number, so deliveries can be told apart. */
function payload(n: number, bytes: number): Uint8Array {
  const data = new Uint8Array(bytes);
  data.set(new TextEncoder().encode(`${n};`));
  return data;
}
const numberOf = (data: Uint8Array) => Number(new TextDecoder().decode(data.subarray(0, 12)).split(";")[0]);

/** Sends 1-byte-numbered payloads until one is refused or `max` were sent; returns the accepted numbers and the refusal. */
async function sendUntilRefused(target: string, bytes: number, max: number) {
  const c = messaging();
  const accepted: number[] = [];
  for (let n = 0; n < max; n++) {
    try {
      await c.send({ target, data: payload(n, bytes), contentType: "application/octet-stream" });
      accepted.push(n);
    } catch (err) {
      return { accepted, refused: ConnectError.from(err) };
    }
  }
  return { accepted, refused: undefined };
}

test("a worker that stops reading holds back its deliveries: sends wait in its inbox up to maxInboxBytes, then are refused naming it; nothing accepted is lost", async () => {
  // Concurrency 1000: the server may hand the worker up to 1000 deliveries unsettled, so only
  // the stream's congestion keeps them from piling up on a peer that does not read.
  await server.resources.create(create(ContainerSchema, { metadata: { name: "bb-stuck" }, spec: { concurrency: 1000 } }));
  const stuck = openNonReadingPeer(server.address, { case: "attach", value: { container: "bb-stuck", host: "stuck" } });
  let accepted: number[] = [];
  try {
    await eventually(async () => (await server.resources.get("Container", "bb-stuck"))?.status?.ready, 10_000, "bb-stuck ready");
    const sent = await sendUntilRefused("bb-stuck", MiB, 200);
    accepted = sent.accepted;
    assert.ok(sent.refused, `all ${accepted.length} sends of 1 MiB were accepted: nothing bounded what waits for a worker that does not read`);
    assert.equal(sent.refused.code, Code.ResourceExhausted, sent.refused.message);
    assert.match(sent.refused.rawMessage, /inbox of container "bb-stuck" is full: .* maxInboxBytes of 16 MiB/);
    // The inbox's 16, a few on the congested stream and in transport, the peer's own buffers.
    assert.ok(accepted.length < 64, `${accepted.length} sends of 1 MiB accepted`);
    console.log(`byte-bounds figures: a worker that does not read: ${accepted.length} sends of 1 MiB accepted, then RESOURCE_EXHAUSTED`);
  } finally {
    stuck.cancel();
  }
  // Its unsettled deliveries go back to the inbox; a worker that reads gets every one.
  const reader = openRawPeer(server.address, { case: "attach", value: { container: "bb-stuck", host: "reader" } });
  const seen = new Set<number>();
  try {
    while (accepted.some((n) => !seen.has(n))) {
      const d = await reader.next("delivery", undefined, 20_000);
      seen.add(numberOf(d.data));
      reader.send({ case: "result", value: { id: d.id } });
    }
  } finally {
    reader.cancel();
  }
  assert.deepEqual(accepted.filter((n) => !seen.has(n)), [], "accepted sends not delivered");
});

/** Live worker sessions of a role on the in-process server, from its own gauge. */
async function sessions(role: string): Promise<number> {
  return (await server.metrics.sessions.get()).values.find((v) => v.labels.role === role)?.value ?? 0;
}

/** A container served by a raw worker that answers each request with 1 MiB. */
async function startEcho(name: string): Promise<AnsweringPeer> {
  await server.resources.create(create(ContainerSchema, { metadata: { name }, spec: { concurrency: 100 } }));
  const echo = openAnsweringPeer(server.address, name, `${name}-host`, MiB);
  await eventually(async () => (await server.resources.get("Container", name))?.status?.ready, 30_000, `${name} ready`);
  return echo;
}

/**
 * 120 requests to `target`, each answered with 1 MiB: far more than the 8 MiB bound, so whatever
 * the timing the server must not hold more than that for a peer that reads nothing (what it wrote
 * into the peer's HTTP/2 window and socket buffers is the peer's).
 */
const callsTo = (target: string) =>
  Array.from({ length: 120 }, (_, i) => ({
    case: "call" as const,
    value: { id: BigInt(i + 1), target, data: new Uint8Array(8), expectsReply: true, timeoutMs: 300_000 },
  }));

const BOUND_NAMED = (name: string) =>
  new RegExp(`session "${name}" does not read its stream: more than 8 MiB of frames queued \\(the server's maxSessionBufferBytes, 8388608 bytes\\)`);

test("a session that never reads the answers to its calls is ended RESOURCE_EXHAUSTED past maxSessionBufferBytes", async () => {
  const echo = await startEcho("bb-echo");
  const clientsBefore = await sessions("client");
  const caller = openNonReadingPeer(server.address, { case: "hello", value: { role: "client", name: "bb-caller" } });
  try {
    await eventually(async () => (await sessions("client")) > clientsBefore, 30_000, "the caller's session open");
    caller.send(...callsTo("bb-echo"));
    // The server ends the session while the caller still reads nothing (reading first would let
    // the caller drain it). Generous: ~5 s alone, far longer at load 20.
    await eventually(async () => (await sessions("client")) === clientsBefore, 240_000, `the server ending the caller's session (${echo.answered} answers of 1 MiB sent so far)`);
    // Then the caller reads: what was on its way, then the status naming the bound (well within
    // the server's 10 s grace, after which it would reset the stream instead).
    const end = await caller.readToEnd(120_000);
    assert.equal(end.code, Code.ResourceExhausted, end.details);
    assert.match(end.details, BOUND_NAMED("bb-caller"));
    console.log(`byte-bounds figures: a caller that does not read: ended after ${echo.answered} answers of 1 MiB were sent (it read ${end.frames} frames, then ${Code[end.code]})`);
  } finally {
    caller.cancel();
    await echo.close();
  }
});

test("a peer whose HTTP/2 window stays shut still learns its session ended: the stream is reset ENHANCE_YOUR_CALM (RESOURCE_EXHAUSTED)", async () => {
  const echo = await startEcho("bb-echo-2");
  const clientsBefore = await sessions("client");
  // A plain HTTP/2 peer that never reads: its stream window (64 KiB) closes after the first
  // answer, so the server can send neither the rest nor the status, which comes after them.
  const session = connect(`http://${server.address}`);
  const stream = session.request({ ":method": "POST", ":path": "/k4s.v1.WorkerService/Connect", "content-type": "application/grpc", te: "trailers" });
  const frame = (frames: Parameters<NonReadingPeer["send"]>) => {
    const body = toBinary(ConnectRequestSchema, create(ConnectRequestSchema, { frames: frames.map((f) => create(WorkerFrameSchema, { frame: f })) as WorkerFrame[] }));
    const head = Buffer.alloc(5);
    head.writeUInt32BE(body.byteLength, 1);
    return Buffer.concat([head, body]);
  };
  stream.on("error", () => {}); // the reset, read from rstCode below
  const closed = new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? -1)));
  stream.write(frame([{ case: "hello", value: { role: "client", name: "bb-shut" } }]));
  const beat = setInterval(() => stream.write(frame([{ case: "heartbeat", value: {} }])), 500);
  try {
    await eventually(async () => (await sessions("client")) > clientsBefore, 30_000, "the peer's session open");
    stream.write(frame(callsTo("bb-echo-2")));
    await eventually(async () => (await sessions("client")) === clientsBefore, 240_000, "the server ending the session");
    const ended = Date.now();
    const rst = await Promise.race([closed, new Promise<string>((resolve) => setTimeout(() => resolve("still open"), 120_000).unref())]);
    assert.equal(rst, constants.NGHTTP2_ENHANCE_YOUR_CALM, `the stream of a peer that cannot take its status: ${rst}`);
    console.log(`byte-bounds figures: a peer whose window stays shut: reset ENHANCE_YOUR_CALM ${Date.now() - ended} ms after its session ended`);
  } finally {
    clearInterval(beat);
    stream.close();
    session.destroy();
    await echo.close();
  }
});

test("250 sends of 2 MiB into one inbox: it holds maxInboxBytes, the rest are refused RESOURCE_EXHAUSTED naming the bound", async () => {
  await server.resources.create(create(ContainerSchema, { metadata: { name: "bb-full" }, spec: {} }));
  const c = messaging();
  const results = [];
  for (let n = 0; n < 250; n++) {
    results.push(await c.send({ target: "bb-full", data: payload(n, 2 * MiB) }).then(() => undefined, (err: unknown) => ConnectError.from(err)));
  }
  const refused = results.filter((r) => r !== undefined);
  assert.equal(250 - refused.length, INBOX_BYTES / (2 * MiB), "sends accepted: the inbox's bytes over each one's");
  for (const e of refused) {
    assert.equal(e.code, Code.ResourceExhausted, e.message);
    assert.match(e.rawMessage, /inbox of container "bb-full" is full: 16 MiB waiting, 2 MiB more would pass the server's maxInboxBytes of 16 MiB \(16777216 bytes\)/);
  }
});
