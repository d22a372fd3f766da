/**
 * `k4s get KIND [NAME...] [-o json|yaml|wide|name] [-l SELECTOR] [--show-labels] [-w|--watch-only]`:
 * tables like kubectl's, the objects' JSON/YAML, and with -w a row per change as it happens.
 * KIND may be a kind, a comma list (`rs,svc`) or `all`; names may be globs, or `KIND/NAME`s.
 */
import { Command } from "commander";
import { Code, ConnectError } from "@connectrpc/connect";
import { KINDS, kindOf, parseKind, type AnyObject, type Kind } from "../api/kinds.js";
import { matchesGlob } from "../api/selector.js";
import type { K4sClient } from "../client/client.js";
import type { ResumeOptions } from "../client/resume.js";
import { colourFor } from "./colour.js";
import { followThroughRestarts, interruptSignal, withClient } from "./connection.js";
import { CliError, formatError } from "./errors.js";
import { listToJson, objectToJson } from "../api/object-json.js";
import { loadYaml, objectRef, parseOutputFormat, renderJson, type OutputFormat } from "./format.js";
import { collect, durationOption, kindAndName, labelSelectorOption } from "./options.js";
import { createTablePrinter, type ChangeType } from "./table-printer.js";
import { printServers } from "./servers.js";

interface GetOptions {
  output?: string;
  watch?: boolean;
  watchOnly?: boolean;
  outputWatchEvents?: boolean;
  showLabels?: boolean;
  selector: string[];
  reconnectTimeout?: number;
}

/** The objects asked for: per kind, names or globs (none: all of the kind). */
interface Query {
  groups: { kind: Kind; names: string[] }[];
  /** Several kinds were asked for (`all`, `rs,svc`, KIND/NAME of several kinds): names carry their kind. */
  manyKinds: boolean;
  labelSelector: string | undefined;
}

const GLOB_CHARS = /[*?[\]{}!]/;

/** Creates the get command. */
export function getCommand(): Command {
  return new Command("get")
    .description("list objects of a kind (containers|c, replicasets|rs, services|svc, all), or some by name")
    .argument("<kind>", "containers|container|c, replicasets|rs, services|svc, a comma list, or all (or KIND/NAME); or servers")
    .argument("[names...]", "object names or globs over names (or more KIND/NAMEs)")
    .option("-o, --output <format>", "json, yaml, wide or name")
    .option("-l, --selector <selector>", "only objects whose labels match: k=v, k!=v, 'k in (a,b)', 'k notin (a,b)', k, !k (comma-separated, repeatable)", collect, [])
    .option("--show-labels", "add a LABELS column")
    .option("-w, --watch", "after listing, print a row for every change as it happens")
    .option("--watch-only", "print a row for every change from now on, without listing first")
    .option("--output-watch-events", "with -w: an EVENT column saying ADDED, MODIFIED or DELETED")
    .option("--reconnect-timeout <duration>", "with -w: how long to wait for a server that went away before giving up (default 5m)", durationOption)
    .action(async (kindArg: string, names: string[], opts: GetOptions, cmd: Command) => {
      const format = parseOutputFormat(opts.output);
      if (format === "yaml") await loadYaml();
      if (SERVERS.has(kindArg)) return withClient(cmd, (client) => printServers(client, format));
      const query = parseQuery(kindArg, names, labelSelectorOption(opts.selector));
      const resume = opts.watch || opts.watchOnly ? followThroughRestarts(cmd, opts.reconnectTimeout) : undefined;
      await withClient(cmd, (client) => runGet(client, query, format, opts, resume));
    });
}

/** The words `get` takes for the servers of the cluster, which are not stored objects. */
const SERVERS = new Set(["servers", "server"]);

/** Reads `KIND [NAME...]`, `all|K1,K2 [NAME...]` and `KIND/NAME...`. */
function parseQuery(kindArg: string, names: string[], labelSelector: string | undefined): Query {
  if (kindArg.includes("/")) {
    const groups: Query["groups"] = [];
    for (const arg of [kindArg, ...names]) {
      if (!arg.includes("/")) throw new CliError(`"${arg}": when one argument is KIND/NAME, all must be`);
      const { kind, name } = kindAndName(arg, undefined);
      let group = groups.find((g) => g.kind === kind);
      if (!group) groups.push((group = { kind, names: [] }));
      group.names.push(name!);
    }
    return { groups, manyKinds: groups.length > 1, labelSelector };
  }
  const kinds = kindArg === "all" ? [...KINDS] : [...new Set(kindArg.split(",").filter(Boolean).map(parseKind))];
  if (kinds.length === 0) throw new CliError(`"${kindArg}" names no kind`);
  return { groups: kinds.map((kind) => ({ kind, names })), manyKinds: kindArg === "all" || kinds.length > 1, labelSelector };
}

/** Whether an object is one of the group's names or globs (any, when there are none). */
function named(names: readonly string[], obj: AnyObject): boolean {
  const name = obj.metadata?.name ?? "";
  return names.length === 0 || names.some((n) => (GLOB_CHARS.test(n) ? matchesGlob(name, n) : n === name));
}

async function runGet(client: K4sClient, query: Query, format: OutputFormat, opts: GetOptions, resume?: ResumeOptions): Promise<void> {
  const watch = Boolean(opts.watch || opts.watchOnly);
  // One name (or glob) is filtered by the server; several are filtered here.
  const lists = await Promise.all(
    query.groups.map(async ({ kind, names }) => {
      const list = await client.list(kind, { nameGlob: names.length === 1 ? names[0] : undefined, labelSelector: query.labelSelector });
      return { kind, objects: list.items.filter((o) => named(names, o)), resourceVersion: list.resourceVersion };
    }),
  );
  const missing = await missingNames(client, query, lists);
  const objects = lists.flatMap((l) => l.objects);
  const table = format === "table" || format === "wide";
  const printer = table
    ? createTablePrinter({
        wide: format === "wide",
        kindPrefix: query.manyKinds,
        showLabels: opts.showLabels ?? false,
        watch,
        watchEvents: opts.outputWatchEvents ?? false,
        colour: colourFor(process.stdout),
      })
    : undefined;

  if (!opts.watchOnly) {
    if (printer) printer.list(lists);
    else if (format === "name") objects.forEach((o) => console.log(objectRef(o)));
    else if (watch) objects.forEach((o) => printDocument(o, format));
    else {
      const one = singleObject(query, objects);
      console.log(renderJson(one ? objectToJson(one) : listToJson(objects), format as "json" | "yaml"));
    }
    if (objects.length === 0 && !watch && missing.length === 0 && (printer || format === "name")) {
      process.stderr.write("No resources found.\n");
    }
  }
  for (const err of missing) process.stderr.write(`error: ${formatError(err)}\n`);
  if (missing.length > 0) process.exitCode = 1;
  if (!watch) return;

  // From the oldest listing: a change seen twice prints once (rows that show nothing new are skipped).
  const from = oldest(lists.map((l) => l.resourceVersion));
  await followChanges(client, query, from, resume, (type, obj) => {
    if (printer) printer.change(type, obj);
    else if (format === "name") console.log(objectRef(obj));
    else printDocument(obj, format);
  });
}

/** The oldest of some resource versions. */
function oldest(versions: readonly string[]): string {
  return versions.reduce((min, v) => (BigInt(v) < BigInt(min) ? v : min));
}

/** The one object `get KIND NAME -o json` prints as itself rather than as a List. */
function singleObject(query: Query, objects: AnyObject[]): AnyObject | undefined {
  const g = query.groups;
  return g.length === 1 && g[0]!.names.length === 1 && !GLOB_CHARS.test(g[0]!.names[0]!) && objects.length === 1 ? objects[0] : undefined;
}

function printDocument(obj: AnyObject, format: OutputFormat): void {
  const text = renderJson(objectToJson(obj), format as "json" | "yaml");
  console.log(format === "yaml" ? `---\n${text}` : text);
}

/**
 * The NOT_FOUND errors of names asked for by exact name and not listed, as kubectl reports
 * them; a name the label selector left out is not missing.
 */
async function missingNames(client: K4sClient, query: Query, lists: { kind: Kind; objects: AnyObject[] }[]): Promise<ConnectError[]> {
  const checks = query.groups.flatMap(({ kind, names }, i) => {
    const listed = new Set(lists[i]!.objects.map((o) => o.metadata?.name));
    return names.filter((n) => !GLOB_CHARS.test(n) && !listed.has(n)).map((n) => ({ kind, name: n }));
  });
  const errors = await Promise.all(
    checks.map(({ kind, name }) =>
      client.get(kind, name).then(
        () => undefined,
        (err) => {
          if (err instanceof ConnectError && err.code === Code.NotFound) return err;
          throw err;
        },
      ),
    ),
  );
  return errors.filter((e): e is ConnectError => e !== undefined);
}

/**
 * Follows the changes of the query's objects from a resource version until interrupted; when
 * the server's history no longer reaches that far back (OUT_OF_RANGE, Kubernetes' 410 Gone), it
 * lists again and goes on from there. A server that goes away is waited for (`resume`), and the
 * watch resumes from the last version it delivered.
 */
async function followChanges(
  client: K4sClient,
  query: Query,
  from: string,
  resume: ResumeOptions | undefined,
  onChange: (type: ChangeType, obj: AnyObject) => void,
): Promise<void> {
  const signal = interruptSignal();
  const kinds = new Map(query.groups.map((g) => [g.kind, g.names]));
  const single = query.groups.length === 1 ? query.groups[0]! : undefined;
  const filter = {
    kind: single?.kind,
    nameGlob: single?.names.length === 1 ? single.names[0] : undefined,
    labelSelector: query.labelSelector,
  };
  const wanted = (obj: AnyObject) => {
    const names = kinds.get(kindOf(obj));
    return names !== undefined && named(names, obj);
  };
  for (;;) {
    const stream = client.watch({ ...filter, resourceVersion: from, signal, resume });
    try {
      for await (const ev of stream) if (wanted(ev.object)) onChange(ev.type, ev.object);
      return;
    } catch (err) {
      // Events of one write come together; the stream knows where the last complete one ended.
      from = stream.resourceVersion || from;
      if (!(err instanceof ConnectError && err.code === Code.OutOfRange)) throw err;
      const lists = await Promise.all(query.groups.map((g) => client.list(g.kind, { labelSelector: query.labelSelector })));
      for (const list of lists) for (const o of list.items) if (wanted(o)) onChange("MODIFIED", o);
      from = oldest(lists.map((l) => l.resourceVersion));
    }
  }
}
