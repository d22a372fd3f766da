/**
 * The NATS peer's load-side client: request-reply through nats-server to a queue-group responder
 * (two hops, like k4s: client → nats-server → responder and back), and publish for
 * fire-and-forget.
 */
import { connect } from "nats";
import { bytesPayload, confirmedSender, type BenchClient } from "./bench-client.js";

/** Creates the NATS client of the server at url. */
export async function createNatsBenchClient(url: string): Promise<BenchClient> {
  const nc = await connect({ servers: url, noEcho: true, maxReconnectAttempts: 0 });
  return {
    system: "nats",
    hasTwoReplicas: true,
    hasFireAndForget: true,
    payload: (n) => bytesPayload(n),
    request: (target, payload) => nc.request(target === "rr1" ? "echo1" : "echo2", payload as Uint8Array, { timeout: 10_000 }),
    // publish has no acknowledgement: the confirmation is a server round trip (PING/PONG) behind the messages.
    send: confirmedSender(
      (payload) => nc.publish("ff1", payload as Uint8Array),
      () => nc.flush(),
    ),
    async close() {
      await nc.close();
    },
  };
}
