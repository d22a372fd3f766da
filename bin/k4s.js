#!/usr/bin/env node
// The k4s command: runs the compiled and bundled JavaScript of dist/ (built by `npm run build`,
// which `npm ci`, `npm pack` and `npm test` run first), with no TypeScript loader.
let cli;
try {
  cli = await import("../dist/cli-bundle/main.js");
} catch (err) {
  if (err?.code !== "ERR_MODULE_NOT_FOUND" || !String(err.message).includes("cli-bundle")) throw err;
  process.stderr.write("k4s: dist/ is missing: run `npm run build` in the k4s folder first\n");
  process.exit(1);
}
await cli.main(process.argv);
