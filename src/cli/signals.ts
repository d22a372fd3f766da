/** Waiting for what ends a long-running command (server, worker): a signal, or its launcher gone. */
import { watchLauncher } from "./launcher-watch.js";

/**
 * Resolves with why the command should stop: the first SIGINT or SIGTERM the process receives
 * ("SIGINT", "SIGTERM"), or, under npx, the npx process having gone away.
 */
export function untilStopped(): Promise<string> {
  return new Promise((resolve) => {
    const done = (why: string) => {
      process.off("SIGINT", on);
      process.off("SIGTERM", on);
      unwatch();
      resolve(why);
    };
    const on = (sig: NodeJS.Signals) => done(sig);
    const unwatch = watchLauncher(done);
    process.on("SIGINT", on);
    process.on("SIGTERM", on);
  });
}
