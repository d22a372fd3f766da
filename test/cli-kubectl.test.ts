/**
 * kubectl's habits in the k4s command, run as a real process against a real server: version,
 * completion, label and annotate, edit, diff, explain, rollout restart, logs of several
 * containers, progress on long waits.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { K4sServer } from "../src/server/server.js";
import { runK4s, startTestServer } from "./helpers.js";

let server: K4sServer;
let dir: string;

before(async () => {
  server = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), "k4s-kubectl-"));
});

after(async () => {
  await server.stop();
});

function k4s(args: string[], input?: string, env: Record<string, string> = {}) {
  return runK4s([...args, "--server", server.address], env, input);
}

const VERSION = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")).version as string;

test("k4s version prints this command's and the server's versions; --client needs no server", async () => {
  const [both, json, clientOnly, noServer] = await Promise.all([
    k4s(["version"]),
    k4s(["version", "-o", "json"]),
    runK4s(["version", "--client", "--server", "127.0.0.1:1"]),
    runK4s(["version", "--server", "127.0.0.1:1"]),
  ]);
  const platform = `${process.platform}/${process.arch}`;
  assert.equal(both.code, 0, both.stderr);
  assert.equal(
    both.stdout,
    `Client Version: ${VERSION} (node ${process.version}, ${platform})\nServer Version: ${VERSION} (node ${process.version}, ${platform}), API k4s/v1\n`,
  );
  const parsed = JSON.parse(json.stdout);
  assert.deepEqual(parsed.serverVersion, { version: VERSION, apiVersion: "k4s/v1", runtimeVersion: process.version, platform });
  assert.equal(parsed.clientVersion.version, VERSION);
  assert.equal(clientOnly.code, 0);
  assert.equal(clientOnly.stdout, `Client Version: ${VERSION} (node ${process.version}, ${platform})\n`);
  assert.equal(noServer.code, 1);
  assert.match(noServer.stdout, /^Client Version: /);
  assert.match(noServer.stderr, /^error: UNAVAILABLE: .*is a k4s server running at 127\.0\.0\.1:1\?/);
});
