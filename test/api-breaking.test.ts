/**
 * The API compatibility check CI runs (scripts/api-breaking.mjs): proto/ against the image of
 * the last release. It passes on an unchanged API and names what a breaking change removed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const run = promisify(execFile);
const SCRIPT = join(root, "scripts", "api-breaking.mjs");

test("api-breaking: the same API passes; a removed field, a renumbered field and a removed RPC fail, naming them", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-api-test-"));
  try {
    // The "release": today's proto/, built as --release builds it, into a copy of the repository's proto.
    const released = join(dir, "released");
    cpSync(join(root, "proto"), join(released, "proto"), { recursive: true });
    const image = join(dir, "release.binpb");
    await run(join(root, "node_modules", ".bin", "buf"), ["build", "proto", "--path", "proto/k4s", "-o", image], { cwd: released });
    const ok = await run(process.execPath, [SCRIPT, "--against", image], { cwd: root });
    assert.match(ok.stdout, /keeps the released API/);

    const edits: Array<[string, (s: string) => string, RegExp]> = [
      ["resources.proto", (s) => s.replace("  string host = 4;", "  reserved 4;"), /field "4" with name "host" on message "ContainerStatus" was deleted/],
      ["resources.proto", (s) => s.replace("int32 queue_limit = 9;", "int32 queue_limit = 19;"), /queue_limit/],
      ["messaging_service.proto", (s) => s.replace(/\n  \/\/ Send queues[^]*?rpc Send\(SendRequest\) returns \(SendResponse\);/, ""), /"Send" on service "MessagingService" was deleted/],
    ];
    for (const [file, edit, expected] of edits) {
      const changed = join(dir, "changed", "proto");
      rmSync(join(dir, "changed"), { recursive: true, force: true });
      cpSync(join(root, "proto"), changed, { recursive: true });
      const path = join(changed, "k4s", "v1", file);
      const before = readFileSync(path, "utf8");
      writeFileSync(path, edit(before));
      assert.notEqual(readFileSync(path, "utf8"), before, `the edit of ${file} changed nothing`);
      const failed = await run(process.execPath, [SCRIPT, "--proto", changed, "--against", image], { cwd: root }).catch((e: { code: number; stderr: string }) => e);
      assert.equal((failed as { code: number }).code, 1, `${file}: ${JSON.stringify(failed)}`);
      assert.match((failed as { stderr: string }).stderr, expected);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
