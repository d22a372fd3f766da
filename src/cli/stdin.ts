/** Reading what is piped into a command, bounded. */
import { CliError } from "./errors.js";

/** Reads all of stdin as UTF-8 text; refuses more than limit bytes, naming `what` it was for. */
export async function readStdin(limit: number, what: string): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new CliError(`${what} on stdin is too large (more than ${limit} bytes)`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}
