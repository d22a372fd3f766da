// A worker module of an application that installed k4s from npm: served by a worker host
// (`k4s worker --module greeter=./worker.mjs`), or run as a script that attaches itself to an
// external container (`node worker.mjs ADDRESS CONTAINER`).
import { pathToFileURL } from "node:url";
import { attach, defineWorker } from "k4s/workers";

/** Greets each message with the container's greeting parameter and its own name. */
export const greeter = defineWorker(async (ctx) => {
  await ctx.handle((msg) => `${ctx.params.greeting ?? "hello"}, ${msg.value} (from ${ctx.name})`);
});

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [address, container] = process.argv.slice(2);
  const attached = attach({ address, container, worker: greeter, params: { greeting: "hi" } });
  await attached.ready;
  console.log(`attached to ${container}`);
  process.once("SIGTERM", () => void attached.stop(2000).then(() => process.exit(0)));
}
