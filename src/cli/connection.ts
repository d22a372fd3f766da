/**
 * The connection every client command shares: the global --server and --token options, turned
 * into a K4sClient that is always closed when the command ends.
 */
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import type { ConnectError } from "@connectrpc/connect";
import { DEFAULT_PORT, normalizeAddresses } from "../api/address.js";
import { createClient, type K4sClient } from "../client/client.js";
import type { ResumeOptions } from "../client/resume.js";
import type { TlsOptions } from "../transport/channel.js";
import { ENV, tlsFromEnvironment } from "../transport/environment.js";
import { CliError } from "./errors.js";

/** GlobalOptions are the options every command inherits from `k4s`. */
export interface GlobalOptions {
  server: string;
  token?: string;
  /** TLS settings when the server speaks TLS. */
  tls?: TlsOptions;
}

/** The default server address: $K4S_ADDRESS, else the local default port. */
export function defaultServer(): string {
  return process.env[ENV.address] || `127.0.0.1:${DEFAULT_PORT}`;
}

/** Reads the global options as seen from a (sub)command. */
export function globalOptions(cmd: Command): GlobalOptions {
  const o = cmd.optsWithGlobals<{ server?: string; token?: string; tokenFile?: string; tls?: boolean; tlsCa?: string; tlsServerName?: string }>();
  // Flags win over the environment. The environment carries the PEM itself (as worker hosts
  // hand it to spawned processes); the flag names a file.
  const fromEnv = tlsFromEnvironment();
  let tls: TlsOptions | undefined;
  if (o.tls || o.tlsCa || fromEnv) {
    tls = { ...fromEnv };
    if (o.tlsCa) tls.ca = readPem(o.tlsCa);
    if (o.tlsServerName) tls.servername = o.tlsServerName;
  }
  return { server: serverAddress(o.server || defaultServer()), token: tokenOf(o.token, o.tokenFile), tls };
}

let warnedAboutToken = false;

/**
 * The bearer token: --token (with a warning, since every user of the machine sees it in `ps`),
 * else the first line of --token-file, else $K4S_TOKEN.
 */
function tokenOf(flag: string | undefined, file: string | undefined): string | undefined {
  if (flag && file) throw new CliError("give --token or --token-file, not both");
  if (flag) {
    if (!warnedAboutToken) {
      warnedAboutToken = true;
      process.stderr.write("warning: --token shows the token to every user of this machine (ps); use --token-file FILE or K4S_TOKEN\n");
    }
    return flag;
  }
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new CliError(`cannot read --token-file ${file}: ${(err as Error).message}`);
    }
    const token = text.split(/\r?\n/, 1)[0]!.trim();
    if (!token) throw new CliError(`--token-file ${file} is empty: expected the token on its first line`);
    return token;
  }
  return process.env[ENV.token] || undefined;
}

/**
 * Checks and completes --server (a bare host means the default port; a comma-separated list
 * names the servers of one cluster); a bad one is a usage error.
 */
function serverAddress(text: string): string {
  try {
    return normalizeAddresses(text).join(",");
  } catch (err) {
    throw new CliError((err as ConnectError).rawMessage);
  }
}

function readPem(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new CliError(`cannot read --tls-ca ${path}: ${(err as Error).message}`);
  }
}

/** Runs fn with a client for the command's server and closes the client afterwards. */
export async function withClient<T>(cmd: Command, fn: (client: K4sClient) => Promise<T>): Promise<T> {
  const g = globalOptions(cmd);
  // One-shot commands fail at once when the server is unreachable instead of waiting to reconnect.
  const client = createClient({ address: g.server, token: g.token, tls: g.tls, name: `k4s-cli-${process.pid}`, reconnect: false });
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

/** How long `-f`/`-w` commands wait for a server that went away by default (ms). */
export const DEFAULT_RECONNECT_TIMEOUT_MS = 5 * 60_000;

/**
 * How a following command (`logs -f`, `events -w`, `get -w`) rides out a server restart: it
 * says once on stderr that the server went away and once that it is back, resumes where it was,
 * and gives up after `timeoutMs` with the one line "the k4s server at ADDRESS went away".
 */
export function followThroughRestarts(cmd: Command, timeoutMs = DEFAULT_RECONNECT_TIMEOUT_MS): ResumeOptions {
  const server = globalOptions(cmd).server;
  return {
    giveUpAfterMs: timeoutMs,
    onConnection(state, err) {
      if (state === "lost") process.stderr.write(`k4s: lost the server at ${server} (${err?.rawMessage ?? "connection closed"}); resuming when it is back\n`);
      else process.stderr.write(`k4s: the server at ${server} is back; resumed\n`);
    },
  };
}
