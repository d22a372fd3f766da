/**
 * The built-in workers' behaviour, each run on an in-memory container runtime (no server).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodePayload, encodePayload, type Payload } from "../src/api/payload.js";
import { createContainerRuntime, type ResultError } from "../src/workers/runtime/container-runtime.js";
import type { WorkerDefinition } from "../src/workers/runtime/define-worker.js";
import type { CallOptions, CallReply } from "../src/transport/session.js";
import { builtinWorkers, calculate } from "../src/workers/builtin/index.js";

interface Result {
  payload: Payload | undefined;
  error: ResultError | undefined;
}

/** Runs a worker in memory; deliveries go in, results, logs and outgoing calls are recorded. */
export function runInMemory<P>(
  worker: WorkerDefinition<P>,
  params: P,
  options: { concurrency?: number; onCall?: (o: CallOptions) => CallReply | Promise<CallReply> } = {},
) {
  const waiting = new Map<number, (r: Result) => void>();
  const logs: string[] = [];
  const calls: CallOptions[] = [];
  let logWaiters: (() => void)[] = [];
  const runtime = createContainerRuntime<P>({
    name: "c1",
    params,
    concurrency: options.concurrency,
    link: {
      call: async (o) => {
        calls.push(o);
        return options.onCall ? options.onCall(o) : { data: new Uint8Array(0), contentType: "", container: "x" };
      },
      result: (id, payload, error) => waiting.get(id)?.({ payload, error }),
      log: (_stream, lines) => {
        logs.push(...lines);
        logWaiters.forEach((w) => w());
      },
    },
  });
  const outcome = runtime.run(worker.run);
  let nextId = 1;
  const deliver = (value: unknown, expectsReply: boolean, timeoutMs = 0): Promise<Result> => {
    const id = nextId++;
    const p = new Promise<Result>((r) => waiting.set(id, r));
    const pl = encodePayload(value);
    runtime.deliver({ id, data: pl.data, contentType: pl.contentType, expectsReply, timeoutMs, sender: "", attempt: 1 });
    return p;
  };
  return {
    runtime,
    logs,
    calls,
    outcome,
    deliver,
    send: (value: unknown) => deliver(value, false),
    async request(value: unknown): Promise<unknown> {
      const r = await deliver(value, true);
      if (r.error) throw new ConnectError(r.error.message, r.error.code as Code);
      return decodePayload(r.payload!.data, r.payload!.contentType);
    },
    /** Resolves once a log line matches. */
    waitLog(re: RegExp): Promise<string> {
      return new Promise((resolve) => {
        const check = () => {
          const line = logs.find((l) => re.test(l));
          if (line !== undefined) {
            logWaiters = logWaiters.filter((w) => w !== check);
            resolve(line);
          }
        };
        logWaiters.push(check);
        check();
      });
    },
  };
}

test("echo_worker replies and logs `${prefix}: ${value}`, default prefix ECHO", async () => {
  const w = runInMemory(builtinWorkers.echo_worker as WorkerDefinition<unknown>, {});
  assert.equal(await w.request("hi"), "ECHO: hi");
  assert.equal(await w.request({ a: 1 }), 'ECHO: {"a":1}');
  const ack = await w.send("fire");
  assert.equal(ack.error, undefined);
  await w.waitLog(/^ECHO: fire$/);
  const p = runInMemory(builtinWorkers.echo as WorkerDefinition<unknown>, { prefix: "HELLO" });
  assert.equal(await p.request("x"), "HELLO: x");
  w.runtime.stop(0);
  p.runtime.stop(0);
  assert.deepEqual(await w.outcome, { ok: true });
});

test("processor_worker transforms by operation and forwards to forward_to", async () => {
  for (const [operation, input, want] of [
    ["uppercase", "Hello", "HELLO"],
    ["lowercase", "Hello", "hello"],
    ["reverse", "abc😀", "😀cba"],
    [undefined, "abc", "ABC"],
  ] as const) {
    const w = runInMemory(builtinWorkers.processor_worker as WorkerDefinition<unknown>, { operation, forward_to: "next" });
    assert.equal(await w.request(input), want, `operation ${operation}`);
    assert.equal(w.calls.length, 1);
    assert.equal(w.calls[0]!.target, "next");
    assert.equal(w.calls[0]!.expectsReply, false);
    assert.equal(decodePayload(w.calls[0]!.data, w.calls[0]!.contentType), want);
    w.runtime.stop(0);
  }
});

test("processor_worker refuses non-strings and unknown operations", async () => {
  const w = runInMemory(builtinWorkers.processor_worker as WorkerDefinition<unknown>, {});
  await assert.rejects(w.request(42), (e: ConnectError) => e.code === Code.InvalidArgument && /expected a string/.test(e.rawMessage));
  assert.deepEqual(await w.request({ seq: 3, text: "message 3" }), { seq: 3, text: "MESSAGE 3" }, "a generator message's text");
  assert.equal(w.calls.length, 0, "nothing forwarded without forward_to");
  w.runtime.stop(0);
  const bad = runInMemory(builtinWorkers.processor_worker as WorkerDefinition<unknown>, { operation: "shout" });
  const outcome = await bad.outcome;
  assert.equal(outcome.ok, false);
  assert.match(String((outcome as { error: Error }).error.message), /unknown operation "shout"/);
});

test("processor_worker survives a failing forward_to", async () => {
  const w = runInMemory(builtinWorkers.processor_worker as WorkerDefinition<unknown>, { forward_to: "gone" }, {
    onCall: () => {
      throw new ConnectError('no container or service "gone"', Code.NotFound);
    },
  });
  assert.equal(await w.request("a"), "A");
  await w.waitLog(/could not forward to gone/);
  w.runtime.stop(0);
});

test("aggregator_worker reports every window_size messages as {count, messages, sample}", async () => {
  const w = runInMemory(builtinWorkers.aggregator_worker as WorkerDefinition<unknown>, { window_size: 3 });
  // concurrency 1: a request before the first report cannot wait; it gets the partial window.
  await w.send("a");
  assert.deepEqual(await w.request(null), { count: 1, messages: ["a"], sample: "a", partial: true });
  await w.send("b");
  await w.send("c");
  await w.waitLog(/aggregated 3 messages \(total 3\), sample: a/);
  assert.deepEqual(await w.request(null), { count: 3, messages: ["a", "b", "c"], sample: "a" });
  for (const v of ["d", "e", "f"]) await w.send(v);
  assert.deepEqual(await w.request(null), { count: 6, messages: ["d", "e", "f"], sample: "d" });
  w.runtime.stop(0);
});

test("aggregator_worker with concurrency > 1: a request waits for the next report", async () => {
  const w = runInMemory(builtinWorkers.aggregator_worker as WorkerDefinition<unknown>, { window_size: 2 }, { concurrency: 2 });
  const report = w.request(null);
  let answered = false;
  void report.then(() => (answered = true));
  await w.send(1);
  assert.equal(answered, false, "no report after one message");
  await w.send(2);
  assert.deepEqual(await report, { count: 2, messages: [1, 2], sample: 1 });
  w.runtime.stop(0);
});

test("generator_worker sends count messages {seq, text} to target, then finishes", async () => {
  const w = runInMemory(builtinWorkers.generator_worker as WorkerDefinition<unknown>, { count: 3, interval: 0.01, target: "sink" });
  assert.deepEqual(await w.outcome, { ok: true });
  assert.deepEqual(
    w.calls.map((c) => [c.target, decodePayload(c.data, c.contentType)]),
    [1, 2, 3].map((seq) => ["sink", { seq, text: `message ${seq}` }]),
  );
  const missing = runInMemory(builtinWorkers.generator as WorkerDefinition<unknown>, {});
  const outcome = await missing.outcome;
  assert.equal(outcome.ok, false);
  assert.match((outcome as { error: Error }).error.message, /target is required/);
});

test("generator_worker stops early when the container is stopped", async () => {
  const w = runInMemory(builtinWorkers.generator_worker as WorkerDefinition<unknown>, { count: 1000, interval: 10, target: "sink" });
  await w.waitLog(/sent message 1\/1000/);
  w.runtime.stop(5000);
  assert.deepEqual(await w.outcome, { ok: true });
  assert.equal(w.calls.length, 1);
});

test("calculator_worker computes sum, product, average and refuses bad input", async () => {
  const w = runInMemory(builtinWorkers.calculator_worker as WorkerDefinition<unknown>, {});
  assert.equal(await w.request({ operation: "sum", operands: [1, 2, 3.5] }), 6.5);
  assert.equal(await w.request({ operation: "product", operands: [2, 3, 4] }), 24);
  assert.equal(await w.request({ operation: "average", operands: [1, 2, 3, 4] }), 2.5);
  await assert.rejects(
    w.request({ operation: "modulo", operands: [1] }),
    (e: ConnectError) => e.code === Code.InvalidArgument && /unknown operation "modulo"/.test(e.rawMessage),
  );
  await assert.rejects(
    w.request({ operation: "sum", operands: [1, "2"] }),
    (e: ConnectError) => e.code === Code.InvalidArgument && /operands must be an array of numbers/.test(e.rawMessage),
  );
  await assert.rejects(w.request({ operation: "average", operands: [] }), /at least one operand/);
  const ack = await w.send({ operation: "sum", operands: [1] });
  assert.equal(ack.error, undefined, "a non-request is acked, not failed");
  await w.waitLog(/warning: calculator_worker only answers requests/);
  assert.equal(await w.request({ operation: "sum", operands: [] }), 0, "still serving after the warning");
  w.runtime.stop(0);
  assert.deepEqual(await w.outcome, { ok: true });
  assert.throws(() => calculate(null), /expected \{operation, operands\}/);
});
