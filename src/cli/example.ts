/**
 * `k4s example` and `k4s demo`: the quick start. Each starts an embedded cluster (an in-memory
 * server on a free loopback port and one worker host process), runs the seed's walkthrough or
 * its seven demos through the SDK, prints what happens, stops everything, and exits non-zero
 * when a step misbehaves.
 */
import { startLocalCluster } from "./quickstart/local-cluster.js";
import { runDemo } from "./quickstart/run-demo.js";
import { runExample } from "./quickstart/run-example.js";

/**
 * Runs the quick-start walkthrough ("example") or the seed's seven demos ("demo") on an
 * embedded cluster, which it stops afterwards.
 */
export async function runOnLocalCluster(what: "example" | "demo"): Promise<void> {
  const cluster = await startLocalCluster();
  console.log(`k4s: embedded server on ${cluster.address} with one local worker host`);
  try {
    await (what === "example" ? runExample(cluster.client) : runDemo(cluster.client));
  } finally {
    await cluster.stop();
  }
}
