/**
 * Standard tools, no k4s code on the client side: `buf curl` (a reflection-based client, as
 * grpcurl is) lists, applies, sends, requests and watches through server reflection.
 * These are the commands the README shows.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { createServer, type K4sServer } from "../src/server/server.js";
import { eventually, spawnK4s, startTestServer, type Proc } from "./helpers.js";

const BUF = fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url));
const run = promisify(execFile);

let server: K4sServer;
let host: Proc;
let url: string;

/** Runs `buf curl --protocol grpc --http2-prior-knowledge ...args` and returns stdout. */
async function bufCurl(...args: string[]): Promise<string> {
  const { stdout } = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args], { timeout: 30_000, cwd: ROOT });
  return stdout;
}

const ROOT = fileURLToPath(new URL("..", import.meta.url));

before(async () => {
  server = await startTestServer();
  url = `http://${server.address}`;
  host = spawnK4s(["worker", "--server", server.address]);
});

after(async () => {
  await host.kill();
  await server.stop();
});

test("reflection (v1 and v1alpha) lists every service and method", async () => {
  const services = (await bufCurl("--list-services", url)).split("\n");
  for (const s of ["k4s.v1.ResourceService", "k4s.v1.MessagingService", "k4s.v1.WorkerService", "k4s.v1.LogService", "grpc.health.v1.Health"]) {
    assert.ok(services.includes(s), `${s} missing from ${services.join(", ")}`);
  }
  const methods = await bufCurl("--list-methods", url);
  for (const m of ["k4s.v1.ResourceService/Apply", "k4s.v1.ResourceService/Watch", "k4s.v1.MessagingService/Request", "k4s.v1.WorkerService/Connect", "k4s.v1.LogService/Logs"]) {
    assert.ok(methods.includes(m), `${m} missing`);
  }
  const alpha = await bufCurl("--reflect-protocol", "grpc-v1alpha", "--list-methods", url);
  assert.ok(alpha.includes("k4s.v1.MessagingService/Send"));
});

test("health answers SERVING", async () => {
  assert.deepEqual(JSON.parse(await bufCurl(`${url}/grpc.health.v1.Health/Check`)), { status: "SERVING" });
});

test("apply, request, send, get and watch with hand-typed JSON", async () => {
  const manifest = "kind: Container\nmetadata: {name: echo-worker}\nspec:\n  module: workers\n  function: echo_worker\n  parameters: {prefix: HELLO}\n";
  const applied = JSON.parse(await bufCurl("-d", JSON.stringify({ manifest }), `${url}/k4s.v1.ResourceService/Apply`));
  assert.equal(applied.results[0].action, "created");
  assert.equal(applied.results[0].name, "echo-worker");

  // The request waits for the container to be ready; the JSON form needs no bytes.
  const reply = JSON.parse(await bufCurl("-d", '{"target": "container/echo-worker", "json": "hi"}', `${url}/k4s.v1.MessagingService/Request`));
  assert.equal(reply.json, "HELLO: hi");
  assert.equal(reply.container, "echo-worker");

  const sent = JSON.parse(await bufCurl("-d", '{"target": "echo-worker", "json": {"n": 1}}', `${url}/k4s.v1.MessagingService/Send`));
  assert.equal(sent.container, "echo-worker");

  const got = JSON.parse(await bufCurl("-d", '{"kind": "c", "name": "echo-worker"}', `${url}/k4s.v1.ResourceService/Get`));
  assert.equal(got.object.container.status.phase, "Running");

  const notFound = await bufCurl("-d", '{"target": "nobody", "json": 1}', `${url}/k4s.v1.MessagingService/Request`).catch((e) => e);
  assert.match(String(notFound.stderr), /not_found/i);

  // Watch streams: the initial listing, a bookmark (a response with only a resourceVersion),
  // then each change as it happens.
  const watch = spawn(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", '{"kind": "Container"}', `${url}/k4s.v1.ResourceService/Watch`]);
  let out = "";
  watch.stdout.on("data", (d) => (out += d));
  try {
    const bookmark = /\{\s*"resourceVersion": "\d+"\s*\}/;
    await eventually(() => bookmark.test(out), 15_000, "the initial listing");
    assert.match(out, /"ADDED"[\s\S]*"echo-worker"/);
    await bufCurl("-d", '{"kind": "Container", "name": "echo-worker"}', `${url}/k4s.v1.ResourceService/Delete`);
    await eventually(() => /"(DELETED|MODIFIED)"/.test(out.slice(out.search(bookmark))), 15_000, "the delete in the watch");
  } finally {
    watch.kill();
  }
});

test("with a token: -H alone fails at reflection; -H with --reflect-header '*' works; health needs none (schema from proto/)", async () => {
  const guarded = createServer({ port: 0, token: "s3cret", onError: () => {} });
  await guarded.start();
  try {
    const base = `http://${guarded.address}`;
    const auth = "authorization: Bearer s3cret";
    const headerOnly = await bufCurl("-H", auth, "-d", '{"kind": "Container"}', `${base}/k4s.v1.ResourceService/List`).catch((e) => e);
    // buf curl reports the refused reflection as "not authenticated" or as a missing service.
    assert.match(String(headerOnly.stderr), /not authenticated|failed to find service/i, "reflection is refused without --reflect-header");
    const services = await bufCurl("-H", auth, "--reflect-header", "*", "--list-services", base);
    assert.ok(services.split("\n").includes("k4s.v1.ResourceService"), services);
    const listed = JSON.parse(await bufCurl("-H", auth, "--reflect-header", "*", "-d", '{"kind": "Container"}', `${base}/k4s.v1.ResourceService/List`));
    assert.ok(typeof listed.resourceVersion === "string", JSON.stringify(listed));
    assert.deepEqual(JSON.parse(await bufCurl("--schema", "proto", `${base}/grpc.health.v1.Health/Check`)), { status: "SERVING" });
  } finally {
    await guarded.stop();
  }
});
