#!/usr/bin/env node
/**
 * How long the k4s command takes for a one-shot call: `k4s get containers` against a running
 * in-memory server, as whole processes, against the cost of starting Node at all (`node -e 0`)
 * measured in the same run, alternating so that a machine's drift hits both alike. Prints the
 * median and minimum wall time of each and their ratio.
 *
 *   node bench/cli-startup.mjs [--runs 15]
 *
 * Needs a built dist/ (npm run build).
 */
import { execFileSync, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const bin = fileURLToPath(new URL("../bin/k4s.js", import.meta.url));
const args = process.argv.slice(2);
const runs = Number(args[args.indexOf("--runs") + 1] || 0) || 15;

const server = spawn(process.execPath, [bin, "server", "--memory", "--port", "0", "--no-local-worker"], { stdio: ["ignore", "pipe", "inherit"] });
const address = await new Promise((resolve, reject) => {
  let out = "";
  server.stdout.on("data", (d) => {
    out += d;
    const m = /listening on (\S+)/.exec(out);
    if (m) resolve(m[1]);
  });
  server.once("exit", (code) => reject(new Error(`the server exited (${code}) before listening`)));
});

/** Wall milliseconds of one whole process. */
function time(argv) {
  const t0 = performance.now();
  execFileSync(process.execPath, argv, { stdio: "ignore" });
  return performance.now() - t0;
}

const commands = {
  "node -e 0 (baseline)": ["-e", "0"],
  "k4s get containers": [bin, "get", "containers", "--server", address],
  "k4s --help": [bin, "--help"],
};
try {
  for (const argv of Object.values(commands)) time(argv); // warm the file cache
  const samples = Object.fromEntries(Object.keys(commands).map((k) => [k, []]));
  for (let i = 0; i < runs; i++) for (const [name, argv] of Object.entries(commands)) samples[name].push(time(argv));
  const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
  const base = median(samples["node -e 0 (baseline)"]);
  console.log(`k4s command start-up, ${runs} runs each, alternating (wall ms), Node ${process.version}`);
  console.log("| command | median ms | min ms | × node -e 0 |");
  console.log("| --- | ---: | ---: | ---: |");
  for (const [name, v] of Object.entries(samples)) {
    console.log(`| ${name} | ${median(v).toFixed(0)} | ${Math.min(...v).toFixed(0)} | ${(median(v) / base).toFixed(2)} |`);
  }
} finally {
  server.kill();
}
