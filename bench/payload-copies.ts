/**
 * Copies of a payload on the server's path: a k4s server process (in memory) with a census of the
 * large buffers it allocates from JavaScript (bench/lib/buffer-census.ts), one attached bench
 * worker, and this process as the client. It sends N requests (one in flight) and then N
 * fire-and-forget messages of 64 KiB and prints the server's buffers of at least 60,000 bytes per
 * message: each is a copy of the payload (or of a batch holding it). Reads from the socket are
 * not counted (Node allocates them in C++): the figure is what the server's JavaScript copies.
 *
 *   node --import tsx bench/payload-copies.ts [--calls 500] [--bytes 65536]
 */
import { Command } from "commander";
import { createClient } from "../src/client/index.js";
import { bytesPayload } from "./clients/bench-client.js";
import { forkTs } from "./lib/processes.js";
import { K4S_BENCH_MANIFEST } from "./lib/systems.js";

const opts = new Command()
  .option("--calls <n>", "requests, then sends, of the payload", "500")
  .option("--bytes <n>", "payload bytes", "65536")
  .parse()
  .opts<{ calls: string; bytes: string }>();
const calls = Number(opts.calls);
const bytes = Number(opts.bytes);
const here = (p: string) => new URL(p, import.meta.url);

const srv = await forkTs("k4s server", here("k4s/k4s-server-process.ts"), [], { execArgv: ["--import", new URL("lib/buffer-census.ts", import.meta.url).pathname] });
const address = String(srv.ready.address);
const stops: (() => Promise<void>)[] = [() => srv.child.stop()];
try {
  const client = createClient({ address, name: `copies-${process.pid}` });
  stops.unshift(() => client.close());
  await client.apply(K4S_BENCH_MANIFEST);
  const worker = await forkTs("k4s worker bench1-0", here("k4s/k4s-bench-worker.ts"), [address, "bench1-0"]);
  stops.unshift(() => worker.child.stop());
  const payload = bytesPayload(bytes);
  await client.request("container/bench1-0", payload, { timeoutMs: 20_000 });
  const census = async () => (await srv.child.ask<{ census: { count: number; bytes: number } }>({ cmd: "census" })).census;
  const measure = async (what: string, one: () => Promise<unknown>) => {
    const before = await census();
    for (let i = 0; i < calls; i++) await one();
    const after = await census();
    const n = after.count - before.count;
    console.log(`${what}: ${calls} x ${bytes} B: server allocated ${n} buffers >= 60,000 B (${(n / calls).toFixed(2)} per message, ${((after.bytes - before.bytes) / calls / bytes).toFixed(2)} payloads' bytes per message)`);
  };
  await measure("request (1 in flight)", () => client.request("container/bench1-0", payload, { timeoutMs: 20_000 }));
  await measure("send (1 in flight)", () => client.send("container/bench1-0", payload));
} finally {
  for (const stop of stops) await stop().catch(() => {});
}
