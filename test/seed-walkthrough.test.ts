/**
 * The seed's workflows through the real CLI, as a user types them: a server, a worker host
 * process, the example manifests, requests, sends and logs.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createClient as createRpcClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { MessagingService } from "../src/gen/k4s/v1/messaging_service_pb.js";
import type { K4sServer } from "../src/server/server.js";
import { eventually, runK4s, spawnK4s, startTestServer, type Proc } from "./helpers.js";

let server: K4sServer;
let host: Proc;
let k4s: (...args: string[]) => ReturnType<typeof runK4s>;

before(async () => {
  server = await startTestServer();
  host = spawnK4s(["worker", "--server", server.address, "--name", "host-a"]);
  k4s = (...args) => runK4s(["--server", server.address, ...args]);
});

after(async () => {
  await host.kill();
  await server.stop();
});

test("calculator: the first request right after apply waits for an endpoint; 300 spread over 3 replicas; errors carry messages", async () => {
  const applied = await k4s("apply", "-f", "examples/calculator.yaml");
  assert.equal(applied.code, 0, applied.stderr);
  // No --wait and no sleep: the request itself waits for a ready endpoint.
  const first = await k4s("request", "service/calculator-service", '{"operation":"sum","operands":[1,2,3]}');
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stdout.trim(), "6");

  await eventually(async () => (await server.resources.get("Service", "calculator-service"))?.status?.endpoints.length === 3);
  const rpc = createRpcClient(MessagingService, createGrpcTransport({ baseUrl: `http://${server.address}` }));
  const counts: Record<string, number> = {};
  await Promise.all(
    Array.from({ length: 300 }, async (_, i) => {
      const data = new TextEncoder().encode(JSON.stringify({ operation: "sum", operands: [i, 1] }));
      const r = await rpc.request({ target: "service/calculator-service", data, contentType: "application/json" });
      assert.equal(r.json?.kind.value, i + 1);
      counts[r.container] = (counts[r.container] ?? 0) + 1;
    }),
  );
  assert.deepEqual(Object.keys(counts).sort(), ["calculator-rs-0", "calculator-rs-1", "calculator-rs-2"]);
  // Round-robin over three ready endpoints: an even spread.
  assert.deepEqual(Object.values(counts), [100, 100, 100]);

  const unknown = await k4s("request", "calculator-service", '{"operation":"modulo","operands":[1]}');
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /^error: INVALID_ARGUMENT: .*unknown operation "modulo"/);
  const bad = await k4s("request", "calculator-service", '{"operation":"sum","operands":"nope"}');
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^error: INVALID_ARGUMENT: .*operands/);
});

test("echo answers with its prefix; a processor feeds the aggregator, whose report is in its logs", async () => {
  assert.equal((await k4s("apply", "-f", "examples/echo.yaml", "-f", "examples/pipeline.yaml")).code, 0);
  const echoed = await k4s("request", "container/echo-worker", '"hi"');
  assert.equal(echoed.stdout.trim(), "HELLO: hi", echoed.stderr);
  for (const w of ["one", "two", "three"]) assert.equal((await k4s("send", "processor", JSON.stringify(w))).code, 0);
  await eventually(async () => {
    const logs = await k4s("logs", "aggregator");
    return /aggregated 3 messages/.test(logs.stdout) && logs.stdout;
  }, 15_000, "the aggregator's report in its logs");
  const report = await k4s("request", "aggregator", '"report?"');
  assert.deepEqual(JSON.parse(report.stdout), { count: 3, messages: ["ONE", "TWO", "THREE"], sample: "ONE" });
});
