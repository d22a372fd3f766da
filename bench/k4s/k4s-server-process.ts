/**
 * The k4s server process of the benchmark: createServer on a free loopback port with its state
 * in memory, as `k4s server --memory` runs it. Tells the harness its address over IPC.
 * `--no-stats` turns the live stats off, to measure what they cost.
 */
import { createServer } from "../../src/server/server.js";
import { exitWithParent, failStartup, tellParent } from "../lib/processes.js";

let reported = 0;
const server = createServer({
  port: 0,
  stats: !process.argv.includes("--no-stats"),
  // Bounded: a broken run must not flood the harness's terminal.
  onError: (message, err) => {
    if (reported++ < 20) console.error(`k4s server: ${message}`, err ?? "");
  },
});
try {
  await server.start();
  exitWithParent(() => server.stop());
  tellParent({ ev: "ready", address: server.address });
} catch (err) {
  failStartup(err);
}
