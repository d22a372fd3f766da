/**
 * The worker conformance suite on a machine without Python's gRPC packages: the TypeScript
 * scenarios still run and pass, and the Python ones fail with one line naming what to install.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

test("without Python's gRPC packages the TypeScript conformance scenarios pass and the Python ones name the Debian packages", async () => {
  // Python without its site packages: the interpreter is there, Debian's grpc modules are not.
  const bare = join(mkdtempSync(join(tmpdir(), "k4s-nopython-")), "python3");
  writeFileSync(bare, '#!/bin/sh\nexec /usr/bin/python3 -S "$@"\n');
  chmodSync(bare, 0o755);
  const root = fileURLToPath(new URL("..", import.meta.url));
  const run = spawn(process.execPath, ["--import", "tsx", "--test", "--test-reporter", "tap", "test/conformance.test.ts"], {
    cwd: root,
    // Without the runner's own marker, or the child would think it runs nested and skip the file.
    env: { ...withoutTestContext(process.env), K4S_TEST_PYTHON: bare },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  run.stdout.on("data", (d) => (out += d));
  run.stderr.on("data", (d) => (out += d));
  const code = await new Promise<number | null>((resolve) => run.on("close", resolve));
  assert.equal(code, 1, out);
  const suite = (name: string) => {
    const start = out.indexOf(`# Subtest: worker conformance: ${name}`);
    const end = out.indexOf("# Subtest: worker conformance:", start + 1);
    return out.slice(start, end < 0 ? undefined : end);
  };
  const ts = suite("typescript");
  const py = suite("python");
  assert.ok(ts.length > 0 && py.length > 0, out);
  assert.match(ts, /\n\s+ok \d+ - request\/reply returns the handler's value/);
  assert.doesNotMatch(ts, /\n\s+not ok/, ts);
  assert.doesNotMatch(py, /\n\s+ok \d+ - request\/reply/, "the Python scenarios cannot pass");
  assert.match(py, /cannot import grpc and grpc_tools: the Python tests need Debian's python3-grpcio and python3-grpc-tools \(apt-get install python3-grpcio python3-grpc-tools\)/);
});

function withoutTestContext(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { NODE_TEST_CONTEXT: _, ...rest } = env;
  return rest;
}
