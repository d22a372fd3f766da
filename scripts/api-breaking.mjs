#!/usr/bin/env node
/**
 * Keeps the released API stable: compares proto/ with the image of the last release in
 * api-releases/ (`buf breaking`, the FILE rules of buf.yaml), and makes that image at a release.
 *
 *   node scripts/api-breaking.mjs                  check proto/ against the newest release image
 *   node scripts/api-breaking.mjs --against FILE   check against this image instead
 *   node scripts/api-breaking.mjs --release v0.2.0 write api-releases/v0.2.0.binpb from proto/
 *
 * The baseline is a committed file rather than only a git tag because a fresh CI clone may carry
 * no tags; when the release tag is present too, the check also makes sure the image still
 * matches the tag's proto/, so nobody can quietly move the baseline.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const releases = join(root, "api-releases");
const buf = join(root, "node_modules", ".bin", "buf");
const args = process.argv.slice(2);
const option = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const protoDir = option("--proto") ?? join(root, "proto");

function run(cmd, argv, cwd = root) {
  return execFileSync(cmd, argv, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** Release images by version, newest last ("v0.10.0" after "v0.9.1"). */
function releaseImages() {
  if (!existsSync(releases)) return [];
  const version = (f) => f.replace(/^v|\.binpb$/g, "").split(".").map(Number);
  return readdirSync(releases)
    .filter((f) => /^v\d+\.\d+\.\d+\.binpb$/.test(f))
    .sort((a, b) => {
      const [x, y] = [version(a), version(b)];
      for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i];
      return 0;
    });
}

/** Builds the image of a proto folder (the k4s files only; the vendored ones are not the API). */
function build(dir, out) {
  const base = dirname(dir);
  const name = dir.slice(base.length + 1);
  run(buf, ["build", name, "--path", `${name}/k4s`, "-o", out], base);
}

/** The FILE rules of buf.yaml, for comparing two images (which carry no configuration). */
const BREAKING_CONFIG = JSON.stringify({ version: "v2", breaking: { use: ["FILE"] } });

/** Throws with buf's report when `image` breaks `baseline`. */
function breaking(image, baseline) {
  run(buf, ["breaking", image, "--against", baseline, "--config", BREAKING_CONFIG]);
}

const release = option("--release");
if (release) {
  if (!/^v\d+\.\d+\.\d+$/.test(release)) throw new Error(`--release wants a version like v0.2.0, got ${release}`);
  mkdirSync(releases, { recursive: true });
  const out = join(releases, `${release}.binpb`);
  build(protoDir, out);
  console.log(`wrote ${out}: commit it with the release, then tag ${release}`);
  process.exit(0);
}

const against = option("--against") ?? (releaseImages().length > 0 ? join(releases, releaseImages().at(-1)) : undefined);
if (!against) {
  console.log("api-breaking: no released API yet (api-releases/ is empty): nothing to compare against");
  process.exit(0);
}
const tag = /\/(v\d+\.\d+\.\d+)\.binpb$/.exec(against)?.[1];
if (tag && !option("--against")) {
  let tagged = "";
  try {
    tagged = run("git", ["rev-parse", "-q", "--verify", `refs/tags/${tag}`]).trim();
  } catch {
    tagged = "";
  }
  if (tagged) {
    // The committed image must be the tag's API: build the tag's proto/ and compare both ways.
    const tmp = mkdtempSync(join(tmpdir(), "k4s-api-"));
    try {
      execFileSync("sh", ["-c", `git archive "${tag}" proto | tar -x -C "${tmp}"`], { cwd: root, stdio: ["ignore", "ignore", "pipe"] });
      const image = join(tmp, "tag.binpb");
      build(join(tmp, "proto"), image);
      breaking(image, against);
      breaking(against, image);
    } catch (err) {
      console.error(`api-breaking: ${against} does not match the API of tag ${tag}:\n${err.stdout ?? ""}${err.stderr ?? err.message}`);
      process.exit(1);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
}
const tmp = mkdtempSync(join(tmpdir(), "k4s-api-"));
try {
  build(protoDir, join(tmp, "current.binpb"));
  breaking(join(tmp, "current.binpb"), against);
} catch (err) {
  console.error(`api-breaking: proto/ breaks the released API (${against}):\n${err.stdout ?? ""}${err.stderr ?? ""}`);
  process.exitCode = 1;
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
if (process.exitCode) process.exit();
console.log(`api-breaking: proto/ keeps the released API of ${against.replace(`${root}`, "")}`);
