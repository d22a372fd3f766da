/**
 * How the CLI reports failures: one line, `error: <message>`, with the gRPC code name for errors
 * that came from the server so a script can tell NOT_FOUND from UNAVAILABLE.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { codeName } from "../api/code-name.js";

/** CliError is a mistake in what the user typed (a bad flag value, bad JSON, a missing file). */
export class CliError extends Error {
  override name = "CliError";
  /** The process's exit code for this failure (1 unless a command's convention says otherwise). */
  readonly exitCode: number;

  constructor(message: string, options: { exitCode?: number } = {}) {
    super(message);
    this.exitCode = options.exitCode ?? 1;
  }
}

/**
 * Formats any thrown value as the single line the CLI prints (without the `error: ` prefix).
 * `server` is the address the command talked to, named when the server cannot be reached.
 */
export function formatError(err: unknown, server?: string): string {
  let text: string;
  if (err instanceof CliError) {
    text = err.message;
  } else if (err instanceof ConnectError) {
    text = `${codeName(err.code)}: ${err.rawMessage}`;
    if (err.code === Code.Unavailable && server && /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT/.test(err.rawMessage)) {
      text += ` (is a k4s server running at ${server}?)`;
    } else if (/stream closed with error code CANCEL|wrong version number|ECONNRESET/.test(err.rawMessage)) {
      // A plaintext call to a TLS server (or the reverse) fails one of these ways (which one
      // depends on timing), none of which says why.
      text += " (does the server use TLS? then add --tls or --tls-ca FILE)";
    } else if (/self[- ]signed certificate|unable to verify|certificate/.test(err.rawMessage)) {
      text += " (trust the server's certificate with --tls-ca FILE)";
    }
  } else if (err instanceof Error) {
    text = err.message;
  } else {
    text = String(err);
  }
  return text.replace(/\s*\n\s*/g, "; ").trim();
}
