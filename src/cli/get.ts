/**
 * `k4s get KIND [NAME] [-o json|yaml|wide|name] [-w] [-l key=value]`: tables like kubectl's,
 * the objects' JSON/YAML, and with -w a row per change as it happens.
 */
import { Command } from "commander";
import { Code, ConnectError } from "@connectrpc/connect";
import { type AnyObject, type Kind } from "../api/kinds.js";
import type { K4sClient } from "../client/client.js";
import { interruptSignal, withClient } from "./connection.js";
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
import { collect, kindAndName, parseLabels } from "./options.js";

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
    .argument("<kind>", "containers|container|c, replicasets|rs, services|svc (or KIND/NAME)")
    .argument("[name]", "an object name, or a glob over names")
    .option("-o, --output <format>", "json, yaml, wide or name")
    .option("-w, --watch", "after listing, print a row for every change as it happens")
    .option("-l, --selector <key=value>", "only objects carrying these labels (repeatable, comma-separated)", collect, [])
    .action(async (kindArg: string, nameArg: string | undefined, opts: GetOptions, cmd: Command) => {
      const { kind, name } = kindAndName(kindArg, nameArg);
      const format = parseOutputFormat(opts.output);
      const labels = parseLabels(opts.selector);
      if (format === "yaml") await loadYaml();
      await withClient(cmd, (client) => runGet(client, { kind, name, format, labels, watch: opts.watch ?? false }));
    });
}

interface GetRequest {
  kind: Kind;
  name: string | undefined;
  format: OutputFormat;
  labels: Record<string, string> | undefined;
  watch: boolean;
}

async function runGet(client: K4sClient, req: GetRequest): Promise<void> {
  const single = req.name !== undefined && !GLOB_CHARS.test(req.name);
  let items: AnyObject[];
  let resourceVersion: string;
  if (single) {
    // Get answers NOT_FOUND for a missing object; a label filter still applies, as in kubectl.
    const obj = await client.get(req.kind, req.name!);
    const list = await client.list(req.kind, { nameGlob: req.name, labels: req.labels });
    items = list.items.length > 0 ? list.items : req.labels ? [] : [obj];
    resourceVersion = list.resourceVersion;
  } else {
    const list = await client.list(req.kind, { nameGlob: req.name, labels: req.labels });
    items = list.items;
    resourceVersion = list.resourceVersion;
  }
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
      for await (const ev of client.watch({ kind: req.kind, nameGlob: req.name, labels: req.labels, resourceVersion: from, signal })) {
        from = ev.resourceVersion;
        printer.print(ev.object);
      }
      return;
    } catch (err) {
      // History compacted past our version (Kubernetes' 410 Gone): relist and go on.
      if (!(err instanceof ConnectError && err.code === Code.OutOfRange)) throw err;
      const list = await client.list(req.kind, { nameGlob: req.name, labels: req.labels });
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
