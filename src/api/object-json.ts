/**
 * Objects as plain JSON in Kubernetes' shape (apiVersion, kind, metadata, spec, status): what
 * `k4s get -o json` prints, and what an SDK user hands to JSON.stringify, which cannot take the
 * protobuf-es messages themselves (their int64 fields are bigint).
 */
import { toJson, type JsonValue } from "@bufbuild/protobuf";
import { API_VERSION, kindInfo, kindOf, type AnyObject } from "./kinds.js";

/**
 * The plain JSON of an object in Kubernetes' shape, apiVersion and kind first; int64 counters
 * (generation, observedGeneration) as numbers, as kubectl shows them.
 */
export function objectToJson(obj: AnyObject): JsonValue {
  const kind = kindOf(obj);
  const json = toJson(kindInfo(kind).schema, obj) as Record<string, JsonValue>;
  const { apiVersion: _a, kind: _k, ...rest } = json;
  // Protobuf JSON spells int64 as strings; these counters read better as numbers.
  for (const [section, key] of [["metadata", "generation"], ["status", "observedGeneration"]] as const) {
    const part = rest[section] as Record<string, JsonValue> | undefined;
    if (typeof part?.[key] === "string" && /^\d{1,15}$/.test(part[key])) part[key] = Number(part[key]);
  }
  return { apiVersion: obj.apiVersion || API_VERSION, kind, ...rest };
}

/** The JSON of several objects as a Kubernetes List. */
export function listToJson(objects: readonly AnyObject[]): JsonValue {
  return { apiVersion: API_VERSION, kind: "List", items: objects.map(objectToJson) };
}
