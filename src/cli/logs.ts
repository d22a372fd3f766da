/** `k4s logs NAME [-f] [--tail N]`: print a container's output lines, and follow new ones. */
import { Command } from "commander";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { followThroughRestarts, interruptSignal, withClient } from "./connection.js";
import { CliError } from "./errors.js";
import { durationOption, intOption, kindAndName } from "./options.js";

interface LogsOptions {
  follow?: boolean;
  tail?: number;
  timestamps?: boolean;
  reconnectTimeout?: number;
}

/** Creates the logs command. */
export function logsCommand(): Command {
  return new Command("logs")
    .description("print a container's output (ctx.log lines, stdout and stderr)")
    .argument("<name>", "the container's name (or container/NAME)")
    .option("-f, --follow", "keep printing new lines until interrupted")
    .option("--tail <n>", "only the last N kept lines", intOption(0))
    .option("--timestamps", "prefix each line with its time")
    .option("--reconnect-timeout <duration>", "with -f: how long to wait for a server that went away before giving up (default 5m)", durationOption)
    .action(async (nameArg: string, opts: LogsOptions, cmd: Command) => {
      let name = nameArg;
      if (nameArg.includes("/")) {
        const ref = kindAndName(nameArg, undefined);
        if (ref.kind !== "Container") throw new CliError(`logs are kept per container, not per ${ref.kind}`);
        name = ref.name!;
      }
      await withClient(cmd, async (client) => {
        const signal = opts.follow ? interruptSignal() : undefined;
        const resume = opts.follow ? followThroughRestarts(cmd, opts.reconnectTimeout) : undefined;
        for await (const line of client.logs(name, { follow: opts.follow, tail: opts.tail, signal, resume })) {
          const prefix = opts.timestamps && line.time ? `${timestampDate(line.time).toISOString()} ` : "";
          process.stdout.write(`${prefix}${line.text}\n`);
        }
      });
    });
}
