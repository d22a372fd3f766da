/** `k4s apply -f FILE|DIR|-`: create or update every object of the manifests, all or nothing. */
import { Command } from "commander";
import { withClient } from "./connection.js";
import { CliError } from "./errors.js";
import { kindRef } from "./format.js";
import { joinManifests, readManifests } from "./manifest-files.js";
import { collect, durationFlag } from "./options.js";
import { waitReady } from "./wait-ready.js";

interface ApplyOptions {
  filename: string[];
  dryRun?: boolean;
  wait?: boolean;
  timeout: number;
}

/** Creates the apply command. */
export function applyCommand(): Command {
  return new Command("apply")
    .description("create or update objects from YAML/JSON manifests (prints <kind>/<name> created|configured|unchanged)")
    .option("-f, --filename <path>", "manifest file, directory of *.yaml|*.yml|*.json, or - for stdin (repeatable)", collect, [])
    .option("--dry-run", "validate and report what would happen without writing")
    .option("--wait", "wait until every applied object is ready")
    .addOption(durationFlag("--timeout <duration>", "how long --wait waits, e.g. 30s, 2m", 60_000))
    .action(async (opts: ApplyOptions, cmd: Command) => {
      if (opts.filename.length === 0) throw new CliError("apply needs -f FILE, -f DIR or -f -");
      const sources = (await Promise.all(opts.filename.map(readManifests))).flat();
      const text = joinManifests(sources);
      await withClient(cmd, async (client) => {
        const results = await client.apply(text, { dryRun: opts.dryRun });
        for (const r of results) console.log(`${kindRef(r.kind, r.name)} ${r.action}${opts.dryRun ? " (dry run)" : ""}`);
        if (opts.wait && !opts.dryRun) {
          await waitReady(client, results, { timeoutMs: opts.timeout, print: (line) => console.log(line) });
        }
      });
    });
}
