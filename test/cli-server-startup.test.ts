/**
 * `k4s server` failing to start, run as a real process: a busy port or metrics port, data dirs
 * it cannot use. Each is one line naming the port or path and the reason, a non-zero exit at
 * once, and nothing written.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { K4S_BIN, eventually, runK4s, spawnK4s } from "./helpers.js";

/** Generous for a loaded 2-core machine; a start-up failure takes well under a second alone. */
const EXIT_WITHIN_MS = 30_000;

/** Runs k4s and fails the test if it does not exit by itself (the old failures hung). */
async function runToExit(args: string[], env: Record<string, string> = {}, via: string[] = []) {
  const p = spawnK4s(args, env, via);
  p.child.stdin!.end();
  const timer = setTimeout(() => p.child.kill("SIGKILL"), EXIT_WITHIN_MS);
  const code = await p.exited;
  clearTimeout(timer);
  assert.notEqual(code, "SIGKILL", `k4s ${args.join(" ")} did not exit by itself; output:\n${p.stdout()}${p.stderr()}`);
  return { code, stdout: p.stdout(), stderr: p.stderr() };
}

function busyPort(): Promise<{ port: number; server: Server }> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => resolve({ port: (server.address() as { port: number }).port, server }));
  });
}

const tmp = () => mkdtempSync(join(tmpdir(), "k4s-startup-"));

test("a busy --port or --metrics-port: one line naming that port, exit 1 at once, no data dir created", async () => {
  const { port, server } = await busyPort();
  try {
    const dir = tmp();
    const [grpcBusy, metricsBusy] = await Promise.all([
      runToExit(["server", "--port", String(port), "--data-dir", join(dir, "a", "b"), "--no-local-worker"]),
      runToExit(["server", "--port", "0", "--metrics-port", String(port), "--data-dir", join(dir, "m"), "--no-local-worker"]),
    ]);
    assert.equal(grpcBusy.code, 1);
    assert.equal(grpcBusy.stderr, `error: cannot listen on 127.0.0.1:${port}: address already in use (another k4s server? pick another --port)\n`);
    assert.equal(grpcBusy.stdout, "");
    assert.equal(metricsBusy.code, 1);
    assert.equal(metricsBusy.stderr, `error: cannot serve metrics on 127.0.0.1:${port}: address already in use (pick another --metrics-port)\n`);
    assert.deepEqual(readdirSync(dir), [], "nothing written when start-up fails");
  } finally {
    server.close();
  }
});

test("bad data dirs: a file, /proc/k4s, a directory in use by another server: one line naming the path, exit 1", async () => {
  const dir = tmp();
  const file = join(dir, "a-file");
  writeFileSync(file, "not a directory");
  const inUse = join(dir, "in-use");
  const first = spawnK4s(["server", "--port", "0", "--data-dir", inUse, "--no-local-worker"]);
  try {
    await first.waitFor(/listening on/);
    const [isFile, underFile, proc, busy] = await Promise.all([
      runToExit(["server", "--port", "0", "--data-dir", file, "--no-local-worker"]),
      runToExit(["server", "--port", "0", "--data-dir", join(file, "sub"), "--no-local-worker"]),
      runToExit(["server", "--port", "0", "--data-dir", "/proc/k4s", "--no-local-worker"]),
      runToExit(["server", "--port", "0", "--data-dir", inUse, "--no-local-worker"]),
    ]);
    assert.equal(isFile.code, 1);
    assert.equal(isFile.stderr, `error: data dir ${file}: it is a file, not a directory\n`);
    assert.equal(underFile.stderr, `error: data dir ${join(file, "sub")}: ${file} is a file, not a directory\n`);
    assert.equal(proc.code, 1);
    assert.equal(proc.stderr, "error: data dir /proc/k4s: cannot create /proc/k4s: /proc does not take new directories\n");
    assert.equal(busy.code, 1);
    assert.equal(busy.stderr, `error: cannot open the store ${join(inUse, "k4s.db")}: in use by another process\n`);
    assert.equal(existsSync("/proc/k4s"), false);
  } finally {
    await first.kill();
  }
});

test("a read-only data dir: one line naming the path, exit 1", async () => {
  const dir = tmp();
  const ro = join(dir, "read-only");
  mkdirSync(ro);
  chmodSync(ro, 0o555);
  // root writes anywhere through its capabilities: run the server without them then, so the
  // directory's mode counts as it does for any other user.
  const wrapper = process.getuid?.() === 0 ? ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] : [];
  const r = await runToExit(["server", "--port", "0", "--data-dir", ro, "--no-local-worker"], {}, wrapper);
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stderr, `error: data dir ${ro}: not writable (permission denied)\n`);
  assert.deepEqual(readdirSync(ro), []);
});

test("a server started through npx/npm exec stops when that npm process is killed", async () => {
  // A folder that has k4s installed, as a user's project would: npm exec finds the local bin.
  const project = tmp();
  mkdirSync(join(project, "node_modules", ".bin"), { recursive: true });
  symlinkSync(K4S_BIN, join(project, "node_modules", ".bin", "k4s"));
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "uses-k4s", private: true }));
  // Its own process group, so whatever outlives npm can be cleaned up below.
  const npm = spawn("npm", ["exec", "--offline", "--", "k4s", "server", "--port", "0", "--memory", "--no-local-worker"], {
    cwd: project,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  npm.stdout.on("data", (d) => (out += d));
  npm.stderr.on("data", (d) => (out += d));
  try {
    const address: string = await eventually(() => /listening on (\S+)/.exec(out)?.[1] ?? "", 60_000, `the server's address; output:\n${out}`);
    assert.equal((await runK4s(["get", "c", "--server", address])).code, 0);
    process.kill(npm.pid!, "SIGKILL");
    await eventually(() => /npx \(npm exec\) that started it is gone; shutting down/.test(out), 30_000, `the server to notice; output:\n${out}`);
    await eventually(async () => (await runK4s(["get", "c", "--server", address])).code === 1, 30_000, "the server to stop");
  } finally {
    try {
      process.kill(-npm.pid!, "SIGKILL");
    } catch {
      // already gone, as it should be
    }
  }
});
