/**
 * The worker conformance suite: one set of scenarios run against every worker client — the
 * TypeScript SDK (test/fixtures/conformance-worker.ts) and the Python stubs
 * (examples/python/worker.py) — each a real process attached to an external container of a
 * real server. A third language is checked by adding its command to IMPLEMENTATIONS.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import { createClient, type K4sClient } from "../src/client/index.js";
import { attach, defineWorker, type Attached } from "../src/workers/index.js";
import type { K4sServer } from "../src/server/server.js";
import { PYTHON, eventually, preparePython, startTestServer } from "./helpers.js";

const root = fileURLToPath(new URL("..", import.meta.url));

/** Each worker client: how to start it, and what it needs first (failing its own scenarios only). */
const IMPLEMENTATIONS: { name: string; command: string[]; prepare?: () => void }[] = [
  { name: "typescript", command: [process.execPath, "--import", "tsx", "test/fixtures/conformance-worker.ts"] },
  { name: "python", command: [PYTHON, "examples/python/worker.py"], prepare: preparePython },
];

async function codeOf(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

for (const impl of IMPLEMENTATIONS) {
  describe(`worker conformance: ${impl.name}`, () => {
    let server: K4sServer;
    let client: K4sClient;
    let worker: ChildProcess;
    let workerOutput = "";
    const received: unknown[] = [];
    const helpers: Attached[] = [];

    const ready = (name: string) =>
      eventually(async () => (await server.resources.get("Container", name))?.status?.ready, 15_000, `${name} ready`);

    async function startWorker(): Promise<void> {
      const [cmd, ...args] = impl.command;
      worker = spawn(cmd!, [...args, "conf"], {
        cwd: root,
        env: { ...process.env, K4S_ADDRESS: server.address },
        stdio: ["ignore", "pipe", "pipe"],
      });
      worker.stdout!.on("data", (d) => (workerOutput += d));
      worker.stderr!.on("data", (d) => (workerOutput += d));
      await ready("conf");
    }

    async function stopWorker(signal: NodeJS.Signals): Promise<number | string> {
      const w = worker;
      if (w.exitCode !== null || w.signalCode !== null) return w.exitCode ?? w.signalCode!;
      const exited = new Promise<number | string>((resolve) => w.once("exit", (code, sig) => resolve(code ?? sig!)));
      w.kill(signal);
      const result = await exited;
      await eventually(async () => !(await server.resources.get("Container", "conf"))?.status?.ready, 10_000, "conf not ready");
      return result;
    }

    before(async () => {
      impl.prepare?.();
      server = await startTestServer({ heartbeatIntervalMs: 500 });
      client = createClient({ address: server.address });
      await client.apply(
        ["conf", "sink", "probe"].map((n) => `kind: Container\nmetadata: {name: ${n}}\nspec: {concurrency: 1}\n`).join("---\n"),
      );
      // The sink records what the worker under test sends; the probe reports the deadline it sees.
      helpers.push(
        attach({
          address: server.address,
          container: "sink",
          worker: defineWorker(async (ctx) => {
            for await (const msg of ctx.messages) {
              received.push(msg.value);
              msg.ack();
            }
          }),
        }),
        attach({
          address: server.address,
          container: "probe",
          worker: defineWorker(async (ctx) => {
            for await (const msg of ctx.messages) msg.reply({ deadline_ms_left: msg.deadline === undefined ? null : msg.deadline - Date.now() });
          }),
        }),
      );
      await Promise.all(helpers.map((h) => h.ready));
      await startWorker();
    });

    after(async () => {
      if (worker) await stopWorker("SIGKILL").catch(() => {});
      await Promise.all(helpers.map((h) => h.stop(1000)));
      await client.close();
      await server.stop();
    });

    test("request/reply returns the handler's value", async () => {
      assert.deepEqual(await client.request("conf", { op: "echo", value: { a: [1, "two", null] } }), { a: [1, "two", null] });
      assert.deepEqual(await client.request("container/conf", { op: "words", text: "one two three" }), { words: 3, by: "conf" });
    });

    test("a handler's error reaches the caller with its code and message", async () => {
      const err = await client.request("conf", { op: "fail", code: "INVALID_ARGUMENT", message: "bad thing" }).catch((e) => e);
      assert.ok(err instanceof ConnectError, String(err));
      assert.equal(err.code, Code.InvalidArgument);
      assert.match(err.message, /bad thing/);
      assert.equal(await codeOf(client.request("conf", { op: "fail", code: "NOT_FOUND", message: "nope" })), Code.NotFound);
      const unknown = ConnectError.from(await client.request("conf", { op: "no-such-op" }).catch((e) => e));
      assert.equal(unknown.code, Code.InvalidArgument);
      assert.match(unknown.message, /unknown op/);
    });

    test("fire-and-forget messages are handled, and the worker's own sends arrive", async () => {
      received.length = 0;
      await client.send("conf", { op: "forward", target: "sink", value: "hello sink" });
      await eventually(() => received.includes("hello sink"), 10_000, "the forwarded message");
    });

    test("with concurrency 1, messages are handled in the order sent", async () => {
      received.length = 0;
      for (let i = 0; i < 50; i++) await client.send("conf", { op: "forward", target: "sink", value: i });
      await eventually(() => received.length >= 50, 15_000, "50 forwarded messages");
      assert.deepEqual(received, Array.from({ length: 50 }, (_, i) => i));
    });

    test("large payloads (1 MiB) pass through intact", async () => {
      const big = "x".repeat(1024 * 1024 - 100) + "end";
      const back = await client.request<string>("conf", { op: "echo", value: big }, { timeoutMs: 20_000 });
      assert.equal(back.length, big.length);
      assert.equal(back, big);
    });

    test("a request past its deadline fails with DEADLINE_EXCEEDED and the worker stops working on it", async () => {
      assert.equal(await codeOf(client.request("conf", { op: "sleep", ms: 20_000 }, { timeoutMs: 300 })), Code.DeadlineExceeded);
      // Had the worker kept sleeping, this would wait 20 s behind it (concurrency 1) and time out.
      assert.equal(await client.request("conf", { op: "echo", value: "after" }, { timeoutMs: 5000 }), "after");
    });

    test("a caller's cancel reaches the worker", async () => {
      const controller = new AbortController();
      const call = client.request("conf", { op: "sleep", ms: 20_000 }, { timeoutMs: 30_000, signal: controller.signal });
      setTimeout(() => controller.abort(), 200);
      assert.equal(await codeOf(call), Code.Canceled);
      assert.equal(await client.request("conf", { op: "echo", value: "after cancel" }, { timeoutMs: 5000 }), "after cancel");
    });

    test("a nested request inherits what remains of the caller's deadline", async () => {
      const seen = await client.request<{ deadline_ms_left: number }>(
        "conf",
        { op: "call", target: "probe", value: null },
        { timeoutMs: 3000 },
      );
      assert.ok(seen.deadline_ms_left > 0 && seen.deadline_ms_left <= 3000, `probe saw ${seen.deadline_ms_left} ms left`);
    });

    test("fire-and-forget messages in flight when the worker crashes are delivered again", async () => {
      received.length = 0;
      for (let i = 0; i < 10; i++) await client.send("conf", { op: "forward", target: "sink", value: `r-${i}`, delay_ms: 100 });
      await eventually(() => received.length >= 2, 10_000, "the first forwarded messages");
      await stopWorker("SIGKILL");
      await startWorker();
      await eventually(() => new Set(received).size === 10, 20_000, "all 10 messages after the crash");
      assert.deepEqual([...new Set(received)].sort(), Array.from({ length: 10 }, (_, i) => `r-${i}`).sort());
    });

    test("on SIGTERM the worker finishes the request in hand, then exits cleanly", async () => {
      const call = client.request("conf", { op: "sleep", ms: 2000 }, { timeoutMs: 20_000 });
      // The request is in the worker's hands once its handler logged it (at load that can take
      // longer than the sleep's start would suggest).
      await eventually(() => server.logs.lines("conf").some((l) => l.text.includes("sleeping 2000 ms")), 10_000, "the request in hand");
      const exited = stopWorker("SIGTERM");
      assert.equal(await call, "slept");
      assert.equal(await exited, 0, workerOutput);
    });
  });
}
