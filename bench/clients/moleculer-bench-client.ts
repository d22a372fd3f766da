/**
 * The Moleculer peer's load-side client: its own ServiceBroker on the TCP transporter, calling
 * echo1.echo / echo2.echo (one hop: broker to broker, round robin over nodes) and emitting the
 * balanced event bench.ff1. Payloads travel as strings inside Moleculer's default JSON
 * serializer, its natural form (a Buffer would be JSON-encoded as an array of numbers).
 */
import { ServiceBroker } from "moleculer";
import type { BenchClient } from "./bench-client.js";

/**
 * Events emitted between two pings of the receiver: emit has no acknowledgement and queues on
 * the socket at once, so without a round trip now and then the sender would only fill memory.
 * A ping travels on the same connection behind the events, so its pong means they were handled.
 */
const PING_EVERY = 256;

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
  let emitted = 0;
  let pinging: Promise<void> | undefined;
  return {
    system: "moleculer",
    hasTwoReplicas: true,
    hasFireAndForget: true,
    payload: (n) => ({ d: "x".repeat(n) }),
    request: (target, payload) => broker.call(target === "rr1" ? "echo1.echo" : "echo2.echo", payload as object),
    async send(payload) {
      const sent = broker.emit("bench.ff1", payload);
      if (++emitted % PING_EVERY === 0 || pinging) {
        // Every sender waits on the same round trip rather than stacking one each.
        pinging ??= Promise.resolve(broker.ping("mol-r1", 10_000)).then(
          () => {
            pinging = undefined;
          },
          (err: unknown) => {
            pinging = undefined;
            throw err;
          },
        );
        await pinging;
      }
      await sent;
    },
    async close() {
      await broker.stop();
    },
  };
}
