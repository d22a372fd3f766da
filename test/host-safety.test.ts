/**
 * Who may run what on a machine, and which processes outlive which: the local worker host of
 * `k4s server` ends with it (also on SIGKILL), hosts spawn command containers only when told
 * to, and the CLI takes its token from a file or the environment rather than from argv.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { ContainerSchema } from "../src/gen/k4s/v1/resources_pb.js";
import type { K4sServer } from "../src/server/server.js";
import { childrenOf, eventually, isAlive, runK4s, spawnK4s, startTestServer, type Proc } from "./helpers.js";

let dir: string;
const procs: Proc[] = [];
const servers: K4sServer[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), "k4s-host-safety-"));
});

after(async () => {
  await Promise.all(procs.map((p) => p.kill("SIGKILL")));
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
