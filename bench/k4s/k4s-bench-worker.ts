/**
 * The k4s bench worker process: attaches to one container through the worker SDK (`attach` +
 * `defineWorker`), replies every request with its bytes as they came and acks every
 * fire-and-forget message, counting all it received. Arg: server address, container name.
 * Answers {cmd:"count"} over IPC.
 */
import { attach, defineWorker } from "../../src/workers/index.js";
import { exitWithParent, failStartup, tellParent } from "../lib/processes.js";

const [address, container] = process.argv.slice(2);
let received = 0;

/** Echoes bytes back without decoding them. */
const benchEcho = defineWorker(async (ctx) => {
  for await (const msg of ctx.messages) {
    received++;
    if (msg.expectsReply) msg.reply(msg.data, { contentType: msg.contentType });
    else msg.ack();
  }
});

try {
  const attached = attach({ address, container, worker: benchEcho, host: `bench-worker/${process.pid}`, reconnect: false });
  await attached.ready;
  process.on("message", (m: { id: number; cmd: string }) => {
    if (m.cmd === "count") tellParent({ id: m.id, count: received });
  });
  exitWithParent(() => attached.stop(500));
  attached.done.catch((err) => {
    console.error(`bench worker ${container}: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
  tellParent({ ev: "ready" });
} catch (err) {
  failStartup(err);
}
