/**
 * processor_worker: transforms string messages (uppercase, lowercase or reverse), replies the
 * result to requests and passes it on to `forward_to` when set. An object with a string `text`
 * (what generator_worker sends) has its text transformed and its other fields kept.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { defineWorker } from "../runtime/define-worker.js";
import { show } from "./show.js";

/** ProcessorParams are processor_worker's parameters. */
export interface ProcessorParams {
  /** uppercase | lowercase | reverse (default uppercase). */
  operation?: string;
  /** Container or service that receives every result. */
  forward_to?: string;
}

const OPERATIONS: Record<string, (s: string) => string> = {
  uppercase: (s) => s.toUpperCase(),
  lowercase: (s) => s.toLowerCase(),
  reverse: (s) => [...s].reverse().join(""),
};

/** processor_worker: transforms strings by params.operation and forwards them to params.forward_to. */
export const processorWorker = defineWorker<ProcessorParams>(async (ctx) => {
  const operation = ctx.params.operation ?? "uppercase";
  const transform = OPERATIONS[operation];
  if (!transform) {
    throw new ConnectError(
      `processor_worker: unknown operation "${operation}": expected uppercase, lowercase or reverse`,
      Code.InvalidArgument,
    );
  }
  const forwardTo = ctx.params.forward_to;
  await ctx.handle(async (msg) => {
    const input = msg.value;
    let result: unknown;
    if (typeof input === "string") {
      result = transform(input);
      ctx.log(`processed (${operation}): ${input} -> ${result}`);
    } else if (typeof input === "object" && input !== null && typeof (input as { text?: unknown }).text === "string") {
      const text = (input as { text: string }).text;
      result = { ...input, text: transform(text) };
      ctx.log(`processed (${operation}): ${text} -> ${(result as { text: string }).text}`);
    } else {
      throw new ConnectError(`processor_worker: expected a string or {text: string} message, got ${show(input)}`, Code.InvalidArgument);
    }
    if (forwardTo) {
      try {
        await ctx.send(forwardTo, result);
      } catch (err) {
        // The result still answers the request; a missing next stage is worth a log line, not a crash.
        ctx.log(`warning: could not forward to ${forwardTo}: ${ConnectError.from(err).rawMessage}`);
      }
    }
    return result;
  });
});
