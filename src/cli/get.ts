/**
 * `k4s get KIND [NAME] [-o json|yaml|wide|name] [-w] [-l key=value]`: tables like kubectl's,
 * the objects' JSON/YAML, and with -w a row per change as it happens.
 */
import { Command } from "commander";
import { Code, ConnectError } from "@connectrpc/connect";
import { KINDS, parseKind, type AnyObject, type Kind } from "../api/kinds.js";
import type { K4sClient } from "../client/client.js";
import { interruptSignal, withClient } from "./connection.js";
import { CliError } from "./errors.js";
import {
  columnWidths,
  listJson,
  loadYaml,
  objectJson,
  objectRef,
  objectTable,
  parseOutputFormat,
  renderJson,
  renderRow,
  renderTable,
  tableLayout,
  type OutputFormat,
} from "./format.js";
import { collect, kindAndName, labelSelectorOption } from "./options.js";

interface GetOptions {
  output?: string;
  watch?: boolean;
  selector: string[];
}

const GLOB_CHARS = /[*?[\]{}!]/;

/** Creates the get command. */
export function getCommand(): Command {
  return new Command("get")
    .description("list objects of a kind (containers|c, replicasets|rs, services|svc), or one by name")
    .argument("<kind>", "containers|container|c, replicasets|rs, services|svc, a comma list, or all (or KIND/NAME)")
    .argument("[name]", "an object name, or a glob over names")
    .option("-o, --output <format>", "json, yaml, wide or name")
    .option("-w, --watch", "after listing, print a row for every change as it happens")
    .option("-l, --selector <selector>", "only objects whose labels match: k=v, k!=v, 'k in (a,b)', 'k notin (a,b)', k, !k (comma-separated, repeatable)", collect, [])
    .action(async (kindArg: string, nameArg: string | undefined, opts: GetOptions, cmd: Command) => {
      const format = parseOutputFormat(opts.output);
      const labelSelector = labelSelectorOption(opts.selector);
      if (format === "yaml") await loadYaml();
      if (kindArg === "all" || kindArg.includes(",")) {
        const kinds = kindArg === "all" ? [...KINDS] : [...new Set(kindArg.split(",").filter(Boolean).map(parseKind))];
        if (opts.watch) throw new CliError("get -w watches one kind at a time");
        await withClient(cmd, (client) => runGetMany(client, kinds, { name: nameArg, format, labelSelector }));
        return;
      }
      const { kind, name } = kindAndName(kindArg, nameArg);
      await withClient(cmd, (client) => runGet(client, { kind, name, format, labelSelector, watch: opts.watch ?? false }));
    });
}

/** `get all` and `get c,rs`: every kind's objects, one table per kind, or one List. */
async function runGetMany(
  client: K4sClient,
  kinds: Kind[],
  req: { name: string | undefined; format: OutputFormat; labelSelector: string | undefined },
): Promise<void> {
  const lists = await Promise.all(kinds.map((kind) => client.list(kind, { nameGlob: req.name, labelSelector: req.labelSelector })));
  const all = lists.flatMap((l) => l.items);
  if (req.format === "json" || req.format === "yaml") {
    console.log(renderJson(listJson(all), req.format));
  } else if (all.length === 0) {
    process.stderr.write("No resources found.\n");
  } else if (req.format === "name") {
    all.forEach((o) => console.log(objectRef(o)));
  } else {
    const tables = kinds
      .map((kind, i) => ({ kind, items: lists[i]!.items }))
      .filter((t) => t.items.length > 0)
      .map((t) => renderTable(objectTable(t.kind, t.items, { wide: req.format === "wide" })));
    console.log(tables.join("\n\n"));
  }
}

interface GetRequest {
  kind: Kind;
  name: string | undefined;
  format: OutputFormat;
  labelSelector: string | undefined;
  watch: boolean;
}

async function runGet(client: K4sClient, req: GetRequest): Promise<void> {
  const single = req.name !== undefined && !GLOB_CHARS.test(req.name);
  // A named object that does not exist is an error (NOT_FOUND names it), as in kubectl; the
  // listing then applies any label filter and gives the version to watch from.
  if (single) await client.get(req.kind, req.name!);
  const { items, resourceVersion } = await client.list(req.kind, { nameGlob: req.name, labelSelector: req.labelSelector });
  const printer = createPrinter(req.kind, req.format, items, req.watch);
  if (req.format === "json" || req.format === "yaml") {
    if (single && !req.watch && items.length === 1) console.log(renderJson(objectJson(items[0]!), req.format));
    else if (!req.watch) console.log(renderJson(listJson(items), req.format));
    else items.forEach((o) => printer.print(o));
  } else if (items.length === 0) {
    if (!req.watch) process.stderr.write("No resources found.\n");
  } else {
    printer.printAll(items);
  }
  if (!req.watch) return;

  const signal = interruptSignal();
  let from = resourceVersion;
  for (;;) {
    try {
      for await (const ev of client.watch({ kind: req.kind, nameGlob: req.name, labelSelector: req.labelSelector, resourceVersion: from, signal })) {
        from = ev.resourceVersion;
        printer.print(ev.object);
      }
      return;
    } catch (err) {
      // History compacted past our version (Kubernetes' 410 Gone): relist and go on.
      if (!(err instanceof ConnectError && err.code === Code.OutOfRange)) throw err;
      const list = await client.list(req.kind, { nameGlob: req.name, labelSelector: req.labelSelector });
      list.items.forEach((o) => printer.print(o));
      from = list.resourceVersion;
    }
  }
}

interface Printer {
  printAll(objects: AnyObject[]): void;
  print(obj: AnyObject): void;
}

/** A printer keeps table column widths from the first listing so watch rows line up under it. */
function createPrinter(kind: Kind, format: OutputFormat, initial: AnyObject[], watch: boolean): Printer {
  if (format === "name") {
    return {
      printAll: (objects) => objects.forEach((o) => console.log(objectRef(o))),
      print: (o) => console.log(objectRef(o)),
    };
  }
  if (format === "json" || format === "yaml") {
    return {
      printAll: (objects) => objects.forEach((o) => console.log(renderJson(objectJson(o), format))),
      print: (o) => console.log(format === "yaml" ? `---\n${renderJson(objectJson(o), format)}` : renderJson(objectJson(o), format)),
    };
  }
  const layout = tableLayout(kind, initial, { wide: format === "wide", alwaysMessage: watch });
  let widths: number[] | undefined;
  return {
    printAll(objects) {
      const table = objectTable(kind, objects, { wide: format === "wide", alwaysMessage: watch });
      widths = columnWidths(table);
      console.log(renderTable(table));
    },
    print(o) {
      const row = layout.row(o);
      if (!widths) {
        widths = columnWidths({ header: layout.header, rows: [row] });
        console.log(renderRow(layout.header, widths));
      }
      console.log(renderRow(row, widths));
    },
  };
}
