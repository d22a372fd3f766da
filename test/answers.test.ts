/**
 * How the router answers its callers (answers.ts), in memory: each call answered once, on the
 * caller's stream or through a unary caller's callback, a request leaving the deadline queue and
 * its caller's table when answered, its latency timed only when it was measured from its start.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code } from "@connectrpc/connect";
import type { ServerFrame } from "../src/gen/k4s/v1/worker_service_pb.js";
import { createAnswers } from "../src/server/messaging/answers.js";
import { createDeadlineQueue } from "../src/server/messaging/deadline-queue.js";
import { Envelope, type CallAnswer, type Caller } from "../src/server/messaging/envelope.js";
import type { Letter } from "../src/server/messaging/mailbox.js";
import { createMetrics } from "../src/server/metrics.js";

function setup() {
  const expired: Letter[] = [];
  const deadlines = createDeadlineQueue<Letter>((l) => expired.push(l));
  const metrics = createMetrics();
  const answers = createAnswers({ deadlines, metrics });
  const frames: ServerFrame[] = [];
  const caller: Caller<never> = { closed: false, push: (f) => frames.push(f), calls: new Map() };
  return { deadlines, metrics, answers, frames, caller: caller as unknown as Caller<Letter["mailbox"]> };
}

/** A request or send from a stream caller (registered in its table), or from a unary caller. */
function letter(s: ReturnType<typeof setup>, o: { expectsReply: boolean; stream?: boolean; callId?: bigint; onAnswer?: (a: CallAnswer) => void }): Letter {
  const env = new Envelope({
    callId: o.callId ?? 7n,
    origin: o.stream ? s.caller : undefined,
    onAnswer: o.onAnswer,
    data: new Uint8Array([1]),
    contentType: "x",
    expectsReply: o.expectsReply,
    deadline: Date.now() + 60_000,
  }) as Letter;
  if (o.stream) s.caller.calls.set(env.callId, env);
  return env;
}

async function observations(s: ReturnType<typeof setup>): Promise<Record<string, number>> {
  const m = await s.metrics.registry.getSingleMetric("k4s_request_duration_seconds")!.get();
  return Object.fromEntries(m.values.filter((v) => (v as { metricName?: string }).metricName === "k4s_request_duration_seconds_count").map((v) => [String(v.labels.code), v.value]));
}

test("answers: a stream caller's request gets one CallResult, leaves the deadline queue and the caller's table", () => {
  const s = setup();
  const env = letter(s, { expectsReply: true, stream: true });
  s.deadlines.add(env);
  s.answers.reply(env, "c1", new Uint8Array([9]), "text/plain");
  // A second answer of any kind is dropped.
  s.answers.fail(env, Code.Unavailable, "late");
  s.answers.reply(env, "c2", new Uint8Array([8]), "");
  assert.equal(s.frames.length, 1);
  const r = s.frames[0]!.frame;
  assert.equal(r.case, "callResult");
  assert.deepEqual([r.value!.id, [...(r.value as { data: Uint8Array }).data], (r.value as { contentType: string }).contentType, (r.value as { container: string }).container, (r.value as { error?: unknown }).error], [7n, [9], "text/plain", "c1", undefined]);
  assert.equal(s.deadlines.size, 0);
  assert.equal(s.caller.calls.size, 0);
});

test("answers: a stream caller's failed call gets one error CallResult naming the container", () => {
  const s = setup();
  const env = letter(s, { expectsReply: true, stream: true, callId: 3n });
  s.deadlines.add(env);
  s.answers.fail(env, Code.ResourceExhausted, "full", "c9");
  s.answers.fail(env, Code.Unavailable, "again");
  assert.equal(s.frames.length, 1);
  const v = s.frames[0]!.frame.value as { id: bigint; container: string; error?: { code: number; message: string } };
  assert.deepEqual([v.id, v.container, v.error?.code, v.error?.message], [3n, "c9", Code.ResourceExhausted, "full"]);
  assert.equal(s.deadlines.size, 0);
  assert.equal(s.caller.calls.size, 0);
});

test("answers: a unary caller gets its answer once through its callback; a send is accepted with no data", () => {
  const s = setup();
  const got: CallAnswer[] = [];
  const req = letter(s, { expectsReply: true, onAnswer: (a) => got.push(a) });
  s.answers.reply(req, "c1", new Uint8Array([5]), "text/plain");
  s.answers.reply(req, "c1", new Uint8Array([6]), "text/plain");
  const send = letter(s, { expectsReply: false, onAnswer: (a) => got.push(a) });
  s.answers.accept(send, "c2");
  const failed = letter(s, { expectsReply: true, onAnswer: (a) => got.push(a) });
  s.answers.fail(failed, Code.NotFound, "no such container");
  assert.deepEqual(
    got.map((a) => [a.code, a.message, [...a.data], a.contentType, a.container]),
    [
      [0, "", [5], "text/plain", "c1"],
      [0, "", [], "", "c2"],
      [Code.NotFound, "no such container", [], "", ""],
    ],
  );
  assert.equal(s.frames.length, 0, "nothing on a stream");
  // A call with neither a stream nor a callback (an internal one) is answered without one.
  s.answers.reply(letter(s, { expectsReply: true }), "c1", new Uint8Array(), "");
  const journaled = letter(s, { expectsReply: false });
  journaled.journalKey = "/journal/x";
  s.answers.fail(journaled, Code.Unavailable, "gone");
});

test("answers: a send's answer leaves its caller's table alone; forget drops a request, not a send", () => {
  const s = setup();
  const send = letter(s, { expectsReply: false, stream: true, callId: 1n });
  s.answers.accept(send, "c1");
  assert.equal(s.caller.calls.get(1n), send, "a send stays until its worker acks it");
  const req = letter(s, { expectsReply: true, stream: true, callId: 2n });
  s.answers.forget(send);
  s.answers.forget(req);
  assert.deepEqual([...s.caller.calls.keys()], [1n]);
  s.answers.forget(letter(s, { expectsReply: true })); // no stream: nothing to drop
});

test("answers: a request's latency is observed once, under its code, only when it was timed", async () => {
  const s = setup();
  const timed = letter(s, { expectsReply: true, stream: true, callId: 1n });
  timed.started = performance.now();
  s.answers.reply(timed, "c", new Uint8Array(), "");
  const failed = letter(s, { expectsReply: true, stream: true, callId: 2n });
  failed.started = performance.now();
  s.answers.fail(failed, Code.DeadlineExceeded, "late");
  s.answers.fail(failed, Code.DeadlineExceeded, "late");
  s.answers.reply(letter(s, { expectsReply: true, stream: true, callId: 3n }), "c", new Uint8Array(), ""); // not timed
  const send = letter(s, { expectsReply: false, stream: true, callId: 4n });
  send.started = performance.now();
  s.answers.accept(send, "c"); // a send is not a round trip
  assert.deepEqual(await observations(s), { OK: 1, DEADLINE_EXCEEDED: 1 });
});

test("a refusal is marked on the caller's stream (CallResult.refused) only for a call no worker had here; a failure never is", () => {
  const s = setup();
  const refusedOf = (f: ServerFrame | undefined) => (f?.frame.case === "callResult" ? f.frame.value.refused : undefined);
  s.answers.refuse(letter(s, { expectsReply: true, stream: true, callId: 1n }), Code.NotFound, "no container named x");
  assert.equal(refusedOf(s.frames.at(-1)), true, "refused before any delivery");
  s.answers.fail(letter(s, { expectsReply: true, stream: true, callId: 2n }), Code.NotFound, "no such order", "c");
  assert.equal(refusedOf(s.frames.at(-1)), false, "a worker's error");
  const delivered = letter(s, { expectsReply: true, stream: true, callId: 3n });
  delivered.attempt = 1;
  s.answers.refuse(delivered, Code.Unavailable, "gone");
  assert.equal(refusedOf(s.frames.at(-1)), false, "delivered once: never a refusal");
  assert.equal(s.frames.length, 3);
});
