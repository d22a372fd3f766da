/**
 * Polyglot end to end: Python workers spawned by a worker host as command containers behind a
 * service, called from the TypeScript SDK; and the Python client calling a TypeScript service.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type K4sClient } from "../src/client/index.js";
import type { K4sServer } from "../src/server/server.js";
import { PYTHON, eventually, preparePython, spawnK4s, startTestServer, type Proc } from "./helpers.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const run = promisify(execFile);

let server: K4sServer;
let host: Proc;
let client: K4sClient;

before(async () => {
  preparePython();
  server = await startTestServer();
  host = spawnK4s(["worker", "--server", server.address, "--name", "polyglot-host", "--allow-command"]);
  client = createClient({ address: server.address });
});

after(async () => {
  await client.close();
  await host.kill();
  await server.stop();
});

test("a TypeScript client's requests reach Python replicas behind a service", async () => {
  await client.apply(`
kind: ReplicaSet
metadata: {name: py-rs}
spec:
  replicas: 2
  template:
    metadata: {labels: {lang: python}}
    spec:
      command: [${PYTHON}, ${root}examples/python/worker.py]
---
kind: Service
metadata: {name: py-service}
spec: {matchLabels: {lang: python}}
`);
  // The first request waits for an endpoint by itself; wait for both so that both can answer.
  assert.deepEqual(await client.request("py-service", { op: "echo", value: 1 }), 1);
  await eventually(async () => (await server.resources.get("Service", "py-service"))?.status?.endpoints.length === 2);
  const by = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const reply = await client.request<{ words: number; by: string }>("service/py-service", { op: "words", text: `a b ${i}` });
    assert.equal(reply.words, 3);
    by.add(reply.by);
  }
  // Both replicas answered: the service spreads requests over Python processes.
  assert.deepEqual([...by].sort(), ["py-rs-0", "py-rs-1"]);
  const pod = await server.resources.get("Container", "py-rs-0");
  assert.equal(pod?.status?.phase, "Running");
  assert.equal(pod?.status?.host, "polyglot-host");
  // The spawned process's own log lines reach the server.
  await eventually(async () => {
    for await (const line of client.logs("py-rs-0")) if (line.text.includes("python worker attached as py-rs-0")) return true;
    return false;
  }, 10_000, "the python worker's log line");
});

test("the Python client, and a Python worker's own request, call a TypeScript worker's service", async () => {
  await client.apply(`
kind: Container
metadata: {name: calculator}
spec: {module: workers, function: calculator_worker}
---
kind: ReplicaSet
metadata: {name: calculator-rs}
spec: {replicas: 2, container: calculator}
---
kind: Service
metadata: {name: calculator-service}
spec: {selector: "calculator-rs-*"}
`);
  // A Python replica's own request to a TypeScript service (nested, inheriting its deadline).
  assert.equal(
    await client.request("py-service", { op: "call", target: "service/calculator-service", value: { operation: "product", operands: [2, 3, 7] } }),
    42,
  );
  const { stdout } = await run(PYTHON, [
    "examples/python/client.py", "--address", server.address, "calculator-service", '{"operation": "sum", "operands": [1, 2, 3]}',
  ], { cwd: root });
  assert.equal(stdout.trim(), "6");
  const failed = await run(PYTHON, [
    "examples/python/client.py", "--address", server.address, "calculator-service", '{"operation": "pow", "operands": [2]}',
  ], { cwd: root }).catch((e: { code: number; stderr: string }) => e);
  assert.equal((failed as { code: number }).code, 1);
  assert.match((failed as { stderr: string }).stderr, /error: INVALID_ARGUMENT: .*unknown operation "pow"/);
});

test("a Python client decodes a rejected manifest's google.rpc.BadRequest field violations from the status details", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-py-"));
  try {
    const file = join(dir, "bad.yaml");
    writeFileSync(file, "kind: ReplicaSet\nmetadata: {name: py-bad}\nspec: {replicas: -1, container: t}\n---\nkind: Container\nmetadata: {name: Py_Bad}\n");
    const failed = (await run(PYTHON, ["examples/python/client.py", "--address", server.address, "--apply", file], { cwd: root }).catch(
      (e: { code: number; stderr: string }) => e,
    )) as { code: number; stderr: string };
    assert.equal(failed.code, 1, failed.stderr);
    const lines = failed.stderr.trim().split("\n");
    assert.match(lines[0]!, /^error: INVALID_ARGUMENT: document 1 \(ReplicaSet "py-bad"\): spec\.replicas: must be between 0 and 10000, got -1; document 2/);
    assert.deepEqual(lines.slice(1).map((l) => l.replace(/: .*/, "")), ["  manifest[0].spec.replicas", "  manifest[1].metadata.name"]);
    assert.equal(lines[1], "  manifest[0].spec.replicas: must be between 0 and 10000, got -1");
    writeFileSync(file, "kind: Container\nmetadata: {name: py-good}\nspec: {}\n");
    const { stdout } = await run(PYTHON, ["examples/python/client.py", "--address", server.address, "--apply", file], { cwd: root });
    assert.equal(stdout.trim(), "container/py-good created");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
