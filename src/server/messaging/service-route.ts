/**
 * How the router reaches one Service: its selector, the ready endpoints it routes to, how it
 * picks among them (round-robin, random, least-in-flight), and the calls waiting for an
 * endpoint to become ready.
 */
import { Minimatch } from "minimatch";
import type { Service } from "../../gen/k4s/v1/resources_pb.js";
import { Inbox } from "./inbox.js";
import type { Letter, Mailbox } from "./mailbox.js";

/** Calls that may wait for an endpoint of one service. */
export const MAX_SERVICE_WAITERS = 10_000;

/** How a service picks an endpoint. */
export type Strategy = "round-robin" | "random" | "least-in-flight";

/** ServiceRoute is the router's state of one service. */
export class ServiceRoute {
  /** Calls waiting for a ready endpoint. */
  readonly waiters = new Inbox<Letter>();
  cursor = 0;
  strategy: Strategy = "round-robin";
  /** Endpoints last published by the Service controller (status.endpoints). */
  statusEndpoints: readonly string[] = [];
  /** Ready endpoints, sorted by name; recomputed when the router's topology version moved. */
  endpoints: Mailbox[] = [];
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
  selects(m: Pick<Mailbox, "name" | "labels">): boolean {
    const labelKeys = Object.keys(this.matchLabels);
    if (!this.matcher && labelKeys.length === 0) return false;
    if (this.matcher && !this.matcher.match(m.name)) return false;
    for (const k of labelKeys) if (m.labels[k] !== this.matchLabels[k]) return false;
    return true;
  }

  /** Whether a ready container is an endpoint: selected, or published in status.endpoints. */
  routesTo(m: Pick<Mailbox, "name" | "labels">): boolean {
    return this.selects(m) || this.statusEndpoints.includes(m.name);
  }

  /** The index in `endpoints` (not empty) of the endpoint to try first, by the service's strategy. */
  pick(endpoints: readonly Mailbox[]): number {
    const n = endpoints.length;
    if (n === 1) return 0;
    if (this.strategy === "random") return Math.floor(Math.random() * n);
    const start = this.cursor++ % n;
    if (this.cursor > 0x3fffffff) this.cursor = 0;
    if (this.strategy === "round-robin") return start;
    // least-in-flight: the fewest unsettled plus waiting messages, the rotation breaking ties.
    let best = start;
    let bestLoad = Infinity;
    for (let i = 0; i < n; i++) {
      const j = (start + i) % n;
      const m = endpoints[j]!;
      const load = m.inflight.size + m.inbox.live;
      if (load < bestLoad) {
        best = j;
        bestLoad = load;
      }
    }
    return best;
  }
}
