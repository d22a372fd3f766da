/**
 * The repository's documentation and comments stand on their own: they cite nothing a reader
 * of the repository does not have (design notes, issue trackers, paths of a build machine).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** What a reader outside this repository could not follow. */
const OUTSIDE_REFERENCES: [RegExp, string][] = [
  [/DESIGN(\.md|\s*§)/, "a design document that is not in the repository"],
  [/§\s?\d/, "a section of a document that is not in the repository"],
  [/\b(issue|ticket)s?\s+#?\d+\b/i, "an issue tracker entry"],
  [/\bthe lead\b/i, "a person outside the repository"],
  [/\/work\/(wt|main|shared)\b|\/tmp\/bash_jobs/, "a path of a build machine"],
];

test("README, docs, comments and examples cite nothing outside the repository", () => {
  const files = execFileSync("git", ["ls-files", "-z"], { cwd: ROOT, encoding: "utf8" })
    .split("\0")
    .filter((f) => /\.(md|ts|mjs|js|proto|py|sh|yaml|yml|json)$/.test(f))
    // Generated and vendored files are not ours to word; this file names the patterns.
    .filter((f) => !/^(src\/gen|proto\/google|proto\/grpc)\//.test(f) && f !== "test/docs.test.ts" && f !== "package-lock.json");
  assert.ok(files.length > 50, `git ls-files found ${files.length} files`);
  const found: string[] = [];
  for (const f of files) {
    readFileSync(`${ROOT}/${f}`, "utf8")
      .split("\n")
      .forEach((line, i) => {
        for (const [re, what] of OUTSIDE_REFERENCES) if (re.test(line)) found.push(`${f}:${i + 1}: ${what}: ${line.trim()}`);
      });
  }
  assert.deepEqual(found, []);
});
