/**
 * The tables of `k4s get`, listed once or followed with -w: one table per kind, rows that stay
 * under their header while changes arrive, a row only when what it shows changed, deletions
 * said once, and colour on a terminal.
 */
import { kindOf, type AnyObject, type Kind } from "../api/kinds.js";
import { paint, statusColour } from "./colour.js";
import { columnWidths, renderRow, tableLayout, type TableLayout, type TableOptions } from "./format.js";

/** Options of a table printer. */
export interface TablePrinterOptions extends Pick<TableOptions, "wide" | "kindPrefix" | "showLabels"> {
  /** Rows will follow the listing (-w): columns get room to spare, MESSAGE is always there. */
  watch: boolean;
  /** An EVENT column first, saying ADDED, MODIFIED or DELETED (kubectl's --output-watch-events). */
  watchEvents: boolean;
  /** Colour the status cells. */
  colour: boolean;
  /** Where lines go (default console.log). */
  write?: (line: string) => void;
}

/** A change of one object as a watch reports it. */
export type ChangeType = "ADDED" | "MODIFIED" | "DELETED";

/** TablePrinter prints the listing of each kind, then rows for changes. */
export interface TablePrinter {
  /** Prints the tables of a listing, one per kind with objects, a blank line between. */
  list(tables: readonly { kind: Kind; objects: readonly AnyObject[] }[]): void;
  /** Prints the row of a change, unless it shows nothing new. */
  change(type: ChangeType, obj: AnyObject): void;
}

/**
 * Room a watched column gets at least, so rows that arrive later rarely push columns right;
 * status columns get their longest value ("Terminating").
 */
const WATCH_MIN_WIDTH: Record<string, number> = {
  EVENT: 8,
  NAME: 24,
  PHASE: 11,
  READY: 5,
  RESTARTS: 8,
  HOST: 12,
  AGE: 5,
  DESIRED: 7,
  CURRENT: 7,
  SELECTOR: 12,
  STRATEGY: 15,
  ENDPOINTS: 16,
};

interface KindTable {
  layout: TableLayout;
  widths: number[] | undefined;
  ageIndex: number;
  phaseIndex: number;
}

/** Creates a table printer. */
export function createTablePrinter(options: TablePrinterOptions): TablePrinter {
  const write = options.write ?? ((line: string) => console.log(line));
  const tables = new Map<Kind, KindTable>();
  /** The row last printed per object, without its AGE, to skip repeats. */
  const lastRow = new Map<string, string>();
  let headerKind: Kind | undefined;
  let printedAny = false;

  const tableOf = (kind: Kind, objects: readonly AnyObject[]): KindTable => {
    let t = tables.get(kind);
    if (!t) {
      const layout = tableLayout(kind, objects, { ...options, alwaysMessage: options.watch });
      const header = options.watchEvents ? ["EVENT", ...layout.header] : layout.header;
      t = {
        layout: { header, row: layout.row },
        widths: undefined,
        ageIndex: header.indexOf("AGE"),
        phaseIndex: header.indexOf("PHASE"),
      };
      tables.set(kind, t);
    }
    return t;
  };

  const cellsOf = (t: KindTable, obj: AnyObject, type: ChangeType | undefined): string[] => {
    const cells = t.layout.row(obj);
    if (options.watchEvents) cells.unshift(type ?? "ADDED");
    // The object is gone: its last state would read like one more update.
    if (type === "DELETED" && t.phaseIndex >= 0) cells[t.phaseIndex] = "Deleted";
    return cells;
  };

  const fit = (t: KindTable, rows: string[][]): number[] => {
    const widths = columnWidths({ header: t.layout.header, rows });
    if (!options.watch) return widths;
    return widths.map((w, i) => Math.max(w, WATCH_MIN_WIDTH[t.layout.header[i]!] ?? 0));
  };

  const line = (t: KindTable, cells: string[]) =>
    renderRow(cells, t.widths!, options.colour ? (i, text) => (i === t.phaseIndex ? paint(text, statusColour(text), true) : text) : undefined);

  const keyOf = (obj: AnyObject) => `${kindOf(obj)}/${obj.metadata?.name ?? ""}`;
  // AGE moves by itself; a row is new when anything else in it is.
  const shownOf = (t: KindTable, cells: string[]) => cells.filter((_, i) => i !== t.ageIndex).join("\u0000");

  const header = (kind: Kind, t: KindTable) => {
    if (printedAny) write("");
    write(renderRow(t.layout.header, t.widths!));
    headerKind = kind;
    printedAny = true;
  };

  return {
    list(listing) {
      for (const { kind, objects } of listing) {
        if (objects.length === 0) continue;
        const t = tableOf(kind, objects);
        const rows = objects.map((o) => cellsOf(t, o, undefined));
        // A relist (a watch resumed after the server came back) shows only what changed.
        const fresh = rows.map((cells, i) => lastRow.get(keyOf(objects[i]!)) !== shownOf(t, cells));
        if (!fresh.includes(true)) continue;
        t.widths = fit(t, rows);
        header(kind, t);
        rows.forEach((cells, i) => {
          if (!fresh[i]) return;
          write(line(t, cells));
          lastRow.set(keyOf(objects[i]!), shownOf(t, cells));
        });
      }
    },
    change(type, obj) {
      const kind = kindOf(obj);
      const t = tableOf(kind, [obj]);
      const cells = cellsOf(t, obj, type);
      const key = keyOf(obj);
      const shown = shownOf(t, cells);
      if (type === "DELETED") lastRow.delete(key);
      else if (lastRow.get(key) === shown) return;
      else lastRow.set(key, shown);
      if (!t.widths) t.widths = fit(t, [cells]);
      // A cell longer than its column widens it from here on.
      t.widths = t.widths.map((w, i) => Math.max(w, i < cells.length - 1 ? (cells[i]?.length ?? 0) : 0));
      if (headerKind !== kind) header(kind, t);
      write(line(t, cells));
    },
  };
}
