/**
 * Object selection by a glob over names (minimatch, as the seed's service selectors) and by
 * labels (a map, or a label selector), shared by List, Watch, the service controller and the router.
 */
import { minimatch } from "minimatch";
import type { AnyObject } from "./kinds.js";
import { matchesLabelSelector, type LabelSelector } from "./label-selector.js";

/** SelectorOptions pick objects: a name glob and labels that must all match. */
export interface SelectorOptions {
  /** Glob over metadata.name; empty or undefined matches every name. */
  nameGlob?: string;
  /** Labels the object must all carry with these values. */
  labels?: Readonly<Record<string, string>>;
  /** A parsed label selector (kubectl's `-l` forms) the object must also satisfy. */
  labelSelector?: LabelSelector;
}

/** The longest glob accepted, to bound minimatch's work. */
export const MAX_GLOB_LENGTH = 256;

/** Tells whether an object is selected by a name glob and labels. */
export function matchesSelector(obj: AnyObject, opts: SelectorOptions): boolean {
  const meta = obj.metadata;
  const name = meta?.name ?? "";
  if (opts.nameGlob && !matchesGlob(name, opts.nameGlob)) return false;
  if (opts.labels) {
    const have = meta?.labels ?? {};
    for (const [k, v] of Object.entries(opts.labels)) {
      if (have[k] !== v) return false;
    }
  }
  if (opts.labelSelector && !matchesLabelSelector(meta?.labels ?? {}, opts.labelSelector)) return false;
  return true;
}

const GLOB_OPTIONS = { dot: true, nonegate: true, nocomment: true } as const;

/** Compiled globs by pattern: watches and the router match the same few globs very often. */
const compiled = new Map<string, RegExp | false>();
const MAX_COMPILED = 1024;

/** Tells whether a name matches a glob (minimatch; no dotfile special case). */
export function matchesGlob(name: string, glob: string): boolean {
  let re = compiled.get(glob);
  if (re === undefined) {
    re = new minimatch.Minimatch(glob, GLOB_OPTIONS).makeRe();
    if (compiled.size >= MAX_COMPILED) compiled.delete(compiled.keys().next().value!);
    compiled.set(glob, re);
  }
  return re !== false && re.test(name);
}

/**
 * Tells whether a string is a usable glob: not empty, bounded, and compilable by minimatch.
 * Returns true or false; use `validateGlob` for the reason.
 */
export function isValidGlob(glob: string): boolean {
  return validateGlob(glob) === undefined;
}

/** Validates a glob, returning the reason when it is not usable (undefined when it is). */
export function validateGlob(glob: string): string | undefined {
  if (glob.length === 0) return "must not be empty";
  if (glob.length > MAX_GLOB_LENGTH) return `must be at most ${MAX_GLOB_LENGTH} characters, got ${glob.length}`;
  if (glob.includes("/")) return `"${glob}" is not a valid glob: names contain no '/'`;
  try {
    const re = new minimatch.Minimatch(glob, GLOB_OPTIONS).makeRe();
    if (re === false) return `"${glob}" is not a valid glob`;
  } catch (e) {
    return `"${glob}" is not a valid glob: ${(e as Error).message}`;
  }
  return undefined;
}
