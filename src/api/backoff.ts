/**
 * Capped exponential back-off, the one rule behind every retry in k4s: reconnecting sessions,
 * controller retries and watch reopens, the restart policy of containers, and the local worker
 * host of `k4s server`.
 */

/** BackoffPolicy describes a capped exponential back-off. */
export interface BackoffPolicy {
  /** Delay before the first retry (ms). */
  initialMs: number;
  /** Longest delay (ms). */
  maxMs: number;
  /**
   * Random spread as a fraction of the delay (0.25: ±25%), so that many clients that lost the
   * same server do not come back in step. Default 0.
   */
  jitter?: number;
}

/**
 * Returns the delay before retry number `attempt` (0 for the first): initialMs doubled per
 * attempt, capped at maxMs, then spread by the policy's jitter.
 */
export function backoffDelay(policy: BackoffPolicy, attempt: number): number {
  // 2^30 times any sane initial delay is beyond every cap: no overflow to Infinity.
  const delay = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(Math.max(0, attempt), 30));
  const jitter = policy.jitter ?? 0;
  return jitter > 0 ? delay * (1 - jitter + Math.random() * 2 * jitter) : delay;
}

/** Backoff counts consecutive failures and answers the delay before the next try. */
export interface Backoff {
  /** Counts one more failure and returns the delay before the next try. */
  next(): number;
  /** Forgets the failures (after a success or a healthy run). */
  reset(): void;
  /** Failures counted since the last reset. */
  readonly failures: number;
}

/** Creates a failure counter for a policy. */
export function createBackoff(policy: BackoffPolicy): Backoff {
  let failures = 0;
  return {
    next: () => backoffDelay(policy, failures++),
    reset() {
      failures = 0;
    },
    get failures() {
      return failures;
    },
  };
}
