/**
 * Paths of the files the k4s package ships beside its code: the `k4s` command itself (which
 * `k4s server` and the quick start spawn as worker hosts) and the seed manifests of `examples/`.
 * Both resolve from this module's own location, which sits at the same depth under `src/` and
 * under the compiled `dist/`, so they hold in the repository and in an installed package alike.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Path of `bin/k4s.js`, the k4s command. */
export const K4S_BIN = fileURLToPath(new URL("../../bin/k4s.js", import.meta.url));

/** Reads one of the seed manifests of the package's `examples/` folder, e.g. "calculator.yaml". */
export function seedManifest(name: string): string {
  return readFileSync(new URL(`../../examples/${name}`, import.meta.url), "utf8");
}
