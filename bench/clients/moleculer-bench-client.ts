/**
 * The Moleculer peer's load-side client: its own ServiceBroker on the TCP transporter, calling
 * echo1.echo / echo2.echo (one hop: broker to broker, round robin over nodes) and emitting the
 * balanced event bench.ff1. Payloads travel as strings inside Moleculer's default JSON
 * serializer, its natural form (a Buffer would be JSON-encoded as an array of numbers).
 */
import { ServiceBroker } from "moleculer";
import { confirmedSender, type BenchClient } from "./bench-client.js";

/** Creates the Moleculer client broker `nodeID` among urls; waits until `responders` nodes are up. */
export async function createMoleculerBenchClient(nodeID: string, urls: string[], responders: string[]): Promise<BenchClient> {
  const broker = new ServiceBroker({
    nodeID,
    transporter: { type: "TCP", options: { udpDiscovery: false, urls } },
    logger: false,
    requestTimeout: 10_000,
  });
  await broker.start();
  await broker.waitForServices(["echo1", "echo2", "ff1"], 20_000);
  // waitForServices is satisfied by one node per service; the two-replica figures need both.
  const deadline = Date.now() + 20_000;
  for (;;) {
    const up = new Set(
      // getNodeList exists in 0.14's registry but is missing from its type declarations.
      (broker.registry as unknown as { getNodeList(o: object): { id: string }[] }).getNodeList({ onlyAvailable: true, withServices: false }).map((n) => n.id),
    );
    if (responders.every((r) => up.has(r))) break;
    if (Date.now() > deadline) throw new Error(`moleculer: nodes ${responders.filter((r) => !up.has(r)).join(", ")} not seen within 20 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    system: "moleculer",
    hasTwoReplicas: true,
    hasFireAndForget: true,
    payload: (n) => ({ d: "x".repeat(n) }),
    request: (target, payload) => broker.call(target === "rr1" ? "echo1.echo" : "echo2.echo", payload as object),
    // emit has no acknowledgement: the confirmation is a ping of the receiver, which travels
    // behind the events on the same connection, so its pong means they were handled.
    send: confirmedSender(
      (payload) => broker.emit("bench.ff1", payload),
      () => broker.ping("mol-r1", 10_000),
    ),
    async close() {
      await broker.stop();
    },
  };
}
