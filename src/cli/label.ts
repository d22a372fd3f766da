/**
 * `k4s label` and `k4s annotate`, as kubectl's: `KIND NAME... KEY=VALUE... KEY-...` (or
 * `-l SELECTOR` / `--all` instead of names) sets and removes labels or annotations, refusing to
 * change an existing value without --overwrite; each object is written with a precondition on
 * the version read, and read again when another writer came first.
 */
import { Command } from "commander";
import { Code, ConnectError } from "@connectrpc/connect";
import { clone } from "@bufbuild/protobuf";
import { kindInfo, type AnyObject, type Kind } from "../api/kinds.js";
import type { K4sClient } from "../client/client.js";
import { withClient } from "./connection.js";
import { CliError, formatError } from "./errors.js";
import { kindRef } from "./format.js";
import { collect, kindAndName, labelSelectorOption } from "./options.js";

interface MapCommandOptions {
  overwrite?: boolean;
  selector: string[];
  all?: boolean;
  list?: boolean;
}

/** The two commands differ only in the map they change and their words. */
interface MapKind {
  command: "label" | "annotate";
  field: "labels" | "annotations";
  /** Past tense for the result line, as kubectl prints it. */
  done: "labeled" | "annotated";
}

/** Changes to make: keys to set (with values) and keys to remove. */
interface Changes {
  set: [string, string][];
  remove: string[];
}

/** How often a write is retried after another writer changed the object first. */
const CONFLICT_RETRIES = 5;

/** Creates the label command. */
export function labelCommand(): Command {
  return mapCommand({ command: "label", field: "labels", done: "labeled" });
}

/** Creates the annotate command. */
export function annotateCommand(): Command {
  return mapCommand({ command: "annotate", field: "annotations", done: "annotated" });
}

function mapCommand(m: MapKind): Command {
  return new Command(m.command)
    .description(`set (KEY=VALUE) or remove (KEY-) ${m.field} of objects`)
    .argument("<kind>", "containers|c, replicasets|rs, services|svc (or KIND/NAME)")
    .argument("[args...]", `NAME... (or KIND/NAME...), then KEY=VALUE to set and KEY- to remove`)
    .option("--overwrite", "allow changing the value of an existing key")
    .option("-l, --selector <selector>", "every object whose labels match, instead of names (repeatable)", collect, [])
    .option("--all", "every object of the kind")
    .option("--list", `print the objects' ${m.field} instead of changing them`)
    .action(async (kindArg: string, args: string[], opts: MapCommandOptions, cmd: Command) => {
      const { refs, changes } = parseArgs(kindArg, args);
      const selector = labelSelectorOption(opts.selector);
      const bySelection = Boolean(selector || opts.all);
      if (refs.names.length > 0 && bySelection) throw new CliError(`${m.command} takes NAMEs or -l/--all, not both`);
      if (refs.names.length === 0 && !bySelection) throw new CliError(`${m.command} ${kindArg} needs NAMEs, -l SELECTOR or --all`);
      if (!opts.list && changes.set.length === 0 && changes.remove.length === 0) {
        throw new CliError(`${m.command} needs KEY=VALUE to set or KEY- to remove`);
      }
      await withClient(cmd, async (client) => {
        const names = bySelection ? (await client.list(refs.kind, { labelSelector: selector })).items.map((o) => o.metadata!.name) : refs.names;
        let failed = false;
        for (const name of names) {
          try {
            if (opts.list) printMap(await client.get(refs.kind, name), m);
            else console.log(`${kindRef(refs.kind, name)} ${await change(client, refs.kind, name, m, changes, opts.overwrite ?? false)}`);
          } catch (err) {
            if (err instanceof ConnectError && err.code === Code.Unavailable) throw err;
            process.stderr.write(`error: ${formatError(err)}\n`);
            failed = true;
          }
        }
        if (failed) process.exitCode = 1;
      });
    });
}

/** Splits `NAME... KEY=VALUE... KEY-...` (or KIND/NAME forms) into objects and changes. */
function parseArgs(kindArg: string, args: string[]): { refs: { kind: Kind; names: string[] }; changes: Changes } {
  const changes: Changes = { set: [], remove: [] };
  const names: string[] = [];
  let kind: Kind;
  const rest = [...args];
  if (kindArg.includes("/")) {
    const first = kindAndName(kindArg, undefined);
    kind = first.kind;
    names.push(first.name!);
    while (rest.length > 0 && rest[0]!.includes("/") && !rest[0]!.includes("=") && !rest[0]!.endsWith("-")) {
      const ref = kindAndName(rest.shift()!, undefined);
      if (ref.kind !== kind) throw new CliError(`"${kindArg}" and "${kindRef(ref.kind, ref.name!)}": one kind at a time`);
      names.push(ref.name!);
    }
  } else {
    kind = kindAndName(kindArg, undefined).kind;
    while (rest.length > 0 && !rest[0]!.includes("=") && !rest[0]!.endsWith("-")) names.push(rest.shift()!);
  }
  for (const a of rest) {
    const eq = a.indexOf("=");
    if (eq > 0) changes.set.push([a.slice(0, eq), a.slice(eq + 1)]);
    else if (a.endsWith("-") && a.length > 1) changes.remove.push(a.slice(0, -1));
    else throw new CliError(`"${a}": expected KEY=VALUE to set or KEY- to remove`);
  }
  return { refs: { kind, names }, changes };
}

function printMap(obj: AnyObject, m: MapKind): void {
  const map = obj.metadata?.[m.field] ?? {};
  for (const k of Object.keys(map).sort()) console.log(`${k}=${map[k]}`);
}

/**
 * Applies the changes to one object, re-reading it when another writer came first. Returns the
 * word for the result line: labeled/annotated, or "unchanged" when nothing had to change.
 */
async function change(client: K4sClient, kind: Kind, name: string, m: MapKind, changes: Changes, overwrite: boolean): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    const current = await client.get(kind, name);
    const map = current.metadata?.[m.field] ?? {};
    for (const [k, v] of changes.set) {
      if (!overwrite && Object.hasOwn(map, k) && map[k] !== v) throw new CliError(`'${k}' already has a value (${map[k]}), and --overwrite is false`);
    }
    const next = clone(kindInfo(kind).schema, current) as AnyObject;
    const target = next.metadata![m.field];
    for (const [k, v] of changes.set) target[k] = v;
    for (const k of changes.remove) delete target[k];
    const changed = changes.set.some(([k, v]) => map[k] !== v) || changes.remove.some((k) => Object.hasOwn(map, k));
    if (!changed) return "unchanged";
    try {
      await client.update(next);
      return m.done;
    } catch (err) {
      if (!(err instanceof ConnectError && err.code === Code.Aborted) || attempt >= CONFLICT_RETRIES) throw err;
    }
  }
}
