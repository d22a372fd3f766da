/**
 * Semantic validation of objects: the rules a well-typed object must still follow (names,
 * labels, which spec fields go together, ranges). Used by manifest parsing and by the store on
 * every create, update and apply, so objects sent as typed messages obey the same rules.
 */
import { badRequest, violationsOf } from "./bad-request.js";
import type { ContainerSpec } from "../gen/k4s/v1/resources_pb.js";
import { API_VERSION, kindOf, type AnyObject } from "./kinds.js";
import { MAX_NESTING_DEPTH, valueNestingDepth } from "./nesting-depth.js";
import { MAX_ANNOTATION_VALUE_LENGTH, MAX_LABELS, validateLabelKey, validateLabelValue, validateName } from "./names.js";
import { validateGlob } from "./selector.js";

import type { FieldIssue } from "./bad-request.js";

export type { FieldIssue };

/** Restart policies a Container accepts ("" means Always). */
export const RESTART_POLICIES = ["Always", "OnFailure", "Never"] as const;
/** The values of a container's spec.delivery ("" means memory). */
export const DELIVERY_MODES = ["memory", "durable"] as const;

/** Service strategies ("" means round-robin). */
export const STRATEGIES = ["random", "round-robin", "least-in-flight"] as const;

/** The most replicas a ReplicaSet may ask for. */
export const MAX_REPLICAS = 10_000;

/**
 * The longest ReplicaSet name: its replicas are named `<name>-<ordinal>` and must stay valid
 * names with ordinals up to MAX_REPLICAS - 1.
 */
export const MAX_REPLICASET_NAME_LENGTH = 63 - 1 - String(MAX_REPLICAS - 1).length;

const MAX_COMMAND_ITEMS = 1000;
const MAX_ENV = 1000;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

function range(issues: FieldIssue[], path: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    issues.push({ path, reason: `must be between ${min} and ${max}, got ${value}` });
  }
}

function checkMap(
  issues: FieldIssue[],
  path: string,
  map: Readonly<Record<string, string>>,
  what: "labels" | "annotations",
): void {
  const entries = Object.entries(map);
  if (entries.length > MAX_LABELS) issues.push({ path, reason: `at most ${MAX_LABELS} ${what} allowed, got ${entries.length}` });
  for (const [k, v] of entries) {
    const keyReason = validateLabelKey(k);
    if (keyReason) issues.push({ path, reason: keyReason });
    if (what === "labels") {
      const valueReason = validateLabelValue(v);
      if (valueReason) issues.push({ path: `${path}.${k}`, reason: valueReason });
    } else if (v.length > MAX_ANNOTATION_VALUE_LENGTH) {
      issues.push({ path: `${path}.${k}`, reason: `must be at most ${MAX_ANNOTATION_VALUE_LENGTH} characters, got ${v.length}` });
    }
  }
}

/**
 * Validates a container spec (of a Container or a ReplicaSet template) under a path prefix;
 * `depth` is the nesting depth of the spec mapping in its object (2 for a Container's spec).
 */
export function validateContainerSpec(spec: ContainerSpec | undefined, path: string, depth: number): FieldIssue[] {
  const issues: FieldIssue[] = [];
  if (!spec) return issues;
  if (spec.parameters && depth + valueNestingDepth(spec.parameters, MAX_NESTING_DEPTH - depth) > MAX_NESTING_DEPTH) {
    issues.push({
      path: `${path}.parameters`,
      reason: `nests more than ${MAX_NESTING_DEPTH - depth} levels deep (an object may nest ${MAX_NESTING_DEPTH} levels in all)`,
    });
  }
  const hasModule = spec.module !== "" || spec.function !== "";
  if (spec.module !== "" && spec.function === "") issues.push({ path: `${path}.function`, reason: "required when module is set" });
  if (spec.function !== "" && spec.module === "") issues.push({ path: `${path}.module`, reason: "required when function is set" });
  if (hasModule && spec.command.length > 0) {
    issues.push({ path: `${path}.command`, reason: "set either module and function, or command, not both" });
  }
  if (spec.command.length > MAX_COMMAND_ITEMS) issues.push({ path: `${path}.command`, reason: `at most ${MAX_COMMAND_ITEMS} items` });
  if (spec.command.length > 0 && spec.command[0] === "") issues.push({ path: `${path}.command[0]`, reason: "must not be empty" });
  if (spec.args.length > 0 && spec.command.length === 0) issues.push({ path: `${path}.args`, reason: "requires command" });
  if (spec.args.length > MAX_COMMAND_ITEMS) issues.push({ path: `${path}.args`, reason: `at most ${MAX_COMMAND_ITEMS} items` });
  const env = Object.keys(spec.env);
  if (env.length > MAX_ENV) issues.push({ path: `${path}.env`, reason: `at most ${MAX_ENV} variables` });
  for (const name of env) {
    if (!ENV_NAME.test(name)) issues.push({ path: `${path}.env`, reason: `"${name}" is not a valid variable name` });
  }
  if (spec.restartPolicy !== "" && !(RESTART_POLICIES as readonly string[]).includes(spec.restartPolicy)) {
    issues.push({ path: `${path}.restartPolicy`, reason: `must be one of ${RESTART_POLICIES.join(", ")}, got "${spec.restartPolicy}"` });
  }
  if (spec.delivery !== "" && !(DELIVERY_MODES as readonly string[]).includes(spec.delivery)) {
    issues.push({ path: `${path}.delivery`, reason: `must be one of ${DELIVERY_MODES.join(", ")}, got "${spec.delivery}"` });
  }
  range(issues, `${path}.concurrency`, spec.concurrency, 0, 1000);
  range(issues, `${path}.queueLimit`, spec.queueLimit, 0, 1_000_000);
  range(issues, `${path}.terminationGraceSeconds`, spec.terminationGraceSeconds, 0, 3600);
  return issues;
}

/**
 * Validates an object's semantics, returning every broken rule (empty when valid). Server-set
 * fields (uid, resourceVersion, status, ...) are not checked.
 */
export function validateObject(obj: AnyObject): FieldIssue[] {
  const issues: FieldIssue[] = [];
  const kind = kindOf(obj);
  if (obj.apiVersion !== "" && obj.apiVersion !== API_VERSION) {
    issues.push({ path: "apiVersion", reason: `must be ${API_VERSION}, got "${obj.apiVersion}"` });
  }
  if (obj.kind !== "" && obj.kind !== kind) issues.push({ path: "kind", reason: `must be ${kind}, got "${obj.kind}"` });
  const meta = obj.metadata;
  if (!meta) {
    issues.push({ path: "metadata.name", reason: "required" });
    return issues;
  }
  const nameReason = validateName(meta.name);
  if (nameReason) issues.push({ path: "metadata.name", reason: nameReason === "must not be empty" ? "required" : nameReason });
  checkMap(issues, "metadata.labels", meta.labels, "labels");
  checkMap(issues, "metadata.annotations", meta.annotations, "annotations");
  switch (obj.$typeName) {
    case "k4s.v1.Container":
      issues.push(...validateContainerSpec(obj.spec, "spec", 2));
      break;
    case "k4s.v1.ReplicaSet": {
      if (meta.name.length > MAX_REPLICASET_NAME_LENGTH) {
        issues.push({
          path: "metadata.name",
          reason: `a ReplicaSet name must be at most ${MAX_REPLICASET_NAME_LENGTH} characters so its replica names stay valid, got ${meta.name.length}`,
        });
      }
      const spec = obj.spec;
      const hasContainer = (spec?.container ?? "") !== "";
      const hasTemplate = spec?.template !== undefined;
      if (hasContainer === hasTemplate) {
        issues.push({ path: "spec", reason: "set exactly one of spec.container (a template Container's name) or spec.template" });
      }
      if (hasContainer) {
        const reason = validateName(spec!.container);
        if (reason) issues.push({ path: "spec.container", reason });
      }
      if (spec?.replicas !== undefined) range(issues, "spec.replicas", spec.replicas, 0, MAX_REPLICAS);
      if (spec?.template) {
        const tm = spec.template.metadata;
        if (tm) {
          checkMap(issues, "spec.template.metadata.labels", tm.labels, "labels");
          checkMap(issues, "spec.template.metadata.annotations", tm.annotations, "annotations");
        }
        issues.push(...validateContainerSpec(spec.template.spec, "spec.template.spec", 4));
      }
      break;
    }
    case "k4s.v1.Service": {
      const spec = obj.spec;
      const selector = spec?.selector ?? "";
      const matchLabels = spec?.matchLabels ?? {};
      if (selector === "" && Object.keys(matchLabels).length === 0) {
        issues.push({ path: "spec.selector", reason: "set spec.selector (a glob over container names) and/or spec.matchLabels" });
      }
      if (selector !== "") {
        const reason = validateGlob(selector);
        if (reason) issues.push({ path: "spec.selector", reason });
      }
      checkMap(issues, "spec.matchLabels", matchLabels, "labels");
      const strategy = spec?.strategy ?? "";
      if (strategy !== "" && !(STRATEGIES as readonly string[]).includes(strategy)) {
        issues.push({ path: "spec.strategy", reason: `must be one of ${STRATEGIES.join(", ")}, got "${strategy}"` });
      }
      break;
    }
  }
  return issues;
}

/** Formats issues as "path: reason; path: reason". */
export function formatIssues(issues: readonly FieldIssue[]): string {
  return issues.map((i) => `${i.path}: ${i.reason}`).join("; ");
}

/**
 * Throws one INVALID_ARGUMENT naming the object and every broken rule, when there is any; its
 * field violations are the rules' paths under `path`, where the object sits in the request
 * ("" for paths relative to the object).
 */
export function assertValid(obj: AnyObject, path = ""): void {
  const issues = validateObject(obj);
  if (issues.length === 0) return;
  const name = obj.metadata?.name;
  throw badRequest(`${kindOf(obj)}${name ? ` "${name}"` : ""}: ${formatIssues(issues)}`, violationsOf(issues, path));
}
