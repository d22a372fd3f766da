/**
 * Output formatting shared by the commands, in kubectl's habits: aligned tables with upper-case
 * headers, human ages, `<kind>/<name>` references, and the protobuf JSON of objects in
 * Kubernetes' shape (apiVersion, kind, metadata, spec, status) for `-o json|yaml`.
 */
import type { JsonValue } from "@bufbuild/protobuf";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { kindOf, type AnyObject, type Kind } from "../api/kinds.js";
import type { Container, ReplicaSet, Service } from "../gen/k4s/v1/resources_pb.js";
import { humanDuration } from "./duration.js";
import { CliError } from "./errors.js";

type YamlModule = typeof import("yaml");
let yamlModule: YamlModule | undefined;

/**
 * Loads the YAML library. It is slow to load and only -o yaml, describe and delete -f need it,
 * so commands load it on demand before calling yaml().
 */
export async function loadYaml(): Promise<YamlModule> {
  return (yamlModule ??= await import("yaml"));
}

/** The YAML library, once loadYaml() resolved. */
export function yaml(): YamlModule {
  if (!yamlModule) throw new Error("the YAML library is not loaded: await loadYaml() first");
  return yamlModule;
}

/** The output formats of get. */
export type OutputFormat = "table" | "wide" | "json" | "yaml" | "name";

/** Parses `-o` values; INVALID when unknown. */
export function parseOutputFormat(value: string | undefined): OutputFormat {
  if (value === undefined || value === "") return "table";
  if (value === "json" || value === "yaml" || value === "wide" || value === "name") return value;
  throw new CliError(`unknown output format "${value}": use json, yaml, wide or name`);
}

/** Returns `<kind lowercase>/<name>`, the way kubectl names objects in its output. */
export function objectRef(obj: AnyObject): string {
  return `${kindOf(obj).toLowerCase()}/${obj.metadata?.name ?? ""}`;
}

/** Returns `<kind lowercase>/<name>` for a kind and a name. */
export function kindRef(kind: Kind, name: string): string {
  return `${kind.toLowerCase()}/${name}`;
}

/** Formats how long ago a timestamp was as kubectl does ("45s", "5m30s", "3h", "2d4h"). */
export function age(ts: Timestamp | undefined, now = Date.now()): string {
  if (!ts) return "<unknown>";
  return humanDuration(now - timestampMs(ts));
}

/** Table is a header row and data rows of cells. */
export interface Table {
  header: string[];
  rows: string[][];
}

/** Column widths that fit a table's header and rows. */
export function columnWidths(table: Table): number[] {
  return table.header.map((h, i) => Math.max(h.length, ...table.rows.map((r) => (r[i] ?? "").length)));
}

/**
 * Renders one row padded to the given widths, three spaces between columns, as kubectl does;
 * `style` may colour a cell after it was padded, so colour codes never upset the alignment.
 */
export function renderRow(cells: string[], widths: number[], style?: (index: number, padded: string) => string): string {
  const padded = cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? c.length)));
  const line = padded.join("   ").trimEnd();
  if (!style) return line;
  return padded
    .map((p, i) => {
      const text = p.trimEnd();
      return style(i, text) + p.slice(text.length);
    })
    .join("   ")
    .trimEnd();
}

/** Renders a table as text lines (no trailing newline). */
export function renderTable(table: Table): string {
  const widths = columnWidths(table);
  return [table.header, ...table.rows].map((r) => renderRow(r, widths)).join("\n");
}

/** The message explaining a container's state, shown when it is not plainly running. */
function containerMessage(c: Container): string {
  return c.status?.message ?? "";
}

/** What a container runs, for wide output: module/function, or the command line. */
function containerRuns(c: Container): string {
  const spec = c.spec;
  if (!spec) return "";
  if (spec.command.length > 0) return [...spec.command, ...spec.args].join(" ");
  if (spec.module || spec.function) return `${spec.module}/${spec.function}`;
  return "<external>";
}

function selectorText(s: Service): string {
  const parts: string[] = [];
  if (s.spec?.selector) parts.push(s.spec.selector);
  for (const [k, v] of Object.entries(s.spec?.matchLabels ?? {}).sort()) parts.push(`${k}=${v}`);
  return parts.join(",") || "<none>";
}

function endpointsText(s: Service): string {
  const eps = s.status?.endpoints ?? [];
  if (eps.length === 0) return "<none>";
  // kubectl shortens long endpoint lists the same way.
  return eps.length > 3 ? `${eps.slice(0, 3).join(",")} + ${eps.length - 3} more...` : eps.join(",");
}

/** Options of a kind's table. */
export interface TableOptions {
  wide?: boolean;
  /** Show the MESSAGE column of containers even when no row has a message (watch mode). */
  alwaysMessage?: boolean;
  /** Names as `<kind>/<name>`, as kubectl's `get all` prints them. */
  kindPrefix?: boolean;
  /** A LABELS column at the end (`--show-labels`). */
  showLabels?: boolean;
  now?: number;
}

/** Labels as kubectl's --show-labels prints them: `k=v,k2=v2`, sorted, or `<none>`. */
export function labelsText(labels: Readonly<Record<string, string>> | undefined): string {
  const entries = Object.entries(labels ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return entries.length === 0 ? "<none>" : entries.map(([k, v]) => `${k}=${v}`).join(",");
}

/** Header and row function of a kind's table. */
export interface TableLayout {
  header: string[];
  row: (obj: AnyObject) => string[];
}

/**
 * Header and row function for the table of a kind; rows depend on the options only, so watch
 * rows match the listing's columns.
 */
export function tableLayout(kind: Kind, objects: readonly AnyObject[], options: TableOptions = {}): TableLayout {
  const base = kindLayout(kind, objects, options);
  if (!options.kindPrefix && !options.showLabels) return base;
  const prefix = `${kind.toLowerCase()}/`;
  return {
    header: options.showLabels ? [...base.header, "LABELS"] : base.header,
    row: (o) => {
      const cells = base.row(o);
      if (options.kindPrefix) cells[0] = prefix + cells[0];
      if (options.showLabels) cells.push(labelsText(o.metadata?.labels));
      return cells;
    },
  };
}

function kindLayout(kind: Kind, objects: readonly AnyObject[], options: TableOptions): TableLayout {
  const now = () => options.now ?? Date.now();
  switch (kind) {
    case "Container": {
      // A Pending container that says why (no worker host yet, back-off, ...) shows the reason
      // without -o wide, so "nothing happens" is never a mystery.
      const withMessage =
        options.wide ||
        options.alwaysMessage ||
        objects.some((o) => {
          const c = o as Container;
          return containerMessage(c) !== "" && c.status?.phase !== "Running";
        });
      const header = ["NAME", "PHASE", "READY", "RESTARTS", "HOST", "AGE"];
      if (options.wide) header.push("RUNS");
      if (withMessage) header.push("MESSAGE");
      return {
        header,
        row: (o) => {
          const c = o as Container;
          const phase = c.metadata?.deletionTimestamp && c.status?.phase !== "Terminating" ? "Terminating" : c.status?.phase || "Pending";
          const cells = [
            c.metadata?.name ?? "",
            phase,
            c.status?.ready ? "1/1" : "0/1",
            String(c.status?.restarts ?? 0),
            c.status?.host || "<none>",
            age(c.metadata?.creationTimestamp, now()),
          ];
          if (options.wide) cells.push(containerRuns(c));
          if (withMessage) cells.push(containerMessage(c));
          return cells;
        },
      };
    }
    case "ReplicaSet": {
      const header = ["NAME", "DESIRED", "CURRENT", "READY", "AGE"];
      if (options.wide) header.push("CONTAINER", "MESSAGE");
      return {
        header,
        row: (o) => {
          const rs = o as ReplicaSet;
          const cells = [
            rs.metadata?.name ?? "",
            String(rs.spec?.replicas ?? 1),
            String(rs.status?.replicas ?? 0),
            String(rs.status?.readyReplicas ?? 0),
            age(rs.metadata?.creationTimestamp, now()),
          ];
          if (options.wide) cells.push(rs.spec?.container || "<inline>", rs.status?.message ?? "");
          return cells;
        },
      };
    }
    case "Service": {
      return {
        header: ["NAME", "SELECTOR", "STRATEGY", "ENDPOINTS", "AGE"],
        row: (o) => {
          const s = o as Service;
          return [
            s.metadata?.name ?? "",
            selectorText(s),
            s.spec?.strategy || "round-robin",
            endpointsText(s),
            age(s.metadata?.creationTimestamp, now()),
          ];
        },
      };
    }
  }
}

/** Renders objects of one kind as a kubectl-style table. */
export function objectTable(kind: Kind, objects: readonly AnyObject[], options: TableOptions = {}): Table {
  const layout = tableLayout(kind, objects, options);
  return { header: layout.header, rows: objects.map(layout.row) };
}

/** Renders a JSON value as YAML (after loadYaml()) or indented JSON text, without a trailing newline. */
export function renderJson(value: JsonValue, format: "json" | "yaml"): string {
  return format === "json" ? JSON.stringify(value, null, 2) : yaml().stringify(value, { lineWidth: 0 }).trimEnd();
}
