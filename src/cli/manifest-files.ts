/**
 * Reading `-f` arguments: a file, every *.yaml, *.yml and *.json file of a directory (sorted by
 * name, like kubectl), or stdin for "-".
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { extname, join } from "node:path";
import { parseKind, type Kind } from "../api/kinds.js";
import { MAX_NESTING_DEPTH, textNestingDepth } from "../api/nesting-depth.js";
import { CliError } from "./errors.js";
import { readStdin } from "./stdin.js";
import { yaml } from "./format.js";

/** The most manifest text the CLI reads from one -f argument. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

const MANIFEST_EXTENSIONS = new Set([".yaml", ".yml", ".json"]);

/** ManifestSource is one manifest file's text and where it came from. */
export interface ManifestSource {
  path: string;
  text: string;
}

function readText(path: string): string {
  let text: string;
  try {
    const size = statSync(path).size;
    if (size > MAX_MANIFEST_BYTES) throw new CliError(`manifest ${path} is too large (${size} bytes, at most ${MAX_MANIFEST_BYTES})`);
    text = readFileSync(path, "utf8");
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file or directory" : (err as Error).message}`);
  }
  return text;
}

/** Reads the manifests a -f argument names. */
export async function readManifests(path: string): Promise<ManifestSource[]> {
  if (path === "-") return [{ path: "<stdin>", text: await readStdin(MAX_MANIFEST_BYTES, "manifest") }];
  let isDir: boolean;
  try {
    isDir = statSync(path).isDirectory();
  } catch {
    throw new CliError(`cannot read ${path}: no such file or directory`);
  }
  if (!isDir) return [{ path, text: readText(path) }];
  const files = readdirSync(path)
    .filter((f) => MANIFEST_EXTENSIONS.has(extname(f).toLowerCase()))
    .sort();
  if (files.length === 0) throw new CliError(`directory ${path} has no *.yaml, *.yml or *.json files`);
  return files.map((f) => ({ path: join(path, f), text: readText(join(path, f)) }));
}

/** Joins manifests into one multi-document text, so apply stays all or nothing across files. */
export function joinManifests(sources: readonly ManifestSource[]): string {
  return sources.map((s) => s.text.replace(/^\uFEFF/, "").trimEnd()).join("\n---\n") + "\n";
}

/** ObjectRef names one object of a manifest. */
export interface ObjectRef {
  kind: Kind;
  name: string;
}

/**
 * Reads the kind and name of every document of manifest text, enough to delete what a file
 * created; the server validates everything else on apply. Needs loadYaml() first.
 */
export function manifestRefs(source: ManifestSource): ObjectRef[] {
  const refs: ObjectRef[] = [];
  const { depth, line } = textNestingDepth(source.text, MAX_NESTING_DEPTH);
  if (depth > MAX_NESTING_DEPTH) throw new CliError(`${source.path}: nests collections more than ${MAX_NESTING_DEPTH} levels deep (line ${line})`);
  const docs = yaml().parseAllDocuments(source.text);
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, i) => {
    const where = `${source.path} document ${i + 1}`;
    if (doc.errors.length > 0) throw new CliError(`${where}: ${doc.errors[0]!.message}`);
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) return;
    if (typeof value !== "object" || Array.isArray(value)) throw new CliError(`${where}: expected an object with kind and metadata.name`);
    const v = value as { kind?: unknown; metadata?: { name?: unknown } };
    if (typeof v.kind !== "string" || v.kind === "") throw new CliError(`${where}: kind is missing`);
    if (typeof v.metadata?.name !== "string" || v.metadata.name === "") throw new CliError(`${where}: metadata.name is missing`);
    let kind: Kind;
    try {
      kind = parseKind(v.kind);
    } catch (err) {
      throw new CliError(`${where}: ${(err as Error).message.replace(/^\[\w+\] /, "")}`);
    }
    refs.push({ kind, name: v.metadata.name });
  });
  return refs;
}
