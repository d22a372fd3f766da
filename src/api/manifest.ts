/**
 * Manifests: multi-document YAML (or JSON) text turned into typed, validated objects.
 *
 * Conversion walks the generated message descriptors instead of calling fromJson, so that each
 * error names the document, the field path and the reason, numbers and strings are not
 * silently coerced into each other, and server-set fields (status, uid, resourceVersion, ...)
 * can be accepted and dropped, which lets `k4s get -o yaml | k4s apply -f -` round-trip.
 */
import {
  create,
  fromJson,
  ScalarType,
  type DescField,
  type DescMessage,
  type JsonObject,
  type JsonValue,
  type Message,
} from "@bufbuild/protobuf";
import { isWrapperDesc, StructSchema, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { parseAllDocuments } from "yaml";
import { API_VERSION, KINDS, kindInfo, parseKind, type AnyObject, type Kind } from "./kinds.js";
import { badRequest, violationsOf, type FieldViolation } from "./bad-request.js";
import { assertTextNesting, MAX_NESTING_DEPTH, valueNestingDepth } from "./nesting-depth.js";
import { formatIssues, validateObject, type FieldIssue } from "./validate.js";

export { validateObject, type FieldIssue } from "./validate.js";

/** The largest manifest accepted, in bytes (UTF-8). */
export const MAX_MANIFEST_BYTES = 1024 * 1024;

/** The most alias expansions a manifest may use (guards against "billion laughs" documents). */
export const MAX_ALIAS_COUNT = 50;

/** The most documents one manifest may hold. */
export const MAX_DOCUMENTS = 1000;

/** The most errors reported for one manifest; the rest are counted. */
const MAX_REPORTED_ERRORS = 20;

/** Fields the server sets; accepted in manifests (output of `get -o yaml`) and ignored. */
const IGNORED_PATHS = new Set([
  "status",
  "metadata.uid",
  "metadata.resourceVersion",
  "metadata.generation",
  "metadata.creationTimestamp",
  "metadata.deletionTimestamp",
]);

type Plain = Record<string, unknown>;

function isPlainObject(v: unknown): v is Plain {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Map) && !(v instanceof Set);
}

function describeValue(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (isPlainObject(v)) return "a mapping";
  if (typeof v === "string") return `string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint") return `${typeof v} ${String(v)}`;
  return typeof v;
}

const fieldIndex = new WeakMap<DescMessage, Map<string, DescField>>();

/** Fields of a message by JSON (camelCase) name and by proto (snake_case) name. */
function fieldsOf(desc: DescMessage): Map<string, DescField> {
  let m = fieldIndex.get(desc);
  if (!m) {
    m = new Map();
    for (const f of desc.fields) {
      m.set(f.jsonName, f);
      m.set(f.name, f);
    }
    fieldIndex.set(desc, m);
  }
  return m;
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]!;
      dp[j] = Math.min(dp[j]! + 1, dp[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length]!;
}

function unknownField(desc: DescMessage, key: string): string {
  const names = desc.fields.map((f) => f.jsonName);
  const lower = key.toLowerCase();
  const best = names
    .map((n) => ({ n, d: n.toLowerCase() === lower ? 0 : editDistance(lower, n.toLowerCase()) }))
    .sort((x, y) => x.d - y.d)[0];
  if (best && best.d <= Math.max(1, Math.floor(key.length / 3))) return `unknown field "${key}" (did you mean "${best.n}"?)`;
  return `unknown field "${key}" (known: ${names.join(", ")})`;
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const UINT32_MAX = 2 ** 32 - 1;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

/** Converts a scalar; pushes an issue and returns undefined when the type is wrong. */
function convertScalar(type: ScalarType, v: unknown, path: string, issues: FieldIssue[]): unknown {
  const wrong = (expected: string) => {
    issues.push({ path, reason: `expected ${expected}, got ${describeValue(v)}` });
    return undefined;
  };
  // The type's own bounds: a value past them could not be encoded at all.
  const bounded = <T extends number | bigint>(n: T, min: T, max: T): T | undefined => {
    if (n >= min && n <= max) return n;
    issues.push({ path, reason: `must be between ${min} and ${max}, got ${n}` });
    return undefined;
  };
  switch (type) {
    case ScalarType.STRING:
      if (typeof v !== "string") return wrong(typeof v === "number" || typeof v === "boolean" ? "a string (quote the value)" : "a string");
      return v;
    case ScalarType.BOOL:
      return typeof v === "boolean" ? v : wrong("true or false");
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      if (typeof v !== "number" || !Number.isInteger(v)) return wrong("an integer");
      return bounded(v, INT32_MIN, INT32_MAX);
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      if (typeof v !== "number" || !Number.isInteger(v)) return wrong("an integer");
      return bounded(v, 0, UINT32_MAX);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
    case ScalarType.UINT64:
    case ScalarType.FIXED64: {
      // 64-bit integers are strings in protobuf JSON (what `get -o json` prints), so both forms.
      const n = typeof v === "number" && Number.isSafeInteger(v) ? BigInt(v) : typeof v === "string" && /^-?\d{1,20}$/.test(v) ? BigInt(v) : undefined;
      if (n === undefined) return wrong("an integer");
      const unsigned = type === ScalarType.UINT64 || type === ScalarType.FIXED64;
      return unsigned ? bounded(n, 0n, UINT64_MAX) : bounded(n, INT64_MIN, INT64_MAX);
    }
    case ScalarType.FLOAT:
    case ScalarType.DOUBLE:
      return typeof v === "number" ? v : wrong("a number");
    case ScalarType.BYTES:
      if (typeof v !== "string") return wrong("a base64 string");
      return new Uint8Array(Buffer.from(v, "base64"));
  }
}

function convertValue(field: DescField, kind: "scalar" | "enum" | "message", v: unknown, path: string, issues: FieldIssue[]): unknown {
  if (kind === "message") return convertMessage(field.message!, v, path, issues);
  if (kind === "enum") {
    const e = field.enum!;
    const value = typeof v === "string" ? e.values.find((x) => x.name === v) : typeof v === "number" ? e.values.find((x) => x.number === v) : undefined;
    if (!value) {
      issues.push({ path, reason: `expected one of ${e.values.map((x) => x.name).join(", ")}, got ${describeValue(v)}` });
      return undefined;
    }
    return value.number;
  }
  return convertScalar(field.scalar!, v, path, issues);
}

/** Checks that a value is a JSON object (what a Struct field holds) and returns it. */
function convertJsonObject(v: unknown, path: string, issues: FieldIssue[]): JsonObject | undefined {
  if (!isPlainObject(v)) {
    issues.push({ path, reason: `expected a mapping, got ${describeValue(v)}` });
    return undefined;
  }
  const before = issues.length;
  const check = (x: unknown, p: string): void => {
    if (x === null || typeof x === "string" || typeof x === "boolean") return;
    if (typeof x === "number") {
      if (!Number.isFinite(x)) issues.push({ path: p, reason: `${x} is not representable in JSON` });
      return;
    }
    if (Array.isArray(x)) return x.forEach((item, i) => check(item, `${p}[${i}]`));
    if (isPlainObject(x)) return Object.entries(x).forEach(([k, item]) => check(item, `${p}.${k}`));
    issues.push({ path: p, reason: `${describeValue(x)} is not representable in JSON` });
  };
  check(v, path);
  return issues.length === before ? (v as JsonObject) : undefined;
}

/** Converts a mapping into a message of `desc`, pushing an issue for every wrong field. */
function convertMessage(desc: DescMessage, v: unknown, path: string, issues: FieldIssue[]): Message | undefined {
  if (desc.typeName === StructSchema.typeName) {
    if (!isPlainObject(v)) {
      issues.push({ path, reason: `expected a mapping, got ${describeValue(v)}` });
      return undefined;
    }
    try {
      return fromJson(StructSchema, v as JsonValue);
    } catch (e) {
      issues.push({ path, reason: `not representable as JSON: ${(e as Error).message}` });
      return undefined;
    }
  }
  if (desc.typeName === TimestampSchema.typeName) {
    try {
      return fromJson(TimestampSchema, v as JsonValue);
    } catch {
      issues.push({ path, reason: `expected an RFC 3339 time, got ${describeValue(v)}` });
      return undefined;
    }
  }
  if (!isPlainObject(v)) {
    issues.push({ path, reason: `expected a mapping, got ${describeValue(v)}` });
    return undefined;
  }
  const msg = create(desc) as unknown as Record<string, unknown>;
  const fields = fieldsOf(desc);
  const seen = new Map<DescField, string>();
  for (const [key, value] of Object.entries(v)) {
    const field = fields.get(key);
    if (!field) {
      issues.push({ path: path ? `${path}.${key}` : key, reason: unknownField(desc, key) });
      continue;
    }
    const fpath = path ? `${path}.${field.jsonName}` : field.jsonName;
    const twice = seen.get(field);
    if (twice !== undefined) {
      issues.push({ path: fpath, reason: `given twice, as "${twice}" and "${key}"` });
      continue;
    }
    seen.set(field, key);
    if (IGNORED_PATHS.has(fpath)) continue;
    // An empty value (`field:` in YAML) means unset, as kubectl treats it.
    if (value === null || value === undefined) continue;
    let converted: unknown;
    switch (field.fieldKind) {
      case "scalar":
        converted = convertScalar(field.scalar, value, fpath, issues);
        break;
      case "enum":
        converted = convertValue(field, "enum", value, fpath, issues);
        break;
      case "message":
        // protobuf-es represents singular Struct and wrapper fields as plain values.
        if (field.message.typeName === StructSchema.typeName) converted = convertJsonObject(value, fpath, issues);
        else if (isWrapperDesc(field.message)) converted = convertScalar(field.message.fields[0]!.scalar!, value, fpath, issues);
        else converted = convertMessage(field.message, value, fpath, issues);
        break;
      case "list": {
        if (!Array.isArray(value)) {
          issues.push({ path: fpath, reason: `expected a list, got ${describeValue(value)}` });
          continue;
        }
        const out: unknown[] = [];
        value.forEach((item, i) => {
          const ipath = `${fpath}[${i}]`;
          if (item === null) {
            issues.push({ path: ipath, reason: "must not be empty" });
            return;
          }
          const c = convertValue(field, field.listKind, item, ipath, issues);
          if (c !== undefined) out.push(c);
        });
        converted = out;
        break;
      }
      case "map": {
        if (!isPlainObject(value)) {
          issues.push({ path: fpath, reason: `expected a mapping, got ${describeValue(value)}` });
          continue;
        }
        const out: Record<string, unknown> = {};
        for (const [k, item] of Object.entries(value)) {
          const c = item === null ? "" : convertValue(field, field.mapKind, item, `${fpath}.${k}`, issues);
          if (c !== undefined) out[k] = c;
        }
        converted = out;
        break;
      }
    }
    if (converted === undefined) continue;
    if (field.oneof) msg[field.oneof.localName] = { case: field.localName, value: converted };
    else msg[field.localName] = converted;
  }
  return msg as unknown as Message;
}

/** ManifestDocument is one object of a manifest with where it came from. */
export interface ManifestDocument {
  /** 1-based position of the document in the manifest (empty documents count). */
  index: number;
  object: AnyObject;
}

/** How errors name document `index` (1-based) before its kind is known; `take` adds the kind and name. */
function docLabel(index: number): string {
  return `document ${index}`;
}

function failWith(errors: string[], violations: FieldViolation[]): never {
  const shown = errors.slice(0, MAX_REPORTED_ERRORS);
  if (errors.length > shown.length) shown.push(`and ${errors.length - shown.length} more errors`);
  throw badRequest(shown.join("; "), violations);
}

/**
 * Counts lines that start with `---`, stopping once past `limit`: a regular expression over a
 * flood of 200,000 markers took half a second; this stops after the limit's worth.
 */
function countDocumentMarkers(text: string, limit: number): number {
  let n = 0;
  for (let i = text.startsWith("---") ? 0 : text.indexOf("\n---"); i >= 0 && n <= limit; i = text.indexOf("\n---", i + 1)) n++;
  return n;
}

/** The request path of document `index` (1-based) of a manifest: `manifest[0]` is the first. */
function docPath(index: number): string {
  return `manifest[${index - 1}]`;
}

/**
 * Parses manifest text into typed objects with the documents they came from. Throws one
 * INVALID_ARGUMENT ConnectError listing every problem (document, field path, reason) in its
 * message, and each as a `google.rpc.BadRequest` field violation whose field is
 * `manifest[i].<path>` (the i-th document, 0-based, in JSON field names) or `manifest`.
 */
export function parseManifestDocuments(text: string): ManifestDocument[] {
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes > MAX_MANIFEST_BYTES) {
    const reason = `is ${bytes} bytes, more than the limit of ${MAX_MANIFEST_BYTES} bytes (1 MiB)`;
    throw badRequest(`manifest ${reason}`, [{ field: "manifest", description: reason }]);
  }
  // A document marker at the start of a line always starts a new document, so counting them is
  // a cheap upper bound that keeps a flood of tiny documents from reaching the parser.
  const markers = countDocumentMarkers(text, MAX_DOCUMENTS);
  if (markers + 1 > MAX_DOCUMENTS) {
    const reason = `has more than the limit of ${MAX_DOCUMENTS} documents`;
    throw badRequest(`manifest ${reason}`, [{ field: "manifest", description: reason }]);
  }
  // The YAML parser recurses per level: a deep document must never reach it.
  assertTextNesting(text, "manifest");
  const parsed = parseAllDocuments(text, { uniqueKeys: true, prettyErrors: true, merge: false, intAsBigInt: false });
  const docs = Array.isArray(parsed) ? parsed : [];
  const errors: string[] = [];
  const violations: FieldViolation[] = [];
  /** Records a problem: `label: reason` in the message, `field` with the reason as a violation. */
  const report = (label: string, field: string, reason: string) => {
    errors.push(`${label}: ${reason}`);
    violations.push({ field, description: reason });
  };
  const out: ManifestDocument[] = [];
  const seen = new Map<string, string>();
  docs.forEach((doc, i) => {
    const index = i + 1;
    if (doc.errors.length > 0) {
      for (const e of doc.errors) report(docLabel(index), docPath(index), `invalid YAML: ${e.message.split("\n")[0]!.replace(/:$/, "")}`);
      return;
    }
    let js: unknown;
    try {
      js = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
    } catch (e) {
      const reason = /alias/i.test((e as Error).message)
        ? `too many alias expansions (limit ${MAX_ALIAS_COUNT}); the document looks like an alias bomb`
        : (e as Error).message;
      report(docLabel(index), docPath(index), `invalid YAML: ${reason}`);
      return;
    }
    if (js === null || js === undefined) return;
    if (valueNestingDepth(js) > MAX_NESTING_DEPTH) {
      report(docLabel(index), docPath(index), `nests collections more than ${MAX_NESTING_DEPTH} levels deep once its aliases are expanded`);
      return;
    }
    if (isPlainObject(js) && js["kind"] === "List") {
      // What `k4s get -o yaml` prints for several objects, as kubectl's List.
      const extra = Object.keys(js).filter((k) => !["kind", "apiVersion", "items", "metadata"].includes(k));
      if (extra.length > 0) report(`${docLabel(index)} (List): ${extra[0]}`, `${docPath(index)}.${extra[0]}`, `unknown field "${extra[0]}" (known: apiVersion, kind, items)`);
      const items = js["items"] ?? [];
      if (!Array.isArray(items)) {
        report(`${docLabel(index)} (List): items`, `${docPath(index)}.items`, `expected a list, got ${describeValue(items)}`);
        return;
      }
      items.forEach((item, i) => take(item, index, `${docLabel(index)} items[${i}]`, `${docPath(index)}.items[${i}]`));
      return;
    }
    take(js, index, docLabel(index), docPath(index));
  });

  /** Converts one object of document `index`; `where` names it in errors, `path` in violations. */
  function take(js: unknown, index: number, where: string, path: string): void {
    if (!isPlainObject(js)) {
      report(where, path, `expected a mapping with kind, metadata and spec, got ${describeValue(js)}`);
      return;
    }
    const kindValue = js["kind"];
    const meta = js["metadata"];
    const name = isPlainObject(meta) && typeof meta["name"] === "string" ? meta["name"] : undefined;
    if (kindValue === undefined || kindValue === null || kindValue === "") {
      report(`${where}: kind`, `${path}.kind`, `required, one of ${KINDS.join(", ")}`);
      return;
    }
    if (typeof kindValue !== "string" || !(KINDS as readonly string[]).includes(kindValue)) {
      let hint = "";
      try {
        // Aliases (c, rs, svc, containers) are for the CLI; manifests spell the kind out.
        if (typeof kindValue === "string") hint = ` (did you mean "${parseKind(kindValue)}"?)`;
      } catch {
        hint = "";
      }
      report(`${where}: kind`, `${path}.kind`, `unknown kind ${describeValue(kindValue)}${hint}, expected one of ${KINDS.join(", ")}`);
      return;
    }
    const kind = kindValue as Kind;
    const label = `${where} (${kind}${name ? ` "${name}"` : ""})`;
    const issues: FieldIssue[] = [];
    const apiVersion = js["apiVersion"] ?? js["api_version"];
    if ("apiVersion" in js && "api_version" in js) {
      // As for every other field given under both of its names: which one was meant is not known.
      issues.push({ path: "apiVersion", reason: `given twice, as "apiVersion" and "api_version"` });
    } else if (apiVersion !== undefined && apiVersion !== null && apiVersion !== API_VERSION) {
      issues.push({ path: "apiVersion", reason: `must be ${API_VERSION}, got ${describeValue(apiVersion)}` });
    }
    const body: Plain = { ...js };
    delete body["kind"];
    delete body["apiVersion"];
    delete body["api_version"];
    const obj = convertMessage(kindInfo(kind).schema, body, "", issues) as AnyObject | undefined;
    if (obj) {
      obj.apiVersion = API_VERSION;
      obj.kind = kind;
      // Types first: semantic checks on a half-converted object would only add noise.
      if (issues.length === 0) issues.push(...validateObject(obj));
    }
    if (issues.length > 0) {
      errors.push(`${label}: ${formatIssues(issues)}`);
      violations.push(...violationsOf(issues, path));
      return;
    }
    const key = `${kind}/${name}`;
    const first = seen.get(key);
    if (first !== undefined) {
      report(label, `${path}.metadata.name`, `duplicate of ${first}, a manifest may declare each object once`);
      return;
    }
    seen.set(key, where);
    out.push({ index, object: obj! });
  }
  if (errors.length > 0) failWith(errors, violations);
  return out;
}

/**
 * Parses multi-document YAML or JSON manifest text into typed, validated objects, in document
 * order; empty documents are skipped. Throws one INVALID_ARGUMENT ConnectError naming, for
 * each problem, the document (1-based index, kind and name when known), the field and the reason.
 */
export function parseManifest(text: string): AnyObject[] {
  return parseManifestDocuments(text).map((d) => d.object);
}
