/**
 * The worker hosts of every server of a cluster as the leader's scheduler sees them: each from its
 * session record (what it serves, its capacity, whether it may spawn processes, and which server
 * holds it), and its load from the stored statuses of the containers bound to it, since the
 * lifecycle of those runs on the host's own server.
 */
import type { Container } from "../../gen/k4s/v1/resources_pb.js";
import type { Host } from "../controllers/scheduler.js";
import { boundHost } from "./container-placement.js";
import type { LocatedSession } from "./session-locator.js";

/** ClusterHost is a host of any server, for pickHost and unschedulableReason. */
export interface ClusterHost extends Host {
  /** The advertise address of the server holding its session. */
  readonly server: string;
}

/** The hosts whose records say what they run (the records of older servers do not: they are left out). */
export function clusterHosts(sessions: Iterable<LocatedSession>): ClusterHost[] {
  const hosts: ClusterHost[] = [];
  for (const s of sessions) {
    if (s.kind !== "host" || !s.host) continue;
    hosts.push({ name: s.name, role: "host", closed: false, modules: new Set(s.host.modules), capacity: s.host.capacity, canSpawn: s.host.canSpawn, server: s.server });
  }
  return hosts;
}

/** How many containers each host runs or starts, by host name, from the stored statuses. */
export function hostLoads(containers: Iterable<Container>): Map<string, number> {
  const loads = new Map<string, number>();
  for (const c of containers) {
    const host = boundHost(c);
    if (host !== "") loads.set(host, (loads.get(host) ?? 0) + 1);
  }
  return loads;
}
