/**
 * The version of the k4s package this code ships in, read from its package.json. This module
 * sits at the same depth under src/ as its compiled (and bundled) forms under dist/, so the
 * relative path holds in the repository and in an installed package alike.
 */
import { readFileSync } from "node:fs";

let version: string | undefined;

/** The k4s package's version, e.g. "0.2.0". */
export function packageVersion(): string {
  version ??= (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
  return version;
}
