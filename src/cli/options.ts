/** Option value parsers shared by the commands; they raise commander's usage errors. */
import { InvalidArgumentError, Option } from "commander";
import { parseByteSize } from "../api/byte-size.js";
import { parseKind, type Kind } from "../api/kinds.js";
import { CliError } from "./errors.js";
import { formatDuration, parseDuration } from "./duration.js";

/** Parses a whole number >= min (and <= max when given), for commander options. */
export function intOption(min = 0, max?: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || (max !== undefined && n > max)) {
      throw new InvalidArgumentError(max === undefined ? `expected a whole number >= ${min}` : `expected a whole number between ${min} and ${max}`);
    }
    return n;
  };
}

/**
 * Checks a server's --advertise address: it names the server in keys of etcd (its member
 * record, its sessions, the keys of its journal), where "/" separates their parts.
 */
export function advertiseOption(value: string): string {
  if (value === "" || /[\s/]/.test(value)) throw new InvalidArgumentError("expected host:port, with no \"/\" or spaces (it names this server in etcd keys)");
  return value;
}

/** Parses a size such as 64Mi, 1Gi or 67108864 into bytes, for commander options. */
export function byteSizeOption(value: string): number {
  try {
    return parseByteSize(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** Parses a duration such as 500ms, 5s or 1m into milliseconds, for commander options. */
export function durationOption(value: string): number {
  try {
    return parseDuration(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/**
 * A duration option (`--timeout <duration>`): parsed to milliseconds, its default shown in
 * --help as a duration ("1m"), not as milliseconds.
 */
export function durationFlag(flags: string, description: string, defaultMs?: number): Option {
  const option = new Option(flags, description).argParser(durationOption);
  return defaultMs === undefined ? option : option.default(defaultMs, formatDuration(defaultMs));
}

/** Collects a repeatable option into an array. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/**
 * Joins repeated `-l` arguments into one label selector (the server parses it: kubectl's
 * `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`); undefined when none.
 */
export function labelSelectorOption(values: readonly string[] = []): string | undefined {
  const parts = values.map((v) => v.trim()).filter(Boolean);
  return parts.length > 0 ? parts.join(",") : undefined;
}

/**
 * Reads a kind and an optional name from `KIND NAME` or `KIND/NAME` arguments, kubectl's two
 * spellings; the kind may be any alias.
 */
export function kindAndName(kindArg: string, nameArg: string | undefined): { kind: Kind; name: string | undefined } {
  if (nameArg === undefined && kindArg.includes("/")) {
    const slash = kindArg.indexOf("/");
    const name = kindArg.slice(slash + 1);
    if (!name) throw new CliError(`"${kindArg}" names no object: use KIND/NAME`);
    return { kind: parseKind(kindArg.slice(0, slash)), name };
  }
  return { kind: parseKind(kindArg), name: nameArg };
}
