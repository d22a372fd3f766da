/**
 * `k4s diff -f FILE`, as kubectl's: what an apply of the manifests would change, as a unified
 * diff per object of the server's current object against the one the apply would store. The
 * server computes the latter (Apply with dry_run: its own merge and defaults, nothing written),
 * so the diff shows exactly what `k4s apply` would do. Exit 0: no differences; 1: differences;
 * 2 and above: the diff could not be made.
 */
import { Command } from "commander";
import { Code, ConnectError } from "@connectrpc/connect";
import type { AnyObject, Kind } from "../api/kinds.js";
import { objectToJson } from "../api/object-json.js";
import { colourFor, paint, type Colour } from "./colour.js";
import { globalOptions, withClient } from "./connection.js";
import { CliError, formatError } from "./errors.js";
import { kindRef, loadYaml, renderJson } from "./format.js";
import { joinManifests, readManifests } from "./manifest-files.js";
import { collect } from "./options.js";

/** kubectl diff's exit code for "the diff could not be made". */
const DIFF_FAILED = 2;

/** Creates the diff command. */
export function diffCommand(): Command {
  return new Command("diff")
    .description("show what `apply -f` would change: a unified diff of each object on the server against what the apply would store (exit 0: none, 1: differences, 2: error)")
    .option("-f, --filename <path>", "manifest file, directory of *.yaml|*.yml|*.json, or - for stdin (repeatable)", collect, [])
    .action(async (opts: { filename: string[] }, cmd: Command) => {
      try {
        if (opts.filename.length === 0) throw new CliError("diff needs -f FILE, -f DIR or -f -");
        const [text, { createTwoFilesPatch, FILE_HEADERS_ONLY }] = await Promise.all([
          Promise.all(opts.filename.map(readManifests)).then((s) => joinManifests(s.flat())),
          import("diff"),
          loadYaml(),
        ]);
        const patches = await withClient(cmd, async (client) => {
          const outcomes = await client.apply(text, { dryRun: true });
          const out: string[] = [];
          for (const o of outcomes) {
            if (o.action === "unchanged") continue;
            const live = o.action === "created" ? undefined : await current(client.get(o.kind, o.name));
            const ref = kindRef(o.kind as Kind, o.name);
            out.push(createTwoFilesPatch(`live/${ref}`, `merged/${ref}`, live === undefined ? "" : shown(live), shown(o.object), undefined, undefined, { headerOptions: FILE_HEADERS_ONLY })!);
          }
          return out;
        });
        const colour = colourFor(process.stdout);
        for (const p of patches) process.stdout.write(colourPatch(p, colour));
        if (patches.length > 0) process.exitCode = 1;
      } catch (err) {
        if (err instanceof CliError && err.exitCode >= DIFF_FAILED) throw err;
        throw new CliError(formatError(err, globalOptions(cmd).server), { exitCode: DIFF_FAILED });
      }
    });
}

/** The object as it is now; a deletion between the dry run and this read shows as a creation. */
async function current(read: Promise<AnyObject>): Promise<AnyObject | undefined> {
  try {
    return await read;
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.NotFound) return undefined;
    throw err;
  }
}

/** The YAML an object is compared as (what `get -o yaml` prints). */
function shown(obj: AnyObject): string {
  return `${renderJson(objectToJson(obj), "yaml")}\n`;
}

/** Colours a unified diff's lines on a terminal, as git does: removals red, additions green. */
function colourPatch(patch: string, on: boolean): string {
  const lines = patch.split("\n");
  const style = (line: string): Colour | undefined => {
    if (line.startsWith("---") || line.startsWith("+++")) return "bold";
    if (line.startsWith("@@")) return "cyan";
    if (line.startsWith("-")) return "red";
    if (line.startsWith("+")) return "green";
    return undefined;
  };
  return lines.map((line) => paint(line, style(line), on)).join("\n");
}
