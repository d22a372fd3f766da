/**
 * kubectl's small habits in the k4s command, run as a real process against a real server:
 * delete goes on past what is missing, get takes several names, watch rows stay aligned and say
 * deletions once, --help shows durations as durations, --version.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { K4sServer } from "../src/server/server.js";
import { runK4s, startTestServer } from "./helpers.js";

let server: K4sServer;
let dir: string;

before(async () => {
  server = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), "k4s-habits-"));
});

after(async () => {
  await server.stop();
});

function k4s(args: string[], input?: string) {
  return runK4s([...args, "--server", server.address], {}, input);
}

const services = (...names: string[]) =>
  names.map((n) => `kind: Service\nmetadata: {name: ${n}}\nspec: {selector: "${n}-*"}\n`).join("---\n");

test("delete -f and delete KIND A B C go on past objects that do not exist, report each, and exit 1", async () => {
  const path = join(dir, "three.yaml");
  writeFileSync(path, services("del-a", "del-b", "del-c"));
  assert.equal((await k4s(["apply", "-f", path])).code, 0);
  assert.equal((await k4s(["delete", "svc", "del-b"])).code, 0);
  let r = await k4s(["delete", "-f", path]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "service/del-a deleted\nservice/del-c deleted\n");
  assert.equal(r.stderr, 'error: NOT_FOUND: Service "del-b" not found\n');

  assert.equal((await k4s(["apply", "-f", "-"], services("del-x", "del-z"))).code, 0);
  r = await k4s(["delete", "svc", "del-x", "del-y", "del-z", "del-w"]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "service/del-x deleted\nservice/del-z deleted\n");
  assert.equal(r.stderr, 'error: NOT_FOUND: Service "del-y" not found\nerror: NOT_FOUND: Service "del-w" not found\n');
});
