/**
 * The environment variables through which a k4s process learns how to reach its server: one
 * set of names for the CLI, the SDK (createClient, attach) and the processes a worker host
 * spawns for command containers, which get them from their host.
 *
 * | variable | holds |
 * | --- | --- |
 * | K4S_ADDRESS | the server's host:port |
 * | K4S_TOKEN | the bearer token the server requires (sent as `authorization: Bearer ...`) |
 * | K4S_TLS | "1": connect over TLS |
 * | K4S_TLS_CA | PEM text of a certificate to trust (implies TLS) |
 * | K4S_TLS_SERVERNAME | the name to check the server's certificate against |
 * | K4S_CONTAINER | set by a worker host for a spawned process: the container it serves |
 * | K4S_ATTACH_TOKEN | set by a worker host for a spawned process: that container's attach credential |
 * | K4S_WORKER_TRANSPORT | "grpc-js": run session streams on grpc-js's client instead of the lean one (stream-channel.ts) |
 *
 * K4S_TOKEN means the same thing everywhere, so a refused call can always be told to set it;
 * a spawned process's own credential has a name of its own. A spawned process is NOT given
 * K4S_TOKEN: its attach credential (sent in the ATTACH_TOKEN_HEADER header and as Attach.token)
 * admits it to the server for that one Attach, and for nothing else.
 */
import type { TlsOptions } from "./channel.js";

/** The names of k4s's environment variables. */
export const ENV = {
  address: "K4S_ADDRESS",
  token: "K4S_TOKEN",
  tls: "K4S_TLS",
  tlsCa: "K4S_TLS_CA",
  tlsServerName: "K4S_TLS_SERVERNAME",
  container: "K4S_CONTAINER",
  attachToken: "K4S_ATTACH_TOKEN",
} as const;

/**
 * The header a process holding only an attach credential (K4S_ATTACH_TOKEN, no bearer token)
 * sends it in: the server then admits its WorkerService.Connect for the Attach of that
 * container alone.
 */
export const ATTACH_TOKEN_HEADER = "k4s-attach-token";

/** The TLS settings of the environment: K4S_TLS=1 or a K4S_TLS_CA; undefined for plaintext. */
export function tlsFromEnvironment(env: NodeJS.ProcessEnv = process.env): TlsOptions | undefined {
  const ca = env[ENV.tlsCa] || undefined;
  if (env[ENV.tls] !== "1" && !ca) return undefined;
  const servername = env[ENV.tlsServerName] || undefined;
  return { ...(ca ? { ca } : {}), ...(servername ? { servername } : {}) };
}

/** How to reach a server, as a parent process hands it to a child. */
export interface ConnectionSettings {
  address: string;
  token?: string;
  tls?: boolean | TlsOptions;
}

/** The environment that tells a child process how to reach the server as its parent does. */
export function connectionEnvironment(settings: ConnectionSettings): Record<string, string> {
  const env: Record<string, string> = { [ENV.address]: settings.address };
  if (settings.token) env[ENV.token] = settings.token;
  const tls = settings.tls;
  if (tls) {
    env[ENV.tls] = "1";
    if (typeof tls === "object" && tls.ca) env[ENV.tlsCa] = tls.ca.toString();
    if (typeof tls === "object" && tls.servername) env[ENV.tlsServerName] = tls.servername;
  }
  return env;
}
