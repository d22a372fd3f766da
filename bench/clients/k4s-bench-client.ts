/**
 * The k4s load-side client: the public SDK (`createClient`), whose send/request travel over one
 * pipelined WorkerService session. Requests go to services bench-1 (one replica) and bench-2
 * (two replicas); fire-and-forget messages to container bench1-0. Payloads are raw bytes
 * (application/octet-stream), which the router passes through untouched.
 */
import { createClient } from "../../src/client/index.js";
import { bytesPayload, confirmedSender, type BenchClient } from "./bench-client.js";

/** Creates the k4s client of the server at address and opens its messaging session. */
export async function createK4sBenchClient(address: string): Promise<BenchClient> {
  const client = createClient({ address, name: `bench-load-${process.pid}` });
  const ping = bytesPayload(1);
  // The first call opens the session; failing here names the problem before any figure.
  await client.request("service/bench-1", ping, { timeoutMs: 10_000 });
  return {
    system: "k4s",
    hasTwoReplicas: true,
    hasFireAndForget: true,
    payload: (n) => bytesPayload(n),
    request: (target, payload) => client.request(target === "rr1" ? "service/bench-1" : "service/bench-2", payload, { timeoutMs: 10_000 }),
    // Each send() resolves once the server queued the message at the container (its acknowledgement).
    send: confirmedSender((payload) => client.send("container/bench1-0", payload as Uint8Array)),
    close: () => client.close(),
  };
}
