/**
 * `k4s explain KIND[.FIELD...]`, as kubectl's: what a kind or one of its fields is, with the
 * fields below it, from the comments of the API's proto files. protoc-gen-es embeds descriptors
 * without comments, so `npm run generate` writes them to src/gen/k4s/v1/resources_docs.ts; the
 * field structure comes from the generated schemas themselves.
 */
import { Command } from "commander";
import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { API_VERSION, kindInfo, parseKind } from "../api/kinds.js";
import { RESOURCE_DOCS } from "../gen/k4s/v1/resources_docs.js";
import { CliError } from "./errors.js";

/** Messages shown as one value, not as fields: how they are written in a manifest. */
const LEAF_MESSAGES: Readonly<Record<string, string>> = {
  "google.protobuf.Timestamp": "Time",
  "google.protobuf.Struct": "Object",
  "google.protobuf.Value": "any",
  "google.protobuf.ListValue": "[]any",
  "google.protobuf.Duration": "Duration",
  "google.protobuf.BoolValue": "boolean",
  "google.protobuf.StringValue": "string",
  "google.protobuf.Int32Value": "integer",
  "google.protobuf.UInt32Value": "integer",
  "google.protobuf.Int64Value": "integer",
  "google.protobuf.UInt64Value": "integer",
  "google.protobuf.DoubleValue": "number",
  "google.protobuf.FloatValue": "number",
};

/** How deep --recursive goes (the API nests a few levels; this only guards against a cycle). */
const MAX_RECURSION = 8;

/** Creates the explain command. */
export function explainCommand(): Command {
  return new Command("explain")
    .description("describe a kind or a field of it (KIND.FIELD.FIELD...), with the fields below it, from the API's documentation")
    .argument("<resource>", "e.g. containers, rs.spec.template, svc.spec.strategy (field names as in manifests)")
    .option("--recursive", "list every field below, nested, without descriptions")
    .action((resource: string, opts: { recursive?: boolean }) => {
      process.stdout.write(explain(resource, opts.recursive ?? false));
    });
}

/** The text `k4s explain` prints for a resource path. */
export function explain(resource: string, recursive: boolean): string {
  const [kindName, ...path] = resource.split(".");
  const kind = parseKind(kindName ?? "");
  let message: DescMessage = kindInfo(kind).schema;
  let field: DescField | undefined;
  const walked: string[] = [kind];
  for (const part of path) {
    if (!part) throw new CliError(`"${resource}": empty field name`);
    const next = message.fields.find((f) => f.jsonName === part || f.name === part);
    if (!next) {
      throw new CliError(`field "${part}" does not exist in ${walked.join(".")} (fields: ${message.fields.map((f) => f.jsonName).join(", ")})`);
    }
    walked.push(next.jsonName);
    field = next;
    const inner = fieldMessage(next);
    if (inner && !LEAF_MESSAGES[inner.typeName]) message = inner;
    else if (part !== path[path.length - 1]) throw new CliError(`${walked.join(".")} is <${typeText(next)}> and has no fields`);
  }
  const out = [`KIND:       ${kind}`, `VERSION:    ${API_VERSION}`, ""];
  if (field) out.push(`FIELD: ${field.jsonName} <${typeText(field)}>`, "");
  const own = field ? RESOURCE_DOCS[`${field.parent.typeName}.${field.name}`] : RESOURCE_DOCS[message.typeName];
  const inner = field ? fieldMessage(field) : undefined;
  const typeDoc = inner && !LEAF_MESSAGES[inner.typeName] ? RESOURCE_DOCS[inner.typeName] : undefined;
  out.push("DESCRIPTION:", ...indent([own, typeDoc].filter(Boolean).join("\n\n") || "(not documented)", 4), "");
  const hasFields = !field || (inner !== undefined && !LEAF_MESSAGES[inner.typeName]);
  if (hasFields) {
    out.push("FIELDS:");
    if (recursive) out.push(...fieldTree(message, 1, 0));
    else {
      for (const f of message.fields) {
        out.push(`  ${f.jsonName}\t<${typeText(f)}>`, ...indent(RESOURCE_DOCS[`${message.typeName}.${f.name}`] || "(not documented)", 4), "");
      }
    }
  }
  return `${out.join("\n").trimEnd()}\n`;
}

/** Every field below a message, indented by depth, with its type. */
function fieldTree(message: DescMessage, depth: number, guard: number): string[] {
  const lines: string[] = [];
  for (const f of message.fields) {
    lines.push(`${"  ".repeat(depth)}${f.jsonName}\t<${typeText(f)}>`);
    const inner = fieldMessage(f);
    if (inner && !LEAF_MESSAGES[inner.typeName] && guard < MAX_RECURSION) lines.push(...fieldTree(inner, depth + 1, guard + 1));
  }
  return lines;
}

/** The message a field holds (its element's for a list, its value's for a map), if any. */
function fieldMessage(field: DescField): DescMessage | undefined {
  switch (field.fieldKind) {
    case "message":
      return field.message;
    case "list":
      return field.listKind === "message" ? field.message : undefined;
    case "map":
      return field.mapKind === "message" ? field.message : undefined;
    default:
      return undefined;
  }
}

/** A field's type as a manifest writes it, in kubectl's words: string, integer, []X, map[string]X. */
function typeText(field: DescField): string {
  switch (field.fieldKind) {
    case "scalar":
      return scalarText(field.scalar);
    case "enum":
      return "string";
    case "message":
      return messageText(field.message);
    case "list":
      return `[]${field.listKind === "message" ? messageText(field.message) : field.listKind === "enum" ? "string" : scalarText(field.scalar)}`;
    case "map":
      return `map[string]${field.mapKind === "message" ? messageText(field.message) : field.mapKind === "enum" ? "string" : scalarText(field.scalar)}`;
  }
}

function messageText(message: DescMessage): string {
  return LEAF_MESSAGES[message.typeName] ?? message.name;
}

function scalarText(scalar: ScalarType): string {
  switch (scalar) {
    case ScalarType.STRING:
      return "string";
    case ScalarType.BOOL:
      return "boolean";
    case ScalarType.BYTES:
      return "bytes";
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return "number";
    default:
      return "integer";
  }
}

function indent(text: string, by: number): string[] {
  return text.split("\n").map((line) => (line ? `${" ".repeat(by)}${line}` : ""));
}
