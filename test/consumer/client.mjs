// A plain-Node client of an application that installed k4s from npm: apply, watch, request,
// and the google.rpc.BadRequest details of a validation failure. Exits 1 when a step fails.
//   node client.mjs ADDRESS
import assert from "node:assert/strict";
import { Code, ConnectError, createClient, fieldViolations } from "k4s/client";

const client = createClient({ address: process.argv[2], reconnect: false });
const step = (text) => console.log(`consumer client: ${text}`);
try {
  // Watch from before the apply: the echo container must be seen Running.
  const watch = client.watch({ kind: "Container", nameGlob: "consumer-echo" });
  const running = (async () => {
    for await (const ev of watch) if (ev.object.status?.phase === "Running") return ev.type;
  })();
  const applied = await client.apply(`kind: Container
metadata: {name: consumer-echo}
spec: {module: workers, function: echo_worker, parameters: {prefix: HEY}}
---
kind: Container
metadata: {name: consumer-module}
spec: {module: greeter, function: greeter, parameters: {greeting: hola}}
`);
  assert.deepEqual(applied.map((a) => `${a.name} ${a.action}`), ["consumer-echo created", "consumer-module created"]);
  step("applied");
  step(`watch saw consumer-echo Running (${await running})`);
  assert.equal(await client.request("container/consumer-echo", "x"), "HEY: x");
  assert.equal(await client.request("consumer-module", "ana"), "hola, ana (from consumer-module)");
  step("requests answered by the built-in worker and by a --module worker");
  assert.equal(await client.request("consumer-attached", "bo"), "hi, bo (from consumer-attached)");
  step("request answered by an attach() worker");
  try {
    await client.apply("kind: ReplicaSet\nmetadata: {name: bad}\nspec: {replicas: -1, container: x}\n");
    assert.fail("an invalid manifest was applied");
  } catch (err) {
    assert.equal(ConnectError.from(err).code, Code.InvalidArgument);
    assert.deepEqual(fieldViolations(err).map((v) => v.field), ["manifest[0].spec.replicas"]);
  }
  step("an invalid manifest answers INVALID_ARGUMENT with its field violations");
} finally {
  await client.close();
}
