/** `k4s describe KIND NAME`: a readable multi-line view of one object, its status and recent events. */
import { Command } from "commander";
import type { JsonValue } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { kindOf, type AnyObject } from "../api/kinds.js";
import type { K4sClient } from "../client/client.js";
import type { Event } from "../gen/k4s/v1/log_service_pb.js";
import type { Container } from "../gen/k4s/v1/resources_pb.js";
import { withClient } from "./connection.js";
import { CliError } from "./errors.js";
import { kindAndName } from "./options.js";
import { objectToJson } from "../api/object-json.js";
import { age, loadYaml, renderTable, yaml } from "./format.js";

/** The most events describe shows for one object (the newest). */
const MAX_EVENTS = 20;

/** Creates the describe command. */
export function describeCommand(): Command {
  return new Command("describe")
    .description("show one object in detail, with its status and recent events")
    .argument("<kind>", "containers|c, replicasets|rs, services|svc (or KIND/NAME)")
    .argument("[name]", "the object's name")
    .action(async (kindArg: string, nameArg: string | undefined, _opts: unknown, cmd: Command) => {
      const { kind, name } = kindAndName(kindArg, nameArg);
      if (!name) throw new CliError(`describe ${kindArg} needs a NAME`);
      await loadYaml();
      await withClient(cmd, async (client) => {
        const obj = await client.get(kind, name);
        console.log(await describe(client, obj));
      });
    });
}

function field(label: string, value: string): string {
  return `${`${label}:`.padEnd(18)}${value}`;
}

function mapText(m: Record<string, string> | undefined): string {
  const entries = Object.entries(m ?? {}).sort(([a], [b]) => a.localeCompare(b));
  return entries.length === 0 ? "<none>" : entries.map(([k, v]) => `${k}=${v}`).join(",");
}

/** A JSON section (spec, status) as indented YAML, the most readable form of nested values. */
function section(title: string, value: JsonValue | undefined): string[] {
  if (value === undefined || (typeof value === "object" && value !== null && Object.keys(value).length === 0)) {
    return [field(title, "<none>")];
  }
  const body = yaml().stringify(value, { lineWidth: 0 }).trimEnd();
  return [`${title}:`, ...body.split("\n").map((l) => `  ${l}`)];
}

async function describe(client: K4sClient, obj: AnyObject): Promise<string> {
  const kind = kindOf(obj);
  const meta = obj.metadata;
  const json = objectToJson(obj) as Record<string, JsonValue>;
  const lines: string[] = [
    field("Name", meta?.name ?? ""),
    field("Kind", kind),
    field("Labels", mapText(meta?.labels)),
    field("Annotations", mapText(meta?.annotations)),
    field("UID", meta?.uid || "<none>"),
    field("Resource Version", meta?.resourceVersion || "<none>"),
    field("Generation", String(meta?.generation ?? 0)),
    field(
      "Created",
      meta?.creationTimestamp ? `${timestampDate(meta.creationTimestamp).toISOString()} (${age(meta.creationTimestamp)} ago)` : "<unknown>",
    ),
  ];
  if (meta?.ownerReference?.name) lines.push(field("Controlled By", `${meta.ownerReference.kind}/${meta.ownerReference.name}`));
  if (meta?.deletionTimestamp) lines.push(field("Deleting Since", timestampDate(meta.deletionTimestamp).toISOString()));
  lines.push(...section("Spec", json.spec), ...section("Status", json.status));

  if (kind === "ReplicaSet") {
    const replicas = (await client.list("Container", { nameGlob: `${meta?.name}-*` })).items.filter(
      (c) => c.metadata?.ownerReference?.uid === meta?.uid,
    );
    lines.push("Replicas:");
    if (replicas.length === 0) lines.push("  <none>");
    else lines.push(...indent(renderTable({ header: ["NAME", "PHASE", "READY", "HOST"], rows: replicas.map(replicaRow) })));
  }

  const events: Event[] = [];
  for await (const e of client.events({ kind, name: meta?.name ?? "" })) {
    events.push(e);
    if (events.length > MAX_EVENTS) events.shift();
  }
  if (events.length === 0) {
    lines.push(field("Events", "<none>"));
  } else {
    lines.push("Events:");
    const rows = events.map((e) => [e.type, e.reason, age(e.time), e.message]);
    lines.push(...indent(renderTable({ header: ["TYPE", "REASON", "AGE", "MESSAGE"], rows })));
  }
  return lines.join("\n");
}

function replicaRow(c: Container): string[] {
  return [c.metadata?.name ?? "", c.status?.phase || "Pending", c.status?.ready ? "1/1" : "0/1", c.status?.host || "<none>"];
}

function indent(text: string): string[] {
  return text.split("\n").map((l) => `  ${l}`);
}
