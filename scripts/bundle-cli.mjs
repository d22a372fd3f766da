#!/usr/bin/env node
/**
 * Bundles the k4s command (the compiled dist/cli/main.js and what it imports) into a few files
 * under dist/cli-bundle/, which bin/k4s.js runs. Node loads ES modules one file at a time, and a
 * command like `k4s get` imported ~190 of them: the bundle makes its start-up about a third
 * cheaper (bench/README.md has the figures). The library entry points (k4s/client, k4s/workers,
 * k4s/server) stay unbundled in dist/.
 *
 * Only k4s's own code and pure-JavaScript packages that read no files of their own at run time
 * are bundled; every other dependency (grpc-js, native SQLite, etcd, reflection, health,
 * prom-client, and any dependency added later) stays an ordinary import from node_modules.
 * Commands loaded lazily (server, worker, example) stay lazy: they become chunks of their own.
 *
 *   node scripts/bundle-cli.mjs        (npm run build runs it after tsc)
 */
import { readFileSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const BUNDLED = new Set(["commander", "@connectrpc/connect", "@connectrpc/connect-node", "@bufbuild/protobuf", "minimatch"]);
const { dependencies } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
const external = Object.keys(dependencies).filter((name) => !BUNDLED.has(name));

const outdir = `${root}dist/cli-bundle`;
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { main: `${root}dist/cli/main.js` },
  outdir,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  minify: true,
  external: external.flatMap((name) => [name, `${name}/*`]),
  // The bundled CommonJS packages call require() for Node built-ins.
  banner: { js: 'import { createRequire as __k4sCreateRequire } from "node:module"; const require = __k4sCreateRequire(import.meta.url);' },
  logLevel: "warning",
});
