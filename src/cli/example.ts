/**
 * `k4s example` and `k4s demo`: the quick start. Each starts an embedded cluster (an in-memory
 * server on a free loopback port and one worker host process), runs the seed's walkthrough or
 * its seven demos through the SDK, prints what happens, stops everything, and exits non-zero
 * when a step misbehaves.
 */
import { Command } from "commander";
import type { K4sClient } from "../client/index.js";
import { startLocalCluster } from "./quickstart/local-cluster.js";
import { runDemo } from "./quickstart/run-demo.js";
import { runExample } from "./quickstart/run-example.js";

function clusterCommand(name: string, description: string, run: (client: K4sClient) => Promise<void>): Command {
  return new Command(name).description(description).action(async () => {
    const cluster = await startLocalCluster();
    console.log(`k4s: embedded server on ${cluster.address} with one local worker host`);
    try {
      await run(cluster.client);
    } finally {
      await cluster.stop();
    }
  });
}

/** The `k4s example` command: the quick-start walkthrough on an embedded cluster. */
export function exampleCommand(): Command {
  return clusterCommand("example", "run the quick-start walkthrough on an embedded cluster", (c) => runExample(c));
}

/** The `k4s demo` command: the seven demos of the seed on an embedded cluster. */
export function demoCommand(): Command {
  return clusterCommand("demo", "run the seven demos on an embedded cluster", (c) => runDemo(c));
}
