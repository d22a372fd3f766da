/**
 * Colour in the CLI's output: only on a terminal, never when piped or when NO_COLOR is set
 * (https://no-color.org), and forced with FORCE_COLOR (as Node and most tools read it) or
 * chosen with `--color=always|never`.
 */
/** The colours the CLI uses. */
export type Colour = "green" | "yellow" | "red" | "gray" | "cyan" | "bold";

/** When to colour: `--color=auto|always|never`, kubectl's and git's words. */
export type ColourMode = "auto" | "always" | "never";

let mode: ColourMode = "auto";

/** Sets the `--color` mode of this run (main() does it from the global option). */
export function setColourMode(value: ColourMode): void {
  mode = value;
}

/**
 * Tells whether output to a stream should be coloured: `--color=always|never` decides; with
 * `auto` (the default) NO_COLOR turns it off, FORCE_COLOR on, and otherwise a terminal gets colour.
 */
export function colourFor(stream: NodeJS.WriteStream): boolean {
  if (mode !== "auto") return mode === "always";
  const env = process.env;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== "") return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== "0") return true;
  return stream.isTTY === true && env.TERM !== "dumb";
}

/** SGR codes of the colours (node:util's styleText needs Node 20.12; the package runs on 20.11). */
const SGR: Record<Colour, [number, number]> = {
  green: [32, 39],
  yellow: [33, 39],
  red: [31, 39],
  gray: [90, 39],
  cyan: [36, 39],
  bold: [1, 22],
};

/** Colours text when `on`; returns it unchanged otherwise. */
export function paint(text: string, colour: Colour | undefined, on: boolean): string {
  if (!on || !colour || text === "") return text;
  const [open, close] = SGR[colour];
  return `\x1b[${open}m${text}\x1b[${close}m`;
}

/** The colour of a container phase or a ready count: green when well, yellow on the way, red when not. */
export function statusColour(value: string): Colour | undefined {
  switch (value) {
    case "Running":
    case "Succeeded":
      return "green";
    case "Pending":
    case "Terminating":
      return "yellow";
    case "Failed":
      return "red";
    case "Deleted":
      return "gray";
    case "Warning":
      return "yellow";
    default:
      return undefined;
  }
}
