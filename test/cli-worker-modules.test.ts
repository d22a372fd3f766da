/**
 * `k4s worker --module NAME=PATH`, run as a real process: what it serves is printed at start,
 * a module without a worker function and a module named like the built-in one are refused.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { K4sServer } from "../src/server/server.js";
import { WORKERS_SDK_JS, runK4s, spawnK4s, startTestServer } from "./helpers.js";

let server: K4sServer;
let dir: string;

before(async () => {
  server = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), "k4s-modules-"));
});

after(async () => {
  await server.stop();
});

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

test("k4s worker --module prints the modules and functions it serves, and serves them", async () => {
  const greetings = file(
    "greetings.mjs",
    `import { defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};
export const greeter = defineWorker(async (ctx) => {
  for await (const msg of ctx.messages) if (msg.expectsReply) msg.reply("hello, " + msg.value);
});
export const shouter = defineWorker(async (ctx) => {
  for await (const msg of ctx.messages) if (msg.expectsReply) msg.reply(String(msg.value).toUpperCase());
});
export const VERSION = 3;
`,
  );
  const host = spawnK4s(["worker", "--server", server.address, "--name", "mods", "--module", `greetings=${greetings}`]);
  try {
    await host.waitFor(/serving containers/);
    await host.waitFor(/\n {2}greetings: greeter, shouter\n/);
    assert.match(host.stdout(), /^k4s worker host mods serving containers from 127\.0\.0\.1:\d+\n {2}greetings: greeter, shouter\n {2}workers: aggregator, aggregator_worker, calculator, calculator_worker, echo, echo_worker, generator, generator_worker, processor, processor_worker\n$/);
    const applied = await runK4s(
      ["apply", "-f", "-", "--wait", "--timeout", "30s", "--server", server.address],
      {},
      "kind: Container\nmetadata: {name: greet}\nspec: {module: greetings, function: greeter}\n",
    );
    assert.equal(applied.code, 0, applied.stderr);
    const reply = await runK4s(["request", "greet", '"k4s"', "--server", server.address]);
    assert.equal(reply.stdout, "hello, k4s\n", reply.stderr);
  } finally {
    await host.kill();
  }
});

test("k4s worker refuses a module with no worker function, the name of the built-in module, and a name given twice", async () => {
  const none = file("none.mjs", `export const answer = 42;\nexport const config = { a: 1 };\n`);
  const ok = file("ok.mjs", `import { defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};\nexport const w = defineWorker(async () => {});\n`);
  const [noWorker, shadow, twice] = await Promise.all([
    runK4s(["worker", "--server", server.address, "--module", `g=${none}`]),
    runK4s(["worker", "--server", server.address, "--module", `workers=${ok}`]),
    runK4s(["worker", "--server", server.address, "--module", `a=${ok}`, "--module", `a=${none}`]),
  ]);
  assert.equal(noWorker.code, 1);
  assert.equal(noWorker.stderr, `error: worker module "g" (${none}) exports no worker function: export defineWorker(...) results (exports seen: answer, config)\n`);
  assert.equal(shadow.code, 1);
  assert.equal(shadow.stderr, 'error: worker module name "workers" is the built-in module\'s: pick another name, or leave the built-in module out to replace it (builtin: false; k4s worker --no-builtin)\n');
  assert.equal(twice.code, 1);
  assert.equal(twice.stderr, 'error: --module "a" is given twice\n');
});
