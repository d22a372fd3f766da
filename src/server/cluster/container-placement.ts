/**
 * Which server of a cluster is responsible for a container, read from its stored status and the
 * session records every server keeps (session-locator.ts): the server holding the session of the
 * host it is bound to runs its lifecycle, and the server holding the session its deliveries go to
 * (its host's for a module container, its attached process's otherwise) routes its messages. A
 * container bound to a host no server holds is orphaned: the leader waits for the host to come
 * back, then schedules it again. Pure: the same status and records give the same answer.
 */
import type { Container } from "../../gen/k4s/v1/resources_pb.js";
import { containerKind } from "../controllers/container-record.js";
import type { SessionLocator } from "./session-locator.js";

/** Placement says which servers act for a container ("" where none does now). */
export interface Placement {
  /** The server that runs its lifecycle: its host's holder, or for an external container its process's. */
  runs: string;
  /** The server whose router delivers its messages: its delivery session's holder. */
  delivers: string;
  /** The host it is bound to when no server holds that host's session now (else ""). */
  orphanedOn: string;
}

/**
 * The host a module or command container is bound to by its stored status ("" when none). An
 * ended container's status still names the host it last ran on: it is bound to none. An external
 * container's names its process, not a host.
 */
export function boundHost(obj: Container): string {
  const st = obj.status;
  if (!st || containerKind(obj.spec) === "external" || st.phase === "Succeeded" || st.phase === "Failed") return "";
  return st.host;
}

/**
 * Whether a container no server delivers now can still come to one: not ended, not being
 * deleted, and not an external one (which comes only when a process attaches: no server waits
 * for that). A call for any other waits for a server to take it; for these it is answered at once.
 */
export function awaitsPlace(obj: Container): boolean {
  const phase = obj.status?.phase;
  if (obj.metadata?.deletionTimestamp || phase === "Succeeded" || phase === "Failed" || phase === "Terminating") return false;
  return containerKind(obj.spec) !== "external";
}

/** Where a container stands in the cluster now. */
export function placementOf(obj: Container, sessions: Pick<SessionLocator, "host" | "attached">): Placement {
  const name = obj.metadata?.name ?? "";
  const kind = containerKind(obj.spec);
  const bound = boundHost(obj);
  const hostHolder = bound ? (sessions.host(bound)?.server ?? "") : "";
  const attachedHolder = kind !== "module" ? (sessions.attached(name)?.server ?? "") : "";
  return {
    runs: kind === "external" ? attachedHolder : hostHolder,
    delivers: kind === "module" ? hostHolder : attachedHolder,
    orphanedOn: bound && !hostHolder ? bound : "",
  };
}
