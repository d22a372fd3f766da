/** `k4s events [-w] [--for KIND/NAME]`: cluster events as a table, and new ones as they happen. */
import { Command } from "commander";
import type { Event } from "../gen/k4s/v1/log_service_pb.js";
import type { Kind } from "../api/kinds.js";
import { followThroughRestarts, interruptSignal, withClient } from "./connection.js";
import { CliError } from "./errors.js";
import { age, columnWidths, renderRow } from "./format.js";
import { durationOption, kindAndName } from "./options.js";

interface EventsOptions {
  watch?: boolean;
  for?: string;
  reconnectTimeout?: number;
}

const HEADER = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"];

function row(e: Event): string[] {
  return [age(e.time), e.type, e.reason, `${e.kind.toLowerCase()}/${e.name}`, e.message];
}

/** Creates the events command. */
export function eventsCommand(): Command {
  return new Command("events")
    .description("list recent cluster events (scheduling, starts, failures, scaling)")
    .option("-w, --watch", "after listing, print new events as they happen")
    .option("--for <object>", "only events about KIND/NAME")
    .option("--reconnect-timeout <duration>", "with -w: how long to wait for a server that went away before giving up (default 5m)", durationOption)
    .action(async (opts: EventsOptions, cmd: Command) => {
      let filter: { kind?: Kind; name?: string } = {};
      if (opts.for) {
        const ref = kindAndName(opts.for, undefined);
        if (!ref.name) throw new CliError(`--for needs KIND/NAME, got "${opts.for}"`);
        filter = { kind: ref.kind, name: ref.name };
      }
      await withClient(cmd, async (client) => {
        if (!opts.watch) {
          const rows: string[][] = [];
          for await (const e of client.events(filter)) rows.push(row(e));
          if (rows.length === 0) {
            process.stderr.write("No events found.\n");
            return;
          }
          const widths = columnWidths({ header: HEADER, rows });
          for (const r of [HEADER, ...rows]) console.log(renderRow(r, widths));
          return;
        }
        // Following: widths cannot be known ahead, so use generous ones and let long cells push.
        const widths = [9, 7, 18, 28, 0];
        console.log(renderRow(HEADER, widths));
        const resume = followThroughRestarts(cmd, opts.reconnectTimeout);
        for await (const e of client.events({ ...filter, follow: true, signal: interruptSignal(), resume })) {
          console.log(renderRow(row(e), widths));
        }
      });
    });
}
