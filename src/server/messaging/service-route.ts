/**
 * The messaging plane's live state of one Service: its selector, the endpoints it routes to,
 * the round-robin cursor, and the calls waiting for an endpoint to become ready.
 */
import { Minimatch } from "minimatch";
import type { Service } from "../../gen/k4s/v1/resources_pb.js";
import type { ContainerRecord } from "./container-record.js";
import { Inbox } from "./inbox.js";

/** Calls that may wait for an endpoint of one service. */
export const MAX_SERVICE_WAITERS = 10_000;

/** How a service picks an endpoint. */
export type Strategy = "round-robin" | "random" | "least-in-flight";

/** ServiceRoute is how the router reaches one service: selector, ready endpoints, waiting calls. */
export class ServiceRoute {
  /** Calls waiting for a ready endpoint. */
  readonly waiters = new Inbox();
  cursor = 0;
  strategy: Strategy = "round-robin";
  /** Endpoints last published by the Service controller (status.endpoints). */
  statusEndpoints: readonly string[] = [];
  /** Ready endpoints, recomputed when the plane's topology version moved. */
  endpoints: ContainerRecord[] = [];
  endpointsVersion = -1;
  private matcher: Minimatch | undefined;
  private matchLabels: Record<string, string> = {};

  constructor(
    readonly name: string,
    readonly uid: string,
    obj: Service,
  ) {
    this.apply(obj);
  }

  /** Takes the spec and status of a stored object. */
  apply(obj: Service): void {
    const spec = obj.spec;
    this.matcher = spec?.selector ? new Minimatch(spec.selector, { dot: true, nonegate: true, nocomment: true }) : undefined;
    this.matchLabels = spec?.matchLabels ?? {};
    const s = spec?.strategy ?? "";
    this.strategy = s === "random" || s === "least-in-flight" ? s : "round-robin";
    this.statusEndpoints = obj.status?.endpoints ?? [];
    this.endpointsVersion = -1;
  }

  /** Whether the service's selector picks a container (empty selector and labels: none). */
  selects(c: ContainerRecord): boolean {
    const labelKeys = Object.keys(this.matchLabels);
    if (!this.matcher && labelKeys.length === 0) return false;
    if (this.matcher && !this.matcher.match(c.name)) return false;
    for (const k of labelKeys) if (c.labels[k] !== this.matchLabels[k]) return false;
    return true;
  }
}
