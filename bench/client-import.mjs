#!/usr/bin/env node
/**
 * What importing the SDK costs: modules loaded (ES modules and CommonJS files) and wall time of
 * `import("k4s/client")` and `import("k4s/workers")`, each in a fresh Node process, against the
 * baseline every connect-es gRPC client pays (`@connectrpc/connect-node` with
 * `@bufbuild/protobuf`), measured in the same run. It also lists any server-only package the
 * import loaded (SQLite, prom-client, reflection, health, etcd, k4s's server code): there must
 * be none, and `--check` exits 1 when there is one.
 *
 *   node bench/client-import.mjs [--runs 7] [--check]
 *
 * Plain JavaScript on purpose: the package's consumer test runs it from an empty folder where
 * k4s was installed from its tarball.
 */
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const SERVER_ONLY = ["better-sqlite3", "prom-client", "@grpc/reflection", "grpc-health-check", "etcd3", "/dist/server/"];

/** Counts ES module loads through a loader hook, in the child process only. */
const HOOKS = `
let urls = [];
export async function initialize(port) { port.on("message", () => port.postMessage(urls)); }
export async function load(url, context, next) { urls.push(url); return next(url, context); }
`;

/** In a child: imports the specifiers and prints the wall time, or (count) what was loaded. */
async function measureChild(specifiers, count) {
  if (!count) {
    const t0 = performance.now();
    for (const s of specifiers) await import(s);
    process.stdout.write(JSON.stringify({ ms: performance.now() - t0 }));
    return;
  }
  const { register, createRequire } = await import("node:module");
  const { MessageChannel } = await import("node:worker_threads");
  const { port1, port2 } = new MessageChannel();
  register(`data:text/javascript,${encodeURIComponent(HOOKS)}`, { data: port2, transferList: [port2] });
  const require = createRequire(import.meta.url);
  const cjsBefore = new Set(Object.keys(require.cache));
  for (const s of specifiers) await import(s);
  port1.postMessage(0);
  const esm = await new Promise((resolve) => port1.once("message", resolve));
  port1.close();
  const cjs = Object.keys(require.cache).filter((k) => !cjsBefore.has(k));
  const files = [...esm.filter((u) => u.startsWith("file:")).map((u) => fileURLToPath(u)), ...cjs];
  const serverOnly = SERVER_ONLY.filter((name) => files.some((f) => f.includes(name.startsWith("/") ? name : `/node_modules/${name}/`)));
  process.stdout.write(JSON.stringify({ esm: esm.length, cjs: cjs.length, serverOnly }));
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function child(mode, specifiers) {
  const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), mode, ...specifiers], { encoding: "utf8" });
  return JSON.parse(out);
}

/** Module counts from one hooked process; times from `runs` plain ones (the hook slows loading). */
function measure(specifiers, runs) {
  const counts = child("--count", specifiers);
  const times = Array.from({ length: runs }, () => child("--time", specifiers).ms);
  return { ...counts, ms: median(times), min: Math.min(...times) };
}

const args = process.argv.slice(2);
if (args[0] === "--time" || args[0] === "--count") {
  await measureChild(args.slice(1), args[0] === "--count");
} else {
  const runs = Number(args[args.indexOf("--runs") + 1] || 0) || 7;
  const check = args.includes("--check");
  const baseline = measure(["@connectrpc/connect-node", "@bufbuild/protobuf"], runs);
  const rows = [
    ["baseline: @connectrpc/connect-node + @bufbuild/protobuf", baseline],
    ['import("k4s/client")', measure(["k4s/client"], runs)],
    ['import("k4s/workers")', measure(["k4s/workers"], runs)],
  ];
  console.log(`import cost, ${runs} fresh processes each (median ms, min ms), Node ${process.version}`);
  console.log("| import | ES modules | CommonJS files | median ms | min ms | × baseline | server-only modules |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
  for (const [name, r] of rows) {
    const ratio = (r.ms / baseline.ms).toFixed(2);
    console.log(`| ${name} | ${r.esm} | ${r.cjs} | ${r.ms.toFixed(0)} | ${r.min.toFixed(0)} | ${ratio} | ${r.serverOnly.join(", ") || "none"} |`);
  }
  const leaked = rows.slice(1).filter(([, r]) => r.serverOnly.length > 0);
  if (check && leaked.length > 0) {
    console.error(`server-only modules loaded by ${leaked.map(([n, r]) => `${n}: ${r.serverOnly.join(", ")}`).join("; ")}`);
    process.exit(1);
  }
}
