/**
 * Refusals a client may safely retry: a call the server did not run (it is stopping) carries a
 * `google.rpc.RetryInfo` in its status details, with the delay the server suggests. Since the
 * call never ran, retrying it is safe even when it is not idempotent (an apply, a send); an
 * UNAVAILABLE without RetryInfo may have run and is the caller's to judge.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";

/** The delay a stopping server suggests before the retry (ms). */
export const STOPPING_RETRY_DELAY_MS = 1000;

/** The refusal of a call that arrived while the server was stopping: UNAVAILABLE with RetryInfo. */
export function stoppingRefusal(): ConnectError {
  const delay = STOPPING_RETRY_DELAY_MS;
  return new ConnectError("the k4s server is stopping and did not run this call: retry it (here once the server is back, or at another server)", Code.Unavailable, undefined, [
    { desc: RetryInfoSchema, value: { retryDelay: { seconds: BigInt(Math.floor(delay / 1000)), nanos: (delay % 1000) * 1e6 } } },
  ]);
}

/** The retry delay an error's RetryInfo suggests (ms), or undefined when it carries none. */
export function retryDelayOf(err: unknown): number | undefined {
  if (!(err instanceof ConnectError)) return undefined;
  const info = err.findDetails(RetryInfoSchema)[0];
  if (!info) return undefined;
  const d = info.retryDelay;
  return d ? Number(d.seconds) * 1000 + Math.round(d.nanos / 1e6) : 0;
}
