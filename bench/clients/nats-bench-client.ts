/**
 * The NATS peer's load-side client: request-reply through nats-server to a queue-group responder
 * (two hops, like k4s: client → nats-server → responder and back), and publish for
 * fire-and-forget.
 */
import { connect } from "nats";
import { bytesPayload, type BenchClient } from "./bench-client.js";

/** Publishes between two flushes: NATS publish has no acknowledgement, so the client waits for
 * a server round trip (PING/PONG) every this many messages to stay within what the server takes. */
const FLUSH_EVERY = 256;

/** Creates the NATS client of the server at url. */
export async function createNatsBenchClient(url: string): Promise<BenchClient> {
  const nc = await connect({ servers: url, noEcho: true, maxReconnectAttempts: 0 });
  let published = 0;
  let flushing: Promise<void> | undefined;
  return {
    system: "nats",
    hasTwoReplicas: true,
    hasFireAndForget: true,
    payload: (n) => bytesPayload(n),
    request: (target, payload) => nc.request(target === "rr1" ? "echo1" : "echo2", payload as Uint8Array, { timeout: 10_000 }),
    async send(payload) {
      nc.publish("ff1", payload as Uint8Array);
      if (++published % FLUSH_EVERY === 0 || flushing) {
        // Every sender waits on the same round trip rather than stacking one each.
        flushing ??= nc.flush().finally(() => (flushing = undefined));
        await flushing;
      }
    },
    async close() {
      await nc.close();
    },
  };
}
