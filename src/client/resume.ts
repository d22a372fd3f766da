/**
 * Riding out a server restart: server streams (watch, logs and events follows) that lose their
 * server re-open from the last position they delivered, as Kubernetes' reflector does, and unary
 * calls the server refused while stopping (google.rpc.RetryInfo: they did not run) are retried
 * until the server is back. Both wait with the capped exponential back-off every k4s client
 * uses, and give up with one line naming the server.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createBackoff } from "../api/backoff.js";
import { retryDelayOf } from "../api/retry-info.js";

/** ResumeOptions say how long to wait for a server that went away, and whom to tell. */
export interface ResumeOptions {
  /**
   * Give up once the server has been unreachable this long (ms, default 300000); the stream
   * then fails UNAVAILABLE: "the k4s server at ADDRESS went away".
   */
  giveUpAfterMs?: number;
  /**
   * Told when the stream lost its server ("lost", with why) and when it is following again
   * ("resumed"): once per change, not per attempt.
   */
  onConnection?: (state: "lost" | "resumed", err?: ConnectError) => void;
}

/** First wait before re-opening a stream that lost its server, and the longest (ms). */
const RESUME_INITIAL_MS = 200;
const RESUME_MAX_MS = 2000;
/** How long a stream waits for its server to come back by default (ms). */
const DEFAULT_GIVE_UP_AFTER_MS = 300_000;
/** How long a refused unary call waits for the server to be back at most (ms). */
const REFUSED_CALL_MAX_WAIT_MS = 30_000;

/**
 * Whether a stream failed because its connection or server went away, rather than because the
 * server answered no: the cases a reconnect can cure.
 */
export function isConnectionLoss(err: ConnectError): boolean {
  switch (err.code) {
    case Code.Unavailable:
      return true;
    case Code.Canceled:
    case Code.Internal:
    case Code.Unknown:
      // connect-node's words for an HTTP/2 stream or session the peer reset or closed.
      return /stream closed|session closed|REFUSED_STREAM|ECONNRESET|socket hang up|GOAWAY|premature close/i.test(err.rawMessage);
    default:
      return false;
  }
}

/** Whether the server refused a call as not run because it was stopping (RetryInfo, REFUSED_STREAM). */
function isRefusal(err: ConnectError): boolean {
  return retryDelayOf(err) !== undefined || /REFUSED_STREAM/.test(err.rawMessage);
}

/**
 * The error a stream gives up with: the one thing a user needs to know. (The transport's own
 * words, such as "http/2 stream closed with error code CANCEL", suggest causes it was not.)
 */
export function serverWentAway(address: string, waitedMs: number): ConnectError {
  return new ConnectError(`the k4s server at ${address} went away (not back after ${Math.round(waitedMs / 1000)} s)`, Code.Unavailable);
}

/** Sleeps `ms`, or less when the signal aborts. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Yields what `open` streams, and when the stream loses its server, opens it again (open reads
 * its own resume position) after a back-off, until `signal` aborts or the server stays away
 * longer than giveUpAfterMs. `open` calls `established` once the server accepted the stream (its
 * response headers arrived), which is when the back-off starts over. A stream that never
 * reached its server fails at once.
 */
export async function* resumeStream<T>(
  address: string,
  open: (established: () => void) => AsyncIterable<T>,
  signal: AbortSignal | undefined,
  options: ResumeOptions = {},
): AsyncGenerator<T> {
  const backoff = createBackoff({ initialMs: RESUME_INITIAL_MS, maxMs: RESUME_MAX_MS, jitter: 0.2 });
  const giveUpAfter = options.giveUpAfterMs ?? DEFAULT_GIVE_UP_AFTER_MS;
  let lostSince = 0;
  let everEstablished = false;
  const established = () => {
    everEstablished = true;
    backoff.reset();
    if (lostSince === 0) return;
    lostSince = 0;
    options.onConnection?.("resumed");
  };
  for (;;) {
    try {
      for await (const item of open(established)) yield item;
      return;
    } catch (err) {
      if (signal?.aborted) return;
      const e = ConnectError.from(err);
      // A server that was never reached is a mistake to report at once, not an outage to wait
      // out; one that refused the stream because it was stopping was reached.
      if (isRefusal(e)) everEstablished = true;
      if (!everEstablished || !isConnectionLoss(e)) throw e;
      if (lostSince === 0) {
        lostSince = Date.now();
        options.onConnection?.("lost", e);
      } else if (Date.now() - lostSince > giveUpAfter) {
        throw serverWentAway(address, Date.now() - lostSince);
      }
      await pause(backoff.next(), signal);
      if (signal?.aborted) return;
    }
  }
}

/**
 * An interceptor that retries a unary call the server refused because it was stopping
 * (UNAVAILABLE with RetryInfo, or an HTTP/2 REFUSED_STREAM: the call did not run), with
 * back-off, also through the connection failures of the restart that follows, for up to 30 s
 * or the call's own timeout.
 */
export function retryRefusedCalls(): Interceptor {
  return (next) => async (req) => {
    if (req.stream) return next(req);
    const backoff = createBackoff({ initialMs: RESUME_INITIAL_MS, maxMs: RESUME_MAX_MS, jitter: 0.2 });
    const started = Date.now();
    let refused = false;
    for (;;) {
      try {
        return await next(req);
      } catch (err) {
        const hint = retryDelayOf(err);
        // HTTP/2's REFUSED_STREAM also means "not processed" (a server closing its connection).
        const notRun = err instanceof ConnectError && isRefusal(err);
        const retry = notRun || (refused && err instanceof ConnectError && err.code === Code.Unavailable);
        if (!retry || req.signal.aborted || Date.now() - started > REFUSED_CALL_MAX_WAIT_MS) throw err;
        refused = true;
        await pause(Math.max(hint ?? 0, backoff.next()), req.signal);
        if (req.signal.aborted) throw err;
      }
    }
  };
}
