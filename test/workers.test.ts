/**
 * The worker side: payload encoding, the container runtime's rules (in memory), the Connect
 * session and the worker host against a scripted WorkerService (a real grpc-js server speaking
 * the protocol frame by frame), and end to end through the real k4s server when it is there.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ConnectResponseSchema,
  ServerFrameSchema,
  WorkerService,
  type ConnectResponse,
  type WorkerFrame,
} from "../src/gen/k4s/v1/worker_service_pb.js";
import { addService, type ServiceHandlers } from "../src/server/grpc-adapter.js";
import { decodePayload, encodePayload } from "../src/api/payload.js";
import { createContainerRuntime, type ResultError } from "../src/workers/runtime/container-runtime.js";
import { defineWorker, type WorkerDefinition } from "../src/workers/runtime/define-worker.js";
import { openSession } from "../src/transport/session.js";
import { runWorkerHost } from "../src/workers/runtime/worker-host.js";
import { attach } from "../src/workers/runtime/attach.js";
import type { CallOptions } from "../src/transport/session.js";

// ---------------------------------------------------------------- payload

test("payload: JSON by default, bytes as octet-stream, text when asked", () => {
  const j = encodePayload({ a: [1, "x"] });
  assert.equal(j.contentType, "application/json");
  assert.equal(new TextDecoder().decode(j.data), '{"a":[1,"x"]}');
  assert.deepEqual(decodePayload(j.data, j.contentType), { a: [1, "x"] });
  const b = encodePayload(new Uint8Array([1, 2]));
  assert.equal(b.contentType, "application/octet-stream");
  assert.deepEqual(decodePayload(b.data, b.contentType), new Uint8Array([1, 2]));
  const t = encodePayload("héllo", "text/plain");
  assert.equal(decodePayload(t.data, t.contentType), "héllo");
  assert.equal(decodePayload(encodePayload("s").data, ""), "s", "empty content type decodes as JSON");
  assert.equal(decodePayload(encodePayload(undefined).data, "application/json"), undefined);
  assert.throws(() => decodePayload(new TextEncoder().encode("{nope"), "application/json"), (e: ConnectError) => e.code === Code.InvalidArgument);
  assert.throws(() => encodePayload({ n: 1 }, "text/plain"), /must be a string or a Uint8Array/);
  assert.throws(() => encodePayload(() => 1), /cannot be encoded as JSON/);
});

// ---------------------------------------------------------------- runtime rules, in memory

function memoryRuntime<P>(worker: WorkerDefinition<P>, params: P, concurrency = 1) {
  const results = new Map<number, { data?: unknown; error?: ResultError }>();
  const waiters = new Map<number, () => void>();
  const calls: CallOptions[] = [];
  const rt = createContainerRuntime<P>({
    name: "m",
    params,
    concurrency,
    link: {
      call: async (o) => {
        calls.push(o);
        const reply = encodePayload({ echoed: decodePayload(o.data, o.contentType) });
        return { ...reply, container: "other" };
      },
      result: (id, payload, error) => {
        results.set(id, { data: payload ? decodePayload(payload.data, payload.contentType) : undefined, error });
        waiters.get(id)?.();
      },
      log: () => {},
    },
  });
  const outcome = rt.run(worker.run);
  let next = 1;
  return {
    rt,
    calls,
    outcome,
    deliver(value: unknown, expectsReply: boolean, timeoutMs = 0) {
      const id = next++;
      const done = new Promise<{ data?: unknown; error?: ResultError }>((r) => waiters.set(id, () => r(results.get(id)!)));
      const p = encodePayload(value);
      rt.deliver({ id, data: p.data, contentType: p.contentType, expectsReply, timeoutMs, sender: "s", attempt: 1 });
      return { id, done };
    },
  };
}

test("runtime: the for-await loop acks what it leaves open, and fails requests it did not answer", async () => {
  const seen: unknown[] = [];
  const m = memoryRuntime(
    defineWorker(async (ctx) => {
      for await (const msg of ctx.messages) {
        seen.push(msg.value);
        if (msg.value === "answer") msg.reply("yes");
      }
    }),
    {},
  );
  const a = m.deliver("plain", false);
  const b = m.deliver("answer", true);
  const c = m.deliver("silent", true);
  assert.deepEqual(await a.done, { data: undefined, error: undefined });
  assert.deepEqual(await b.done, { data: "yes", error: undefined });
  m.rt.stop(1000);
  assert.deepEqual(await c.done, { data: undefined, error: { code: Code.Unknown, message: "handler finished without replying" } });
  assert.deepEqual(await m.outcome, { ok: true });
  assert.deepEqual(seen, ["plain", "answer", "silent"]);
});

test("runtime: a second next() while one waits is refused as a rejected promise (never a throw), and the loop goes on", async () => {
  let second: Promise<unknown> | undefined;
  const seen: unknown[] = [];
  const m = memoryRuntime(
    defineWorker(async (ctx) => {
      const it = ctx.messages[Symbol.asyncIterator]();
      const first = it.next();
      second = it.next();
      second.catch(() => {});
      for (let r = await first; !r.done; r = await it.next()) seen.push(r.value.value);
    }),
    {},
  );
  const a = m.deliver("one", false);
  await assert.rejects(
    () => (second ?? Promise.reject(new Error("the worker did not call next() twice"))) as Promise<unknown>,
    (e: ConnectError) => e.code === Code.FailedPrecondition && /messages are already being read/.test(e.message),
  );
  assert.deepEqual(await a.done, { data: undefined, error: undefined });
  m.rt.stop(1000);
  await m.outcome;
  assert.deepEqual(seen, ["one"]);
});

test("runtime: an exception out of the loop fails the message with its message and ends the worker", async () => {
  const m = memoryRuntime(
    defineWorker(async (ctx) => {
      for await (const msg of ctx.messages) {
        if (msg.value === "boom") throw new Error("worker exploded");
      }
    }),
    {},
  );
  const r = m.deliver("boom", true);
  assert.deepEqual(await r.done, { data: undefined, error: { code: Code.Unknown, message: "worker exploded" } });
  const outcome = await m.outcome;
  assert.equal(outcome.ok, false);
});

test("runtime: handle() replies the return value, keeps ConnectError codes, runs up to concurrency at once", async () => {
  let inFlight = 0;
  let maxInFlight = 0;
  const gates: (() => void)[] = [];
  const m = memoryRuntime(
    defineWorker(async (ctx) => {
      await ctx.handle(async (msg) => {
        if (msg.value === "denied") throw new ConnectError("not yours", Code.PermissionDenied);
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise<void>((r) => gates.push(r));
        inFlight--;
        return `done ${msg.value}`;
      });
    }),
    {},
    2,
  );
  assert.deepEqual(await m.deliver("denied", true).done, { data: undefined, error: { code: Code.PermissionDenied, message: "not yours" } });
  const rs = [1, 2, 3].map((i) => m.deliver(i, true));
  while (gates.length < 2) await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  assert.equal(gates.length, 2, "the third waits for a free slot");
  gates.splice(0).forEach((g) => g());
  while (gates.length < 1) await new Promise((r) => setImmediate(r));
  gates.splice(0).forEach((g) => g());
  assert.deepEqual((await Promise.all(rs.map((r) => r.done))).map((r) => r.data), ["done 1", "done 2", "done 3"]);
  assert.equal(maxInFlight, 2);
  m.rt.stop(0);
  assert.deepEqual(await m.outcome, { ok: true });
});

test("runtime: thousands of deliveries queued at once reach both loops in order, each settled once, handle() never past its concurrency", async () => {
  const N = 5000;
  for (const loop of ["for-await", "handle"] as const) {
    const seen: number[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const m = memoryRuntime(
      defineWorker(async (ctx) => {
        if (loop === "for-await") {
          for await (const msg of ctx.messages) {
            seen.push(msg.value as number);
            // Every 100th waits a turn, so deliveries pile up behind the loop.
            if ((msg.value as number) % 100 === 0) await new Promise((r) => setImmediate(r));
            msg.reply(msg.value);
          }
        } else {
          await ctx.handle(async (msg) => {
            seen.push(msg.value as number);
            inFlight++;
            maxInFlight = Math.max(maxInFlight, inFlight);
            await new Promise((r) => setImmediate(r));
            inFlight--;
            return msg.value;
          });
        }
      }),
      {},
      16,
    );
    const first = Array.from({ length: N / 2 }, (_, i) => m.deliver(i, true));
    await new Promise((r) => setImmediate(r));
    const second = Array.from({ length: N / 2 }, (_, i) => m.deliver(N / 2 + i, true));
    const results = await Promise.all([...first, ...second].map((r) => r.done));
    assert.deepEqual(
      results.map((r) => r.data),
      Array.from({ length: N }, (_, i) => i),
      `${loop}: every delivery answered with its own value`,
    );
    assert.deepEqual(seen, Array.from({ length: N }, (_, i) => i), `${loop}: taken in the order delivered`);
    assert.equal(m.rt.unsettled, 0);
    if (loop === "handle") assert.equal(maxInFlight, 16, "handle() runs up to its concurrency and no more");
    m.rt.stop(0);
    assert.deepEqual(await m.outcome, { ok: true });
  }
});

test("runtime: ctx.request inside a handler names its parent delivery and inherits the deadline", async () => {
  const m = memoryRuntime(
    defineWorker(async (ctx) => {
      await ctx.handle(async (msg) => {
        assert.equal(ctx.deadline, msg.deadline, "ctx.deadline is the current message's");
        return ctx.request("other", msg.value);
      });
    }),
    {},
  );
  const r = m.deliver("q", true, 2000);
  assert.deepEqual(await r.done, { data: { echoed: "q" }, error: undefined });
  const call = m.calls[0]!;
  assert.equal(call.parentDelivery, r.id);
  assert.equal(call.expectsReply, true);
  assert.equal(call.sender, "m");
  assert.ok(call.timeoutMs! > 0 && call.timeoutMs! <= 2000, `inherited timeout ${call.timeoutMs}`);
  m.rt.stop(0);
});

test("runtime: a message's signal aborts on cancel; stop ends messages then aborts ctx.signal after the grace", async () => {
  let ctxSignal: AbortSignal | undefined;
  const m = memoryRuntime(
    defineWorker(async (ctx) => {
      ctxSignal = ctx.signal;
      await ctx.handle(
        (msg) =>
          new Promise((resolve) => msg.signal.addEventListener("abort", () => resolve(`aborted: ${ConnectError.from(msg.signal.reason).rawMessage}`))),
      );
      assert.equal(ctx.stopping.aborted, true);
    }),
    {},
  );
  const r = m.deliver("wait", true, 5000);
  await new Promise((res) => setImmediate(res));
  m.rt.cancel(r.id, "caller cancelled");
  assert.match(String((await r.done).data), /aborted: caller cancelled/);
  const r2 = m.deliver("wait again", true);
  await new Promise((res) => setImmediate(res));
  m.rt.stop(30);
  assert.equal(ctxSignal!.aborted, false, "not cut off before the grace period");
  assert.match(String((await r2.done).data), /aborted: .*stopped/);
  assert.equal(ctxSignal!.aborted, true);
  assert.deepEqual(await m.outcome, { ok: true });
});

test("runtime: deliveries of a broken session are abandoned: their late results are never sent", async () => {
  const sent: number[] = [];
  const gates: (() => void)[] = [];
  const rt = createContainerRuntime({
    name: "a",
    params: {},
    link: { call: async () => ({ data: new Uint8Array(0), contentType: "", container: "" }), result: (id) => sent.push(id), log: () => {} },
  });
  const outcome = rt.run(async (ctx) => {
    await ctx.handle(async (msg) => {
      if (msg.value === "slow") await new Promise<void>((r) => gates.push(r));
      return msg.value;
    });
  });
  const d = (id: number, value: string) => {
    const p = encodePayload(value);
    rt.deliver({ id, data: p.data, contentType: p.contentType, expectsReply: true, timeoutMs: 0, sender: "", attempt: 1 });
  };
  d(1, "slow");
  while (gates.length === 0) await new Promise((r) => setImmediate(r));
  rt.abandonDeliveries("session lost");
  // The new session reuses id 1 for another message.
  gates[0]!();
  d(1, "fresh");
  while (sent.length === 0) await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(sent, [1], "one result only: the fresh delivery's");
  assert.equal(rt.unsettled, 0);
  rt.stop(0);
  assert.deepEqual(await outcome, { ok: true });
});

// ---------------------------------------------------------------- a scripted WorkerService

type FrameInit = MessageInitShape<typeof ServerFrameSchema>["frame"];

interface FakeConn {
  /** Every frame received, in order. */
  frames: WorkerFrame[];
  /** Number of ConnectRequests received (frames arrive batched). */
  batches: number;
  metadata: grpc.Metadata;
  send(...frames: FrameInit[]): void;
  /** Ends the stream, with an error status when given. */
  end(err?: ConnectError): void;
  /** Resolves with the first received frame (from index `from`) matching pred. */
  waitFor(pred: (f: WorkerFrame) => boolean, from?: number): Promise<WorkerFrame>;
}

interface Fake {
  address: string;
  port: number;
  conns: FakeConn[];
  /** Resolves with the n-th connection (0-based) once it opened. */
  conn(n: number): Promise<FakeConn>;
  stop(): Promise<void>;
}

/**
 * Answers like a tiny server: Welcome to Hello/Attach, CallResults that echo the payload, and a
 * heartbeat for each heartbeat (as a real server keeps an idle session alive), so a session does
 * not declare this server lost while a slow machine starts a spawned process.
 */
function standardBehaviour(c: FakeConn, f: WorkerFrame): void {
  const fr = f.frame;
  if (fr.case === "heartbeat") c.send({ case: "heartbeat", value: { sentAtMs: BigInt(Date.now()) } });
  if (fr.case === "hello") c.send({ case: "welcome", value: { sessionId: "s1", name: fr.value.name || "anon", heartbeatIntervalMs: 1000 } });
  if (fr.case === "attach") c.send({ case: "welcome", value: { sessionId: "s2", name: fr.value.host, heartbeatIntervalMs: 1000 } });
  // A live server answers a quiet peer's heartbeat; without it, a peer slowed down by a loaded
  // machine would declare this one silent and reconnect.
  if (fr.case === "heartbeat") c.send({ case: "heartbeat", value: { sentAtMs: fr.value.sentAtMs } });
  if (fr.case === "call") {
    const call = fr.value;
    if (call.target === "slow") return;
    if (call.target === "missing") {
      c.send({ case: "callResult", value: { id: call.id, error: { code: Code.NotFound, message: 'no container or service "missing"' } } });
      return;
    }
    c.send({ case: "callResult", value: { id: call.id, data: call.expectsReply ? call.data : new Uint8Array(0), contentType: call.contentType, container: call.target } });
  }
}

async function startFake(options: { port?: number; behaviour?: (c: FakeConn, f: WorkerFrame) => void } = {}): Promise<Fake> {
  const behaviour = options.behaviour ?? standardBehaviour;
  const conns: FakeConn[] = [];
  const connWaiters: (() => void)[] = [];
  const server = new grpc.Server();
  const impl = {
    connect(reqs: AsyncIterable<{ frames: WorkerFrame[] }>, ctx: { metadata: grpc.Metadata; signal: AbortSignal }) {
      const queue: ConnectResponse[] = [];
      let wake: (() => void) | undefined;
      let ended = false;
      let failure: ConnectError | undefined;
      const frameWaiters = new Set<() => void>();
      const conn: FakeConn = {
        frames: [],
        batches: 0,
        metadata: ctx.metadata,
        send(...frames) {
          queue.push(create(ConnectResponseSchema, { frames: frames.map((frame) => create(ServerFrameSchema, { frame })) }));
          wake?.();
        },
        end(err) {
          ended = true;
          failure = err;
          wake?.();
        },
        waitFor(pred, from = 0) {
          return new Promise((resolve, reject) => {
            const timer = setTimeout(
              () => reject(new Error(`fake server: frame not received in time; got ${JSON.stringify(conn.frames.map((f) => f.frame.case))}`)),
              20_000,
            );
            timer.unref();
            const check = () => {
              const f = conn.frames.slice(from).find(pred);
              if (f) {
                clearTimeout(timer);
                frameWaiters.delete(check);
                resolve(f);
              }
            };
            frameWaiters.add(check);
            check();
          });
        },
      };
      conns.push(conn);
      connWaiters.splice(0).forEach((w) => w());
      void (async () => {
        try {
          for await (const req of reqs) {
            conn.batches++;
            for (const f of req.frames) {
              conn.frames.push(f);
              behaviour(conn, f);
            }
            frameWaiters.forEach((w) => w());
          }
        } catch {
          // the client went away
        }
        conn.end();
      })();
      ctx.signal.addEventListener("abort", () => conn.end());
      return (async function* () {
        for (;;) {
          while (queue.length > 0) yield queue.shift()!;
          if (ended) {
            if (failure) throw failure;
            return;
          }
          await new Promise<void>((r) => (wake = r));
        }
      })();
    },
  };
  addService(server, WorkerService, impl as unknown as ServiceHandlers<typeof WorkerService>);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${options.port ?? 0}`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    port,
    conns,
    conn(n) {
      return new Promise((resolve) => {
        const check = () => (conns[n] ? resolve(conns[n]!) : connWaiters.push(check));
        check();
      });
    },
    async stop() {
      for (const c of conns) c.end();
      server.forceShutdown();
    },
  };
}

test("session: calls multiplexed and batched, codes kept, cancel sends CancelCall, token as bearer header", async () => {
  const fake = await startFake();
  const session = openSession({ address: fake.address, token: "sekret", hello: { role: "client", name: "c" } });
  try {
    await session.ready;
    assert.equal(session.name, "c");
    const conn = await fake.conn(0);
    assert.equal(conn.metadata.get("authorization")[0], "Bearer sekret");
    const batchesBefore = conn.batches;
    const n = 200;
    const replies = await Promise.all(
      Array.from({ length: n }, (_, i) => {
        const p = encodePayload({ i });
        return session.call({ target: "echo", data: p.data, contentType: p.contentType, expectsReply: true });
      }),
    );
    assert.deepEqual(
      replies.map((r) => decodePayload(r.data, r.contentType)),
      Array.from({ length: n }, (_, i) => ({ i })),
    );
    assert.ok(conn.batches - batchesBefore <= 3, `${n} calls took ${conn.batches - batchesBefore} stream messages`);
    await assert.rejects(
      session.call({ target: "missing", data: new Uint8Array(0), contentType: "", expectsReply: false }),
      (e: ConnectError) => e.code === Code.NotFound && /no container or service "missing"/.test(e.rawMessage),
    );
    const ac = new AbortController();
    const slow = session.call({ target: "slow", data: new Uint8Array(0), contentType: "", expectsReply: true, signal: ac.signal });
    const callFrame = await conn.waitFor((f) => f.frame.case === "call" && f.frame.value.target === "slow");
    ac.abort();
    await assert.rejects(slow, (e: ConnectError) => e.code === Code.Canceled);
    const cancel = await conn.waitFor((f) => f.frame.case === "cancelCall");
    assert.equal((cancel.frame.value as { id: bigint }).id, (callFrame.frame.value as { id: bigint }).id);
  } finally {
    await session.close();
    await fake.stop();
  }
});

for (const transport of ["lean", "grpc-js"] as const) {
  test(`session over ${transport}: the same headers, payloads of every size back intact, a server's status with its code and message`, async () => {
    const fake = await startFake({
      behaviour: (c, f) => {
        if (f.frame.case === "call" && f.frame.value.target === "refuse") c.end(new ConnectError("refused: 100% sure, über", Code.FailedPrecondition));
        else standardBehaviour(c, f);
      },
    });
    const session = openSession({ address: fake.address, transport, token: "sekret", headers: () => ({ "X-K4s-Probe": "p1" }), hello: { role: "client", name: "c" } });
    try {
      await session.ready;
      const conn = await fake.conn(0);
      assert.equal(conn.metadata.get("authorization")[0], "Bearer sekret");
      assert.equal(conn.metadata.get("x-k4s-probe")[0], "p1");
      // Which client spoke: the lean one names itself, grpc-js does.
      assert.match(String(conn.metadata.get("user-agent")[0]), transport === "lean" ? /^k4s-worker-stream / : /^grpc-node-js\//);
      // Sizes around the codec's detach threshold (16 KiB) and HTTP/2's 16 KiB DATA frames, up to 3 MiB.
      const sizes = [0, 1, 100, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 7, 64 * 1024, 200_000, 3 * 1024 * 1024];
      const payloads = sizes.map((n, i) => Uint8Array.from({ length: n }, (_, k) => (k * 31 + i) & 0xff));
      const replies = await Promise.all(payloads.map((data) => session.call({ target: "echo", data, contentType: "application/octet-stream", expectsReply: true })));
      replies.forEach((r, i) => assert.ok(Buffer.from(r.data).equals(Buffer.from(payloads[i]!)), `payload of ${sizes[i]} bytes`));
      // Many small calls at once: batched both ways, each answered once.
      const many = await Promise.all(Array.from({ length: 2000 }, (_, i) => session.call({ target: "echo", data: new Uint8Array([i & 0xff, i >> 8]), contentType: "", expectsReply: true })));
      many.forEach((r, i) => assert.deepEqual([...r.data], [i & 0xff, i >> 8]));
      const refused = session.call({ target: "refuse", data: new Uint8Array(0), contentType: "", expectsReply: true });
      await assert.rejects(refused, (e: ConnectError) => e.code === Code.Unavailable && e.rawMessage === "connection to k4s server lost: refused: 100% sure, über");
      // Not reconnecting: the server's code and message (percent-encoded on the wire) end the session.
      await assert.rejects(session.done, (e: ConnectError) => e.code === Code.FailedPrecondition && e.rawMessage === "refused: 100% sure, über");
    } finally {
      await session.close();
      await fake.stop();
    }
  });
}

test("session: a broken stream fails calls in flight with UNAVAILABLE, reconnects, and new calls go through", async () => {
  let fake = await startFake();
  const port = fake.port;
  let hellos = 0;
  const session = openSession({
    address: fake.address,
    reconnect: true,
    maxBackoffMs: 200,
    hello: () => ({ role: "host", name: `h${++hellos}` }),
  });
  try {
    await session.ready;
    const inFlight = session.call({ target: "slow", data: new Uint8Array(0), contentType: "", expectsReply: true });
    await (await fake.conn(0)).waitFor((f) => f.frame.case === "call");
    await fake.stop();
    await assert.rejects(inFlight, (e: ConnectError) => e.code === Code.Unavailable);
    fake = await startFake({ port });
    const p = encodePayload("again");
    const reply = await session.call({ target: "x", data: p.data, contentType: p.contentType, expectsReply: true, timeoutMs: 5000 });
    assert.equal(decodePayload(reply.data, reply.contentType), "again");
    assert.ok(hellos >= 2, "hello asked again on reconnect");
    assert.equal(session.name, `h${hellos}`);
  } finally {
    await session.close();
    await fake.stop();
  }
});

test("attach: a refused attach rejects ready and done with the server's code", async () => {
  const fake = await startFake({
    behaviour: (c, f) => {
      if (f.frame.case === "attach") c.end(new ConnectError(`container "${f.frame.value.container}" not found`, Code.NotFound));
    },
  });
  try {
    const a = attach({ address: fake.address, container: "ghost", worker: defineWorker(async () => {}) });
    await assert.rejects(a.ready, (e: ConnectError) => e.code === Code.NotFound && /ghost/.test(e.rawMessage));
    await assert.rejects(a.done, (e: ConnectError) => e.code === Code.NotFound);
  } finally {
    await fake.stop();
  }
});

/** A Delivery frame init for the fake server. */
function delivery(id: number, container: string, value: unknown, expectsReply = true, timeoutMs = 0): FrameInit {
  const p = encodePayload(value);
  return { case: "delivery", value: { id: BigInt(id), container, data: p.data, contentType: p.contentType, expectsReply, timeoutMs, attempt: 1 } };
}

function resultOf(f: WorkerFrame): { value?: unknown; error?: { code: number; message: string } } {
  assert.equal(f.frame.case, "result");
  const r = f.frame.value as { data: Uint8Array; contentType: string; error?: { code: number; message: string } };
  if (r.error && r.error.code !== 0) return { error: { code: r.error.code, message: r.error.message } };
  return { value: decodePayload(r.data, r.contentType) };
}

const isResult = (id: number) => (f: WorkerFrame) => f.frame.case === "result" && Number(f.frame.value.id) === id;
const isState = (container: string, phase: string) => (f: WorkerFrame) =>
  f.frame.case === "state" && f.frame.value.container === container && f.frame.value.phase === phase;

test("host: runs assigned module containers, answers deliveries, reports Running/Failed/Succeeded/Stopped", async () => {
  const fake = await startFake();
  const testModule = {
    boom: defineWorker(async (ctx) => {
      await ctx.handle(() => {
        throw new Error("kaboom");
      });
    }),
    quick: defineWorker(async (ctx) => ctx.log("quick ran")),
  };
  const host = await runWorkerHost({ address: fake.address, name: "h1", modules: { test: testModule }, onError: () => {} });
  try {
    assert.equal(host.name, "h1");
    const c = await fake.conn(0);
    const hello = c.frames[0]!;
    assert.equal(hello.frame.case, "hello");
    assert.deepEqual([...(hello.frame.value as { modules: string[] }).modules].sort(), ["test", "workers"]);
    c.send({ case: "assign", value: { container: "e1", uid: "u1", spec: { module: "workers", function: "echo_worker", parameters: { prefix: "HI" } } } });
    await c.waitFor(isState("e1", "Running"));
    c.send(delivery(1, "e1", "there"));
    assert.deepEqual(resultOf(await c.waitFor(isResult(1))), { value: "HI: there" });
    const log = await c.waitFor((f) => f.frame.case === "log" && f.frame.value.container === "e1");
    assert.deepEqual(log.frame.value, { ...(log.frame.value as object), lines: ["HI: there"], stream: "log" });

    c.send({ case: "assign", value: { container: "n1", uid: "u2", spec: { module: "workers", function: "nope" } } });
    const failed = await c.waitFor(isState("n1", "Failed"));
    assert.equal((failed.frame.value as { message: string }).message, 'module "workers" has no function "nope"');

    c.send({ case: "assign", value: { container: "b1", uid: "u3", spec: { module: "test", function: "boom" } } });
    await c.waitFor(isState("b1", "Running"));
    c.send(delivery(2, "b1", "x"));
    assert.deepEqual(resultOf(await c.waitFor(isResult(2))), { error: { code: Code.Unknown, message: "kaboom" } });

    c.send({ case: "assign", value: { container: "q1", uid: "u4", spec: { module: "test", function: "quick" } } });
    await c.waitFor(isState("q1", "Succeeded"));

    c.send({ case: "stop", value: { container: "e1", uid: "u1", graceMs: 1000 } });
    await c.waitFor(isState("e1", "Stopped"));
    assert.deepEqual(host.containers(), ["b1"]);
  } finally {
    await host.stop();
    await fake.stop();
  }
});

test("host: spawns a command container with K4S_* env; the process attaches, serves, logs, and stops on SIGTERM", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-workers-"));
  const script = join(dir, "attached.ts");
  const sdk = fileURLToPath(new URL("../src/workers/index.ts", import.meta.url));
  writeFileSync(
    script,
    `import { attach, defineWorker } from ${JSON.stringify(sdk)};
console.log("child up as " + process.env.K4S_CONTAINER + " " + process.env.GREETING + " attach=" + process.env.K4S_ATTACH_TOKEN + " token=" + (process.env.K4S_TOKEN ?? "none"));
console.error("to stderr");
const a = attach({ worker: defineWorker(async (ctx) => { await ctx.handle((m) => "child says " + m.value); }) });
process.on("SIGTERM", () => { void a.stop(1000).then(() => process.exit(0)); });
`,
  );
  const fake = await startFake();
  const output: string[] = [];
  const host = await runWorkerHost({
    address: fake.address,
    name: "h2",
    canSpawn: true,
    onError: (m) => output.push(`host: ${m}`),
    onLog: (_c, stream, lines) => output.push(...lines.map((l) => `${stream}: ${l}`)),
  });
  try {
    const c = await fake.conn(0);
    c.send({
      case: "assign",
      value: {
        container: "cmd1",
        uid: "u9",
        token: "tok-9",
        spec: { command: [process.execPath, "--import", "tsx"], args: [script], env: { GREETING: "hola" } },
      },
    });
    await c.waitFor(isState("cmd1", "Running"));
    const child = await Promise.race([
      fake.conn(1),
      c.waitFor((f) => f.frame.case === "state" && f.frame.value.phase !== "Running").then((f) => {
        throw new Error(`command ended before attaching: ${JSON.stringify(f.frame.value)}; output: ${output.join("\n")}`);
      }),
    ]);
    const att = (await child.waitFor((f) => f.frame.case === "attach")).frame.value as { container: string; token: string };
    assert.equal(att.container, "cmd1");
    assert.equal(att.token, "tok-9");
    const out = await c.waitFor((f) => f.frame.case === "log" && f.frame.value.stream === "stdout");
    // The container's credential in K4S_ATTACH_TOKEN; no bearer token, as this host has none.
    assert.deepEqual((out.frame.value as { lines: string[] }).lines, ["child up as cmd1 hola attach=tok-9 token=none"]);
    await c.waitFor((f) => f.frame.case === "log" && f.frame.value.stream === "stderr");
    child.send(delivery(7, "cmd1", "hey"));
    assert.deepEqual(resultOf(await child.waitFor(isResult(7))), { value: "child says hey" });
    c.send({ case: "stop", value: { container: "cmd1", uid: "u9", graceMs: 3000 } });
    await c.waitFor(isState("cmd1", "Stopped"));
  } finally {
    await host.stop();
    await fake.stop();
  }
});

test("session: calls made while the server is unreachable fail with UNAVAILABLE at their timeout", async () => {
  const fake = await startFake();
  const address = fake.address;
  await fake.stop();
  const session = openSession({ address, reconnect: true, maxBackoffMs: 100, hello: { role: "client" } });
  try {
    const started = Date.now();
    await assert.rejects(
      session.call({ target: "x", data: new Uint8Array(0), contentType: "", expectsReply: true, timeoutMs: 200 }),
      (e: ConnectError) => e.code === Code.Unavailable && e.rawMessage.includes(address),
    );
    assert.ok(Date.now() - started < 3000);
  } finally {
    await session.close();
  }
});

// ---------------------------------------------------------------- end to end: real server, real host process

import { ContainerSchema, ServiceSchema, type ContainerSpecSchema } from "../src/gen/k4s/v1/resources_pb.js";
import { eventually, spawnK4s, startTestServer, WORKERS_SDK_JS } from "./helpers.js";
import type { K4sServer } from "../src/server/server.js";
import type { Session } from "../src/transport/session.js";

const SDK = fileURLToPath(new URL("../src/workers/index.ts", import.meta.url));

/** Worker module served by the e2e host besides the built-ins (plain JS on the compiled SDK, as users write it). */
const E2E_MODULE = `import { defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};
export const relay = defineWorker(async (ctx) => {
  await ctx.handle(async (msg) => {
    try {
      return await ctx.request(ctx.params.to, msg.value);
    } catch (err) {
      ctx.log("nested failed: " + err.code + " " + err.rawMessage + " after " + (msg.deadline - Date.now() < 200 ? "deadline" : "early"));
      throw err;
    }
  });
});
export const waiter = defineWorker(async (ctx) => {
  await ctx.handle((msg) => new Promise((resolve) => {
    ctx.log("waiting " + JSON.stringify(msg.value));
    msg.signal.addEventListener("abort", () => { ctx.log("aborted " + JSON.stringify(msg.value)); resolve("too late"); });
  }));
});
export const thrower = defineWorker(async (ctx) => {
  for await (const msg of ctx.messages) throw new Error("thrower exploded on " + JSON.stringify(msg.value));
});
`;

/** The tiny command a command container runs: attaches itself through the SDK. */
const ATTACHED_SCRIPT = `import { attach, defineWorker } from ${JSON.stringify(SDK)};
console.log("spawned " + process.env.K4S_CONTAINER);
const a = attach({ worker: defineWorker(async (ctx) => { await ctx.handle((m) => "from " + ctx.name + ": " + m.value); }) });
process.on("SIGTERM", () => { void a.stop(1000).then(() => process.exit(0)); });
`;

/** A command whose worker throws on its first message: the process must end Failed. */
const FAILING_SCRIPT = `import { attach, defineWorker } from ${JSON.stringify(SDK)};
attach({ worker: defineWorker(async (ctx) => { for await (const m of ctx.messages) throw new Error("command broke on " + m.value); }) });
`;

interface E2E {
  server: K4sServer;
  client: Session;
  stopHost(): Promise<void>;
  dir: string;
}

let e2e: E2E | undefined;

async function setupE2E(): Promise<E2E> {
  if (e2e) return e2e;
  const server = await startTestServer({ heartbeatIntervalMs: 1000 });
  const dir = mkdtempSync(join(tmpdir(), "k4s-e2e-"));
  writeFileSync(join(dir, "e2e-module.mjs"), E2E_MODULE);
  writeFileSync(join(dir, "attached.ts"), ATTACHED_SCRIPT);
  writeFileSync(join(dir, "failing.ts"), FAILING_SCRIPT);
  // The real command a user runs: `k4s worker`, serving the test's module besides the built-ins.
  const host = spawnK4s(["worker", "--server", server.address, "--name", "e2e-host", "--allow-command", "--module", `e2e=${join(dir, "e2e-module.mjs")}`]);
  await host.waitFor("serving containers", 20_000);
  const client = openSession({ address: server.address, hello: { role: "client", name: "e2e-client" }, reconnect: true });
  await client.ready;
  e2e = {
    server,
    client,
    dir,
    async stopHost() {
      await host.kill("SIGTERM");
    },
  };
  return e2e;
}

async function request(target: string, value: unknown, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<unknown> {
  const p = encodePayload(value);
  const r = await e2e!.client.call({ target, data: p.data, contentType: p.contentType, expectsReply: true, ...options });
  return decodePayload(r.data, r.contentType);
}

async function sendTo(target: string, value: unknown): Promise<void> {
  const p = encodePayload(value);
  await e2e!.client.call({ target, data: p.data, contentType: p.contentType, expectsReply: false });
}

async function container(name: string, spec: MessageInitShape<typeof ContainerSpecSchema>, labels: Record<string, string> = {}) {
  await e2e!.server.resources.create(create(ContainerSchema, { metadata: { name, labels }, spec }));
}

async function phaseOf(name: string): Promise<string | undefined> {
  return (await e2e!.server.resources.get("Container", name))?.status?.phase;
}

async function readyContainer(name: string): Promise<void> {
  await eventually(async () => (await e2e!.server.resources.get("Container", name))?.status?.ready, 15_000, `${name} ready`);
}

function logsOf(name: string): string[] {
  return e2e!.server.logs.lines(name).map((l) => l.text);
}

/** Runs an e2e test body against the shared server and host (set up by the first one). */
function e2eTest(name: string, body: (env: E2E) => Promise<void>) {
  test(`e2e: ${name}`, async () => {
    await body(await setupE2E());
  });
}

e2eTest("echo request through a host process", async () => {
  await container("echo-1", { module: "workers", function: "echo_worker", parameters: { prefix: "E2E" } });
  assert.equal(await request("echo-1", "hello", { timeoutMs: 15_000 }), "E2E: hello");
  await eventually(() => logsOf("echo-1").includes("E2E: hello"), 5000, "echo log line");
});

e2eTest("calculator replicas behind a service", async () => {
  await container("calc-a", { module: "workers", function: "calculator_worker" });
  await container("calc-b", { module: "workers", function: "calculator" });
  await e2e!.server.resources.create(create(ServiceSchema, { metadata: { name: "calc" }, spec: { selector: "calc-*" } }));
  assert.equal(await request("service/calc", { operation: "sum", operands: [1, 2, 3] }, { timeoutMs: 15_000 }), 6);
  const answers = await Promise.all([1, 2, 3, 4].map((n) => request("calc", { operation: "product", operands: [n, 10] })));
  assert.deepEqual(answers, [10, 20, 30, 40]);
  await assert.rejects(
    request("calc", { operation: "cube", operands: [2] }),
    (e: ConnectError) => e.code === Code.InvalidArgument && /unknown operation "cube"/.test(e.rawMessage),
  );
});

e2eTest("processor forwards to the aggregator; the report shows in its logs", async () => {
  await container("agg", { module: "workers", function: "aggregator_worker", parameters: { window_size: 3 } });
  await container("proc", { module: "workers", function: "processor_worker", parameters: { operation: "reverse", forward_to: "agg" } });
  await readyContainer("agg");
  for (const w of ["abc", "def"]) await sendTo("proc", w);
  assert.equal(await request("proc", "ghi", { timeoutMs: 15_000 }), "ihg");
  await eventually(() => logsOf("agg").some((l) => l === 'aggregated 3 messages (total 3), sample: cba'), 10_000, "aggregator report");
  assert.deepEqual(await request("agg", null), { count: 3, messages: ["cba", "fed", "ihg"], sample: "cba" });
  assert.ok(logsOf("proc").includes("processed (reverse): abc -> cba"));
});

e2eTest("generator sends its messages then Succeeds", async () => {
  await container("gen-sink", { module: "workers", function: "aggregator", parameters: { window_size: 4 } });
  await container("gen", { module: "workers", function: "generator_worker", parameters: { count: 4, interval: 0.02, target: "gen-sink" }, restartPolicy: "Never" });
  await eventually(async () => (await phaseOf("gen")) === "Succeeded", 15_000, "generator Succeeded");
  await eventually(() => logsOf("gen-sink").some((l) => l.startsWith("aggregated 4 messages (total 4)")), 10_000, "sink got 4 messages");
});

e2eTest("a worker exception reaches the caller; an unknown function fails the container", async () => {
  await container("boom", { module: "e2e", function: "thrower", restartPolicy: "Never" });
  await assert.rejects(
    request("boom", "x", { timeoutMs: 15_000 }),
    (e: ConnectError) => e.code === Code.Unknown && e.rawMessage === 'thrower exploded on "x"',
  );
  await eventually(async () => (await phaseOf("boom")) === "Failed", 10_000, "thrower Failed");
  await container("nope", { module: "workers", function: "nope", restartPolicy: "Never" });
  await eventually(
    async () => (await e2e!.server.resources.get("Container", "nope"))?.status?.message.includes('module "workers" has no function "nope"'),
    10_000,
    "nope's status names the missing function",
  );
});

e2eTest("ctx.request nested in a handler inherits the caller's deadline", async () => {
  await container("sleeper", { module: "e2e", function: "waiter" });
  await container("relay", { module: "e2e", function: "relay", parameters: { to: "sleeper" } });
  await readyContainer("sleeper");
  await readyContainer("relay");
  const started = Date.now();
  await assert.rejects(request("relay", "deep", { timeoutMs: 800 }), (e: ConnectError) => e.code === Code.DeadlineExceeded);
  const took = Date.now() - started;
  assert.ok(took >= 700 && took < 5000, `outer request took ${took} ms`);
  // The nested request ended at the inherited deadline, not at its default 30 s: either the
  // server's DEADLINE_EXCEEDED (4) or the parent's cancel (1) gets there first.
  await eventually(
    () => logsOf("relay").some((l) => /^nested failed: (4|1) .* deadline$/.test(l)),
    5000,
    `nested request ended at the deadline (relay log: ${JSON.stringify(logsOf("relay"))})`,
  );
  await eventually(() => logsOf("sleeper").includes('aborted "deep"'), 5000, "sleeper saw the cancel");
});

e2eTest("a caller's cancel aborts the message's signal in the worker", async () => {
  await container("waiting", { module: "e2e", function: "waiter" });
  await readyContainer("waiting");
  const ac = new AbortController();
  const p = request("waiting", "c1", { timeoutMs: 20_000, signal: ac.signal });
  await eventually(() => logsOf("waiting").includes('waiting "c1"'), 10_000, "worker got the request");
  ac.abort();
  await assert.rejects(p, (e: ConnectError) => e.code === Code.Canceled);
  await eventually(() => logsOf("waiting").includes('aborted "c1"'), 5000, "worker saw the cancel");
});

e2eTest("a command container is spawned by the host and attaches itself", async () => {
  await container("cmd", { command: [process.execPath, "--import", "tsx", join(e2e!.dir, "attached.ts")] });
  await readyContainer("cmd");
  assert.equal(await request("cmd", "hi", { timeoutMs: 15_000 }), "from cmd: hi");
  await eventually(() => logsOf("cmd").includes("spawned cmd"), 5000, "child stdout in the container log");
});

e2eTest("a command whose worker throws fails its caller and exits non-zero: the container is Failed", async () => {
  await container("cmd-fail", { command: [process.execPath, "--import", "tsx", join(e2e!.dir, "failing.ts")], restartPolicy: "Never" });
  await readyContainer("cmd-fail");
  await assert.rejects(
    request("cmd-fail", "x", { timeoutMs: 15_000 }),
    (e: ConnectError) => /command broke on x/.test(e.rawMessage) || e.code === Code.Unavailable,
  );
  await eventually(async () => (await phaseOf("cmd-fail")) === "Failed", 15_000, "cmd-fail Failed");
  const status = (await e2e!.server.resources.get("Container", "cmd-fail"))?.status;
  assert.equal(status?.exitCode, 1, `exit code in status: ${JSON.stringify(status?.message)}`);
});

e2eTest("attach() serves an external container from this process", async () => {
  await container("ext", {});
  const a = attach({
    address: e2e!.server.address,
    container: "ext",
    worker: defineWorker(async (ctx) => {
      await ctx.handle((m) => ({ got: m.value, by: ctx.name }));
    }),
  });
  try {
    await a.ready;
    await readyContainer("ext");
    assert.deepEqual(await request("ext", 42, { timeoutMs: 10_000 }), { got: 42, by: "ext" });
    // A second process may not serve the same container while the first is attached.
    const b = attach({ address: e2e!.server.address, container: "ext", reconnect: false, worker: defineWorker(async () => {}) });
    await assert.rejects(b.ready, (e: ConnectError) => e.code === Code.FailedPrecondition);
  } finally {
    await a.stop(1000);
  }
});

e2eTest("deleting a container stops it on its host", async () => {
  await container("short-lived", { module: "workers", function: "echo" });
  await readyContainer("short-lived");
  await e2e!.server.resources.delete("Container", "short-lived");
  await eventually(async () => !(await e2e!.server.resources.get("Container", "short-lived")), 10_000, "container gone after its Stop");
});

test("e2e: teardown", async () => {
  if (!e2e) return;
  await e2e.client.close();
  await e2e.stopHost();
  await e2e.server.stop();
});

test("e2e: heartbeats keep an idle session alive; a host reconnects after a server restart and serves again", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "k4s-restart-"));
  // A server that does not start fails the test (no skip).
  let server = await startTestServer({ dataDir, heartbeatIntervalMs: 300 });
  const port = server.port;
  const host = await runWorkerHost({ address: server.address, name: "restart-host", onError: () => {} });
  const client = openSession({ address: server.address, hello: { role: "client" }, reconnect: true, maxBackoffMs: 300 });
  const ask = async (value: string) => {
    const p = encodePayload(value);
    const r = await client.call({ target: "r-echo", data: p.data, contentType: p.contentType, expectsReply: true, timeoutMs: 10_000 });
    return decodePayload(r.data, r.contentType);
  };
  try {
    await client.ready;
    await server.resources.create(create(ContainerSchema, { metadata: { name: "r-echo" }, spec: { module: "workers", function: "echo" } }));
    assert.equal(await ask("one"), "ECHO: one");
    const sessionId = client.sessionId;
    // Four silent intervals: without heartbeats the server would have dropped the session.
    await new Promise((r) => setTimeout(r, 1300));
    assert.equal(client.sessionId, sessionId, "the idle session was kept");
    assert.equal(await ask("two"), "ECHO: two");

    await server.stop();
    server = await startTestServer({ dataDir, port, heartbeatIntervalMs: 300 });
    assert.equal(await eventually(() => ask("three").catch(() => undefined), 20_000, "echo after the restart"), "ECHO: three");
    assert.notEqual(client.sessionId, sessionId, "the client reconnected");
    assert.deepEqual(host.containers(), ["r-echo"]);
  } finally {
    await client.close();
    await host.stop();
    await server.stop();
  }
});

test("e2e: behind a token and TLS, a host's spawned command attaches with its own attach credential (no bearer token) and the TLS it hands down", async () => {
  const { execFileSync } = await import("node:child_process");
  const { readFileSync } = await import("node:fs");
  const dir = mkdtempSync(join(tmpdir(), "k4s-tls-workers-"));
  execFileSync(
    "openssl",
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")],
    { stdio: "ignore" },
  );
  const cert = readFileSync(join(dir, "cert.pem"));
  const server = await startTestServer({ token: "s3cret", tls: { cert, key: readFileSync(join(dir, "key.pem")) } });
  writeFileSync(join(dir, "attached.ts"), ATTACHED_SCRIPT);
  const tls = { ca: cert, servername: "localhost" };
  const host = await runWorkerHost({ address: server.address, name: "tls-host", token: "s3cret", tls, builtin: false, canSpawn: true, onError: () => {} });
  const client = openSession({ address: server.address, token: "s3cret", tls, hello: { role: "client" } });
  const noToken = openSession({ address: server.address, tls, hello: { role: "client" } });
  try {
    await assert.rejects(noToken.ready, (e: ConnectError) => e.code === Code.Unauthenticated);
    await server.resources.create(create(ContainerSchema, { metadata: { name: "tls-cmd" }, spec: { command: [process.execPath, "--import", "tsx", join(dir, "attached.ts")] } }));
    await eventually(async () => (await server.resources.get("Container", "tls-cmd"))?.status?.ready, 20_000, "tls-cmd ready");
    const p = encodePayload("secure");
    const r = await client.call({ target: "tls-cmd", data: p.data, contentType: p.contentType, expectsReply: true, timeoutMs: 10_000 });
    assert.equal(decodePayload(r.data, r.contentType), "from tls-cmd: secure");
  } finally {
    await client.close();
    await noToken.close();
    await host.stop();
    await server.stop();
  }
});
