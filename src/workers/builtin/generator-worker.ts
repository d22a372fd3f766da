/**
 * generator_worker: sends `count` messages {seq, text} to `target`, one every `interval`
 * seconds, then finishes (the container Succeeds).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { abortableDelay } from "../../api/abortable-delay.js";
import { defineWorker } from "../runtime/define-worker.js";

/** GeneratorParams are generator_worker's parameters. */
export interface GeneratorParams {
  /** Messages to send (default 10). */
  count?: number;
  /** Seconds between messages (default 1; fractions allowed). */
  interval?: number;
  /** Container or service that receives them. */
  target?: string;
}

/** generator_worker: sends params.count messages to params.target every params.interval seconds. */
export const generatorWorker = defineWorker<GeneratorParams>(async (ctx) => {
  const count = Math.max(0, Math.floor(Number(ctx.params.count ?? 10)));
  const interval = Number(ctx.params.interval ?? 1);
  const target = ctx.params.target;
  if (!target) throw new ConnectError("generator_worker: parameter target is required", Code.InvalidArgument);
  if (!Number.isFinite(count)) throw new ConnectError(`generator_worker: count must be a number, got ${ctx.params.count}`, Code.InvalidArgument);
  if (!Number.isFinite(interval) || interval < 0) {
    throw new ConnectError(`generator_worker: interval must be a number of seconds >= 0, got ${ctx.params.interval}`, Code.InvalidArgument);
  }
  for (let seq = 1; seq <= count; seq++) {
    if (ctx.stopping.aborted) return;
    const message = { seq, text: `message ${seq}` };
    try {
      await ctx.send(target, message);
      ctx.log(`sent message ${seq}/${count} to ${target}`);
    } catch (err) {
      ctx.log(`warning: message ${seq}/${count} to ${target} not sent: ${ConnectError.from(err).rawMessage}`);
    }
    if (seq < count) await abortableDelay(interval * 1000, ctx.stopping);
  }
  ctx.log(`generated ${count} messages`);
});
