/**
 * The worker SDK's own cost per delivery, in one process and without a server: N deliveries
 * handed to a container runtime (`createContainerRuntime`, what `attach` and a worker host feed
 * from the stream) and run through a worker of the bench's kind, whose results a link counts.
 * Prints CPU µs per delivery (the GC's included) and the rate. Compare trees with the same command (farm-bench
 * --vs, or alternating runs): the transport (grpc-js, the frame codec) is not in this figure.
 *
 *   node --import tsx bench/worker-runtime.ts [--messages 1000000] [--loop for-await|handle] [--reply]
 */
import { parseArgs } from "node:util";
import { createContainerRuntime, defineWorker } from "../src/workers/index.js";

const { values } = parseArgs({
  options: {
    messages: { type: "string", default: "1000000" },
    loop: { type: "string", default: "for-await" },
    reply: { type: "boolean", default: false },
    batch: { type: "string", default: "256" },
  },
});
const total = Number(values.messages);
const batch = Number(values.batch);
const expectsReply = values.reply;
const data = new Uint8Array(100);

let settled = 0;
/** Deliveries handed over so far. */
let delivered = 0;
let wake: (() => void) | undefined;
const runtime = createContainerRuntime({
  name: "bench",
  params: {},
  concurrency: 256,
  link: {
    call: () => Promise.reject(new Error("no calls in this bench")),
    result: () => {
      settled++;
      if (wake && settled === delivered) wake();
    },
    log: () => {},
  },
});
const worker =
  values.loop === "handle"
    ? defineWorker((ctx) => ctx.handle((msg) => (msg.expectsReply ? msg.data : undefined)))
    : defineWorker(async (ctx) => {
        for await (const msg of ctx.messages) {
          if (msg.expectsReply) msg.reply(msg.data, { contentType: msg.contentType });
          else msg.ack();
        }
      });
const done = runtime.run(worker.run);

const cpu0 = process.cpuUsage();
const t0 = performance.now();
let id = 1;
// Deliveries come in batches, as they do from a stream message: the next batch once the
// worker settled the last one.
while (id <= total) {
  for (let i = 0; i < batch && id <= total; i++, id++) {
    delivered++;
    runtime.deliver({ id, data, contentType: "application/octet-stream", expectsReply, timeoutMs: 0, sender: "", attempt: 1 });
  }
  if (settled < delivered) await new Promise<void>((r) => (wake = r));
  wake = undefined;
}
const cpu = process.cpuUsage(cpu0);
const wallMs = performance.now() - t0;
runtime.stop(0);
await done;
const cpuUs = cpu.user + cpu.system;
console.log(
  `${total} deliveries (${values.loop}, ${expectsReply ? "reply" : "ack"}): ${(cpuUs / total).toFixed(3)} µs CPU each, ` +
    `${Math.round(total / (wallMs / 1000))} msg/s, settled ${settled}`,
);
