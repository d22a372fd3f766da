/**
 * `node --import tsx bench/read-profiles.ts OUTPUT DIR SCENARIO IN_FLIGHT [--top N] [--by-file]`:
 * where the servers' CPU goes per call in one scenario of a profiled `npm run bench:cluster`
 * (BENCH_CPU_PROF=DIR, its output saved to OUTPUT). Only the samples taken inside that
 * scenario's measured windows count (start-up and the other scenarios do not); each function's
 * (or file's) self time is divided by the calls measured in those windows, summed over every
 * .cpuprofile in DIR. "(program)" and "(garbage collector)" are V8's own: native code (sockets,
 * HTTP/2 framing) and collecting garbage.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}
interface Window {
  scenario: string;
  inFlight: number;
  fromUs: number;
  toUs: number;
  calls: number;
}

const args = process.argv.slice(2);
const flag = (name: string) => args.indexOf(name);
const top = flag("--top") >= 0 ? Number(args[flag("--top") + 1]) : 30;
const byFile = flag("--by-file") >= 0;
const [output, dir, scenario, inFlight] = args.filter((a, i) => !a.startsWith("--") && args[i - 1] !== "--top");
if (!output || !dir || !scenario || !inFlight) {
  console.error("usage: read-profiles.ts OUTPUT DIR SCENARIO IN_FLIGHT [--top N] [--by-file]");
  process.exit(2);
}
const windows = readFileSync(output, "utf8")
  .split("\n")
  .filter((l) => l.startsWith("window "))
  .map((l) => JSON.parse(l.slice("window ".length)) as Window)
  .filter((w) => w.scenario === scenario && w.inFlight === Number(inFlight));
if (windows.length === 0) throw new Error(`no window of "${scenario}" at ${inFlight} in flight in ${output}`);
const calls = windows.reduce((sum, w) => sum + w.calls, 0);

const self = new Map<string, number>();
let busyUs = 0;
for (const file of readdirSync(dir).filter((f) => f.endsWith(".cpuprofile"))) {
  const p = JSON.parse(readFileSync(join(dir, file), "utf8")) as Profile;
  const nodes = new Map(p.nodes.map((n) => [n.id, n]));
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i]!;
    // A sample stands for the time until the next one.
    const us = p.timeDeltas[i + 1] ?? 0;
    if (!windows.some((w) => t >= w.fromUs && t < w.toUs)) continue;
    const { functionName, url, lineNumber } = nodes.get(p.samples[i]!)!.callFrame;
    if (functionName === "(idle)") continue;
    busyUs += us;
    const where = url.replace(/^.*\/(src|dist|node_modules)\//, "$1/");
    const key = byFile ? where || "(native)" : `${functionName || "(anonymous)"} ${where}:${lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + us);
  }
}
console.log(`${scenario}, ${inFlight} in flight: ${calls} calls in ${windows.length} window(s), servers busy ${(busyUs / calls).toFixed(1)} µs/call (profiled)`);
for (const [key, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${(us / calls).toFixed(2).padStart(8)} µs/call  ${key}`);
