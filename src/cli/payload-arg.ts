/** The message argument of `send` and `request`: JSON text, `-` for stdin, or text with --text. */
import type { Command } from "commander";
import { CliError } from "./errors.js";
import { readStdin } from "./stdin.js";

/** The most message text the CLI reads from stdin. */
const MAX_STDIN_BYTES = 4 * 1024 * 1024;

/** Reads the message value: parsed JSON, or the raw string when text is set. */
export async function readPayloadArg(arg: string | undefined, text: boolean): Promise<unknown> {
  const raw = arg === undefined || arg === "-" ? await readStdin(MAX_STDIN_BYTES, "message") : arg;
  if (text) return raw;
  if (raw.trim() === "") throw new CliError("message is empty: give JSON, e.g. '\"hello\"' or '{\"n\": 1}' (or use --text)");
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw new CliError(`message is not valid JSON (${(err as Error).message}); quote strings as '"hello"' or use --text`);
  }
}

/** Adds what `send` and `request` both take: TARGET, the message (`what`, e.g. "the message") and --text. */
export function messageArguments(command: Command, what: string): Command {
  return command
    .argument("<target>", "container/NAME, service/NAME, or NAME (a container, else a service)")
    .argument("[json]", `${what} as JSON (- or omitted: read stdin)`)
    .option("--text", "send the argument as text/plain instead of JSON");
}
