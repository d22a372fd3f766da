/**
 * `k4s get servers`: the servers of the cluster the CLI talks to, which one leads, and the
 * worker sessions each holds (hosts and attached processes), as a table or as JSON/YAML.
 */
import { toJson } from "@bufbuild/protobuf";
import type { K4sClient } from "../client/client.js";
import { ClusterServerSchema, type ClusterServer } from "../gen/k4s/v1/info_service_pb.js";
import { humanDuration } from "./duration.js";
import { renderJson, renderTable, type OutputFormat } from "./format.js";

/** The sessions of a server as one cell: `host/NAME` and `attached/NAME`, a few then a count. */
function sessionsText(s: ClusterServer, wide: boolean): string {
  if (s.sessions.length === 0) return "<none>";
  const names = s.sessions.map((x) => `${x.kind}/${x.name}`).sort();
  return !wide && names.length > 3 ? `${names.slice(0, 3).join(",")} + ${names.length - 3} more...` : names.join(",");
}

/** Prints the servers in the given format. */
export async function printServers(client: K4sClient, format: OutputFormat): Promise<void> {
  const servers = await client.servers();
  if (format === "json" || format === "yaml") {
    console.log(renderJson({ kind: "ServerList", items: servers.map((s) => toJson(ClusterServerSchema, s)) }, format));
    return;
  }
  if (format === "name") {
    for (const s of servers) console.log(`server/${s.address}`);
    return;
  }
  const now = Date.now();
  const rows = servers.map((s) => [
    s.self ? `${s.address} (this)` : s.address,
    s.leader ? "leader" : "standby",
    String(s.sessions.length),
    humanDuration(Math.max(0, now - Number(s.startedAtMs))),
    sessionsText(s, format === "wide"),
  ]);
  console.log(renderTable({ header: ["ADDRESS", "ROLE", "SESSIONS", "AGE", "HELD"], rows }));
}
