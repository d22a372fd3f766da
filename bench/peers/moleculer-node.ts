/**
 * The Moleculer peer's responder process: a ServiceBroker on the TCP transporter (static peer
 * list, no UDP discovery so runs on a shared machine never see each other) serving the given
 * services: echoN (action `echo` replying its `d` param) and ff1 (event `bench.ff1`, counted).
 * Args: nodeID, comma-separated TCP URLs ("127.0.0.1:PORT/nodeID", its own included), services.
 */
import { ServiceBroker } from "moleculer";
import { exitWithParent, failStartup, tellParent } from "../lib/processes.js";

const [nodeID, urls, services] = process.argv.slice(2);
let received = 0;
const broker = new ServiceBroker({
  nodeID,
  transporter: { type: "TCP", options: { udpDiscovery: false, urls: urls!.split(",") } },
  logger: false,
  requestTimeout: 10_000,
});
for (const name of services!.split(",")) {
  if (name === "ff1") {
    broker.createService({ name, events: { "bench.ff1": () => void received++ } });
  } else {
    broker.createService({ name, actions: { echo: (ctx) => (ctx.params as { d: unknown }).d } });
  }
}
try {
  await broker.start();
  process.on("message", (m: { id: number; cmd: string }) => {
    if (m.cmd === "count") tellParent({ id: m.id, count: received });
  });
  exitWithParent(() => broker.stop());
  tellParent({ ev: "ready" });
} catch (err) {
  failStartup(err);
}
