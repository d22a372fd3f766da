/**
 * Who may run what on a machine, and which processes outlive which: the local worker host of
 * `k4s server` ends with it (also on SIGKILL), hosts spawn command containers only when told
 * to, and the CLI takes its token from a file or the environment rather than from argv.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { ContainerSchema } from "../src/gen/k4s/v1/resources_pb.js";
import type { K4sServer } from "../src/server/server.js";
import { Code, ConnectError, createClient as createConnectClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createClient } from "../src/client/index.js";
import { ResourceService } from "../src/gen/k4s/v1/resource_service_pb.js";
import { childrenOf, eventually, isAlive, runK4s, spawnK4s, startTestServer, WORKERS_SDK_JS, type Proc } from "./helpers.js";
import { openRawPeer } from "./raw-peer.js";

let dir: string;
const procs: Proc[] = [];
const servers: K4sServer[] = [];
/** Processes the hosts spawned for command containers. */
const spawnedPids: number[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), "k4s-host-safety-"));
});

after(async () => {
  await Promise.all(procs.map((p) => p.kill("SIGKILL")));
  for (const pid of spawnedPids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  for (const s of servers) await s.stop();
  rmSync(dir, { recursive: true, force: true });
});


test("the local worker host of k4s server ends when the server is killed with SIGKILL", async () => {
  const server = spawnK4s(["server", "--port", "0", "--memory", "--heartbeat-ms", "1000"]);
  procs.push(server);
  await server.waitFor("listening on", 30_000);
  const pid = server.child.pid!;
  const workers = await eventually<number[] | undefined>(() => {
    const c = childrenOf(pid);
    return c.length > 0 ? c : undefined;
  }, 30_000, "the local worker host to start") as number[];
  await server.kill("SIGKILL");
  try {
    await eventually(() => workers.every((w) => !isAlive(w)), 20_000, "the orphaned local worker host to exit");
  } finally {
    for (const w of workers) if (isAlive(w)) process.kill(w, "SIGKILL");
  }
});

test("a host spawns command containers only with --allow-command", async () => {
  const server = await startTestServer({ heartbeatIntervalMs: 1000 });
  servers.push(server);
  const plain = spawnK4s(["worker", "--server", server.address, "--name", "plain"]);
  procs.push(plain);
  await plain.waitFor("host plain serving", 20_000);
  await server.resources.create(
    create(ContainerSchema, { metadata: { name: "cmd" }, spec: { command: ["/bin/sh", "-c", "sleep 60"] } }),
  );
  await eventually(
    async () => /none of the connected hosts may spawn processes \(plain\)/.test((await server.resources.get("Container", "cmd"))?.status?.message ?? ""),
    15_000,
    "cmd to wait for a host that may spawn",
  );
  const spawner = spawnK4s(["worker", "--server", server.address, "--name", "spawner", "--allow-command"]);
  procs.push(spawner);
  await spawner.waitFor("host spawner serving containers", 20_000);
  assert.match(spawner.stdout(), /spawns command containers/);
  await eventually(async () => (await server.resources.get("Container", "cmd"))?.status?.host === "spawner", 15_000, "cmd on spawner");
});

test("the CLI reads its token from --token-file or K4S_TOKEN, and warns when it is given on the command line", async () => {
  const server = await startTestServer({ token: "t0ken-in-a-file" });
  servers.push(server);
  const file = join(dir, "token");
  writeFileSync(file, "t0ken-in-a-file\n");
  const fromFile = await runK4s(["get", "containers", "--server", server.address, "--token-file", file]);
  assert.equal(fromFile.code, 0, fromFile.stderr);
  assert.doesNotMatch(fromFile.stderr, /warning/);
  const fromEnv = await runK4s(["get", "containers", "--server", server.address], { K4S_TOKEN: "t0ken-in-a-file" });
  assert.equal(fromEnv.code, 0, fromEnv.stderr);
  assert.doesNotMatch(fromEnv.stderr, /warning/);
  const fromFlag = await runK4s(["get", "containers", "--server", server.address, "--token", "t0ken-in-a-file"]);
  assert.equal(fromFlag.code, 0, fromFlag.stderr);
  assert.match(fromFlag.stderr, /^warning: --token shows the token to every user of this machine \(ps\); use --token-file FILE or K4S_TOKEN$/m);
  const missing = await runK4s(["get", "containers", "--server", server.address, "--token-file", join(dir, "nope")]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^error: cannot read --token-file .*nope: ENOENT/);
});

test("a spawned process gets only its container's credential: it attaches with it, and the credential admits nothing else", async () => {
  const token = "cluster-s3cret";
  const server = await startTestServer({ heartbeatIntervalMs: 1000, token });
  servers.push(server);
  const tokenFile = join(dir, "cluster-token");
  writeFileSync(tokenFile, `${token}\n`);
  const envFile = join(dir, "spawned-env.json");
  const script = join(dir, "spawned.mjs");
  writeFileSync(
    script,
    `import { writeFileSync } from "node:fs";
import { attach, defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};
const e = process.env;
writeFileSync(${JSON.stringify(envFile)}, JSON.stringify({ token: e.K4S_TOKEN ?? null, attachToken: e.K4S_ATTACH_TOKEN ?? null, container: e.K4S_CONTAINER, pid: process.pid }));
attach({ worker: defineWorker(async (ctx) => { await ctx.handle((m) => "spawned:" + m.value); }) });
`,
  );
  const host = spawnK4s(["worker", "--server", server.address, "--name", "cred-host", "--allow-command", "--token-file", tokenFile]);
  procs.push(host);
  await host.waitFor("host cred-host serving", 20_000);
  const client = createClient({ address: server.address, token, reconnect: false });
  try {
    await client.apply(`kind: Container\nmetadata: {name: cred-cmd}\nspec: {command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(script)}]}\n---\nkind: Container\nmetadata: {name: cred-ext}\nspec: {}\n`);
    await eventually(async () => (await client.get("Container", "cred-cmd")).status?.ready, 30_000, "the spawned process to attach");
    assert.equal(await client.request("container/cred-cmd", "hi", { timeoutMs: 10_000 }), "spawned:hi");
  } finally {
    await client.close();
  }
  const env = JSON.parse(readFileSync(envFile, "utf8")) as { token: string | null; attachToken: string | null; container: string; pid: number };
  // The host is SIGKILLed at the end, which does not end the process it spawned (an attached
  // process outlives its host and keeps reconnecting): the test ends it itself.
  spawnedPids.push(env.pid);
  assert.equal(env.token, null, "the cluster's bearer token is not handed to a spawned process");
  assert.equal(env.container, "cred-cmd");
  assert.ok(env.attachToken && env.attachToken !== token, "it gets its own container's credential");

  // What the credential does not admit: a host's Hello, another container's Attach, any other API.
  const header = { "k4s-attach-token": env.attachToken };
  const hello = await openRawPeer(server.address, { case: "hello", value: { name: "cred-host", role: "host" } }, header).ended;
  assert.equal(hello?.code, Code.PermissionDenied, String(hello));
  const other = await openRawPeer(server.address, { case: "attach", value: { container: "cred-ext", token: env.attachToken } }, header).ended;
  assert.equal(other?.code, Code.PermissionDenied, String(other));
  const resources = createConnectClient(ResourceService, createGrpcTransport({ baseUrl: `http://${server.address}` }));
  const listed = await resources.list({ kind: "Container" }, { headers: header }).then(
    () => undefined,
    (err: unknown) => ConnectError.from(err),
  );
  assert.equal(listed?.code, Code.Unauthenticated);
});
