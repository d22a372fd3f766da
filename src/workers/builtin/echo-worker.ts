/**
 * echo_worker: logs every message with a prefix and replies the same line to requests.
 */
import { defineWorker } from "../runtime/define-worker.js";
import { show } from "./show.js";

/** EchoParams are echo_worker's parameters. */
export interface EchoParams {
  /** Prefix of each line (default "ECHO"). */
  prefix?: string;
}

/** echo_worker: logs `${prefix}: ${value}` for every message and replies it to requests. */
export const echoWorker = defineWorker<EchoParams>(async (ctx) => {
  const prefix = ctx.params.prefix ?? "ECHO";
  await ctx.handle((msg) => {
    const line = `${prefix}: ${show(msg.value)}`;
    ctx.log(line);
    return line;
  });
});
