/**
 * aggregator_worker: collects messages in windows of `window_size` and reports each full window
 * as {count, messages, sample}.
 *
 * Requests are queries, not data: a request gets the latest report at once when one exists.
 * Before the first report it waits for it, unless waiting could starve the container (with
 * spec.concurrency 1 a waiting request would hold the only delivery slot, so no data message
 * could ever complete the window): then, and when the container stops or the caller gives up,
 * it gets the partial report of the window so far, marked `partial: true`.
 */
import { defineWorker } from "../runtime/define-worker.js";
import { show } from "./show.js";

/** AggregatorParams are aggregator_worker's parameters. */
export interface AggregatorParams {
  /** Messages per report (default 5). */
  window_size?: number;
}

/** AggregateReport is what aggregator_worker reports for a window. */
export interface AggregateReport {
  /** Messages received in total. */
  count: number;
  /** The window's values. */
  messages: unknown[];
  /** The first value of the window. */
  sample: unknown;
  /** Set on a report of an unfinished window. */
  partial?: boolean;
}

/** aggregator_worker: reports every window_size messages and answers requests with the report. */
export const aggregatorWorker = defineWorker<AggregatorParams>(async (ctx) => {
  const windowSize = Math.max(1, Math.floor(Number(ctx.params.window_size ?? 5)) || 5);
  let count = 0;
  let window: unknown[] = [];
  let latest: AggregateReport | undefined;
  const waiting = new Set<(report: AggregateReport) => void>();
  const partial = (): AggregateReport => ({ count, messages: window.slice(), sample: window[0] ?? null, partial: true });
  ctx.stopping.addEventListener("abort", () => {
    for (const w of waiting) w(partial());
  });

  await ctx.handle((msg) => {
    if (msg.expectsReply) {
      if (latest) return latest;
      // Keep one delivery slot free for the data messages that will complete the window.
      if (waiting.size + 1 >= ctx.concurrency || ctx.stopping.aborted) return partial();
      return new Promise<AggregateReport>((resolve) => {
        const answer = (report: AggregateReport) => {
          waiting.delete(answer);
          resolve(report);
        };
        waiting.add(answer);
        msg.signal.addEventListener("abort", () => answer(partial()), { once: true });
      });
    }
    count++;
    window.push(msg.value);
    if (window.length >= windowSize) {
      latest = { count, messages: window, sample: window[0] };
      window = [];
      ctx.log(`aggregated ${latest.messages.length} messages (total ${count}), sample: ${show(latest.sample)}`);
      for (const w of [...waiting]) w(latest);
    }
    return undefined;
  });
});
