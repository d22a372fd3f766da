/**
 * soak: the long versions of the reliability tests. Runs the crash-safety, fault, fuzz and load
 * test files again and again with larger sizes until the time is up, and prints the figures
 * each run reports. Exits non-zero when any run failed.
 *
 *   node --import tsx scripts/soak.ts [--rounds N] [--seconds S] [--scale K] [--only crash,faults,fuzz,load]
 *
 * --rounds: crash rounds per crash-safety run (default 20); --seconds: keep going this long
 * (default 300; at least one pass runs); --scale: multiplier of fuzz runs and load sizes
 * (default 3); --only: the test files to run. K4S_SEED fixes the random seed of every run.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

interface SoakOptions {
  rounds: number;
  seconds: number;
  scale: number;
  only: string[];
}

const FILES: Record<string, string> = {
  crash: "test/crash-safety.test.ts",
  faults: "test/faults.test.ts",
  fuzz: "test/fuzz.test.ts",
  load: "test/load.test.ts",
};

function parseArgs(argv: string[]): SoakOptions {
  const out: SoakOptions = { rounds: 20, seconds: 300, scale: 3, only: Object.keys(FILES) };
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`soak: ${flag} needs a value`);
    if (flag === "--only") {
      out.only = value.split(",").map((s) => s.trim());
      const unknown = out.only.filter((n) => !FILES[n]);
      if (unknown.length > 0) throw new Error(`soak: --only: unknown ${unknown.join(", ")}; expected some of ${Object.keys(FILES).join(", ")}`);
      continue;
    }
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new Error(`soak: ${flag} must be a whole number >= 1, got ${value}`);
    if (flag === "--rounds") out.rounds = n;
    else if (flag === "--seconds") out.seconds = n;
    else if (flag === "--scale") out.scale = n;
    else throw new Error(`soak: unknown flag ${flag}`);
  }
  return out;
}

/** Runs one test file to the end; resolves with its exit code and the figure lines it printed. */
function runFile(file: string, env: Record<string, string>): Promise<{ code: number; figures: string[]; output: string }> {
  const root = fileURLToPath(new URL("..", import.meta.url));
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", "--test", file], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("exit", (code, signal) => {
      const figures = output.split("\n").filter((l) => /figures|server rss|garbage answered/.test(l)).map((l) => l.replace(/^#\s*/, ""));
      resolve({ code: code ?? (signal ? 1 : 0), figures, output });
    });
  });
}

const options = parseArgs(process.argv.slice(2));
const env = {
  K4S_CRASH_ROUNDS: String(options.rounds),
  K4S_FUZZ_SCALE: String(options.scale),
  K4S_LOAD_SCALE: String(options.scale),
};
const deadline = Date.now() + options.seconds * 1000;
let pass = 0;
let failures = 0;
do {
  pass++;
  for (const name of options.only) {
    const started = Date.now();
    const r = await runFile(FILES[name]!, env);
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    console.log(`pass ${pass} ${name}: ${r.code === 0 ? "ok" : "FAILED"} in ${secs} s`);
    for (const f of r.figures) console.log(`  ${f}`);
    if (r.code !== 0) {
      failures++;
      console.log(r.output.split("\n").filter((l) => /not ok|error:|Error|expected|K4S_SEED/.test(l)).slice(0, 40).join("\n"));
    }
  }
} while (Date.now() < deadline);
console.log(`soak: ${pass} pass(es), ${failures} failed run(s)`);
process.exit(failures === 0 ? 0 : 1);
