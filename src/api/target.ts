/**
 * Message targets: where a send or request goes, written "container/NAME", "service/NAME" or a
 * bare NAME (a container when one has that name, else a service).
 */
import { badField } from "./bad-request.js";

/** Target is a parsed message target. */
export interface Target {
  /** "any" for a bare name: the container of that name, else the service. */
  readonly kind: "container" | "service" | "any";
  readonly name: string;
}

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const KIND_PREFIXES: Record<string, "container" | "service"> = {
  container: "container",
  containers: "container",
  c: "container",
  co: "container",
  service: "service",
  services: "service",
  svc: "service",
};

/**
 * Parses a target text; throws INVALID_ARGUMENT naming the target and what is wrong with it.
 * Accepts the kind aliases of the CLI ("c/NAME", "svc/NAME").
 */
export function parseTarget(text: string): Target {
  const trimmed = text.trim();
  if (trimmed === "") {
    throw badField("target", "empty: expected container/NAME, service/NAME or NAME", "target is empty: expected container/NAME, service/NAME or NAME");
  }
  const slash = trimmed.indexOf("/");
  let kind: Target["kind"] = "any";
  let name = trimmed;
  if (slash >= 0) {
    const prefix = trimmed.slice(0, slash).toLowerCase();
    const k = KIND_PREFIXES[prefix];
    if (!k) {
      const reason = `unknown kind "${trimmed.slice(0, slash)}"; expected container/NAME, service/NAME or NAME`;
      throw badField("target", reason, `target "${text}": ${reason}`);
    }
    kind = k;
    name = trimmed.slice(slash + 1);
  }
  if (name.length > 63 || !NAME.test(name)) {
    const reason = `"${name}" is not a valid name (lowercase letters, digits and '-', at most 63 characters)`;
    throw badField("target", reason, `target "${text}": ${reason}`);
  }
  return { kind, name };
}

/** Formats a target back into its text form ("container/x", "service/y" or "z"). */
export function formatTarget(target: Target): string {
  return target.kind === "any" ? target.name : `${target.kind}/${target.name}`;
}
