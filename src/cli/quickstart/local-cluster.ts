/**
 * A throwaway cluster for the examples: an in-memory k4s server on a free loopback port and one
 * worker host process, as `k4s server` runs them, plus a client connected to it.
 */
import { spawn } from "node:child_process";
import { createClient, type K4sClient } from "../../client/index.js";
import { createServer } from "../../server/server.js";
import { K4S_BIN } from "../package-files.js";

/** LocalCluster is a running server, worker host and client. */
export interface LocalCluster {
  readonly address: string;
  readonly client: K4sClient;
  stop(): Promise<void>;
}

/** Starts an in-memory server and one worker host process, and connects a client. */
export async function startLocalCluster(): Promise<LocalCluster> {
  const server = createServer({ port: 0, onError: () => {} });
  await server.start();
  const host = spawn(process.execPath, [K4S_BIN, "worker", "--server", server.address, "--name", "local"], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const client = createClient({ address: server.address });
  return {
    address: server.address,
    client,
    async stop() {
      await client.close();
      const exited = new Promise((resolve) => host.once("exit", resolve));
      host.kill("SIGTERM");
      await exited;
      await server.stop();
    },
  };
}
