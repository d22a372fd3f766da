/** The message argument of `send` and `request`: JSON text, `-` for stdin, or text with --text. */
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
