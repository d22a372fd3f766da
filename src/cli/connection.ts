/**
 * The connection every client command shares: the global --server and --token options, turned
 * into a K4sClient that is always closed when the command ends.
 */
import type { Command } from "commander";
import { createClient, type K4sClient } from "../client/client.js";

/** GlobalOptions are the options every command inherits from `k4s`. */
export interface GlobalOptions {
  server: string;
  token?: string;
}

/** The default server address: $K4S_ADDRESS, else the local default port. */
export function defaultServer(): string {
  return process.env.K4S_ADDRESS || "127.0.0.1:50051";
}

/** Reads the global options as seen from a (sub)command. */
export function globalOptions(cmd: Command): GlobalOptions {
  const o = cmd.optsWithGlobals<{ server?: string; token?: string }>();
  return { server: o.server || defaultServer(), token: o.token || process.env.K4S_TOKEN || undefined };
}

/** Runs fn with a client for the command's server and closes the client afterwards. */
export async function withClient<T>(cmd: Command, fn: (client: K4sClient) => Promise<T>): Promise<T> {
  const g = globalOptions(cmd);
  // One-shot commands fail at once when the server is unreachable instead of waiting to reconnect.
  const client = createClient({ address: g.server, token: g.token, name: `k4s-cli-${process.pid}`, reconnect: false });
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

/**
 * An AbortSignal that aborts on Ctrl-C or SIGTERM, for commands that follow a stream: the
 * stream ends cleanly and the command exits 0, as `kubectl get -w` does.
 */
export function interruptSignal(): AbortSignal {
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return controller.signal;
}
