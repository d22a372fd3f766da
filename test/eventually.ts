/**
 * eventually, the polling helper, on its own: unit tests import it from here to load nothing else
 * (helpers.ts, which re-exports it, loads the whole server).
 */

/** Polls fn until it returns a truthy value or the timeout passes (for observing async state). */
export async function eventually<T>(fn: () => Promise<T> | T, timeoutMs = 10_000, what = "condition"): Promise<T> {
  const start = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
