/**
 * The page's clients of the k4s API: the project's generated service descriptors called with
 * connect-web over the Connect protocol, on the origin that served the page, with the bearer
 * token the user gave (kept in the tab's session storage, never sent to another origin).
 */
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { LogService } from "../gen/k4s/v1/log_service_pb.js";
import { MessagingService } from "../gen/k4s/v1/messaging_service_pb.js";
import { ResourceService } from "../gen/k4s/v1/resource_service_pb.js";
import { StatsService } from "../gen/k4s/v1/stats_service_pb.js";

const TOKEN_KEY = "k4s.token";

/**
 * Moves a token given in the address (`#token=...`, as `k4s dashboard` prints it) into session
 * storage and out of the address bar, so it is neither bookmarked nor shown.
 */
export function takeTokenFromAddress(): void {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!m) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]!));
  history.replaceState(null, "", location.pathname + location.search);
}

/** Keeps the token for the calls of this tab. */
export function setToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

const auth: Interceptor = (next) => (req) => {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

const transport = createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true, interceptors: [auth] });

/** The resource API: apply, list, watch, scale, delete. */
export const resourceClient = createClient(ResourceService, transport);
/** The single-message API: send and request. */
export const messagingClient = createClient(MessagingService, transport);
/** Container logs and cluster events. */
export const logClient = createClient(LogService, transport);
/** Live load per container, service and host. */
export const statsClient = createClient(StatsService, transport);

type Listener = () => void;
const unauthenticatedListeners = new Set<Listener>();

/** Calls fn whenever a call is refused for want of a (valid) token. */
export function onUnauthenticated(fn: Listener): () => void {
  unauthenticatedListeners.add(fn);
  return () => unauthenticatedListeners.delete(fn);
}

/** The error of a failed call as one line (CODE: message), telling the token listeners. */
export function describeError(err: unknown): string {
  const e = ConnectError.from(err);
  if (e.code === Code.Unauthenticated) unauthenticatedListeners.forEach((l) => l());
  return `${codeName(e.code)}: ${e.rawMessage}`;
}

/** Tells whether an error is the end of a call the page itself cancelled. */
export function isAbort(err: unknown, signal: AbortSignal): boolean {
  return signal.aborted || ConnectError.from(err).code === Code.Canceled;
}

/** The gRPC name of a status code (INVALID_ARGUMENT), as the CLI prints it. */
export function codeName(code: Code): string {
  return (Code[code] ?? String(code)).replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/**
 * Runs a streaming call again and again until the signal aborts, waiting a little longer after
 * each failure (1 s up to 10 s), and telling `onState` whether the stream is live.
 */
export async function keepStreaming(
  run: (signal: AbortSignal) => Promise<void>,
  signal: AbortSignal,
  onState: (error: string | undefined) => void,
): Promise<void> {
  let backoff = 1000;
  while (!signal.aborted) {
    try {
      await run(signal);
      backoff = 1000;
    } catch (err) {
      if (isAbort(err, signal)) return;
      onState(describeError(err));
      if (ConnectError.from(err).code === Code.Unauthenticated) return;
    }
    await new Promise((resolve) => setTimeout(resolve, backoff));
    backoff = Math.min(backoff * 2, 10_000);
  }
}
