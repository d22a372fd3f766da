/**
 * What one server of a cluster holds: the containers whose lifecycle it runs and whose messages
 * its router delivers. It holds a host's containers while its session of that host is the one in
 * force (the session locator's record of the host is this server's, or this server's record of a
 * session just opened is not in etcd yet); an external container while a process is attached
 * here (claimed cluster-wide). The leader also holds what no server's session holds: containers
 * not bound yet (for its scheduler), ended ones, those bound to a host no server holds (they
 * wait the resume grace for it, then are scheduled again), and external ones no process is
 * attached to anywhere (one whose server died waits the resume grace for its process, then is
 * shown Pending).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Container } from "../../gen/k4s/v1/resources_pb.js";
import { containerKind, type ContainerRecord } from "../controllers/container-record.js";
import type { LinkRegistry } from "../messaging/link-registry.js";
import type { WorkerLink } from "../messaging/worker-link.js";
import { boundHost, placementOf } from "./container-placement.js";
import type { SessionLocator } from "./session-locator.js";

/** HoldingOptions are this server, its links and the records of every server's sessions. */
export interface HoldingOptions {
  self: () => string;
  links: Pick<LinkRegistry, "hosts" | "lose">;
  locator: Pick<SessionLocator, "host" | "attached" | "own">;
  /** Whether this server leads now. */
  leading: () => boolean;
}

/** Holding answers what this server holds now. */
export interface Holding {
  /** Whether this server runs the lifecycle of a container (see ContainerControllerOptions.holds). */
  holds(obj: Container, rec: ContainerRecord | undefined): boolean;
  /** The server that delivers a container's messages now ("" when none does). */
  deliveredBy(obj: Container | undefined, rec: ContainerRecord | undefined): string;
  /** Ends the host sessions of this server that another server's session of the same host replaced. */
  closeReplaced(): void;
}

/** Creates the holding of one server. */
export function createHolding(options: HoldingOptions): Holding {
  const { locator, links } = options;

  /** Whether this server's session of a host is the one in force (or too new to be in etcd yet). */
  function inForce(link: WorkerLink): boolean {
    if (link.closed) return false;
    const own = locator.own(options.self(), "host", link.name);
    if (own?.sessionId !== link.id) return true;
    return locator.host(link.name) === own;
  }

  function liveHost(name: string): WorkerLink | undefined {
    for (const h of links.hosts()) if (h.name === name && !h.closed) return h;
    return undefined;
  }

  function holds(obj: Container, rec: ContainerRecord | undefined): boolean {
    const name = obj.metadata?.name ?? "";
    if (containerKind(obj.spec) === "external") {
      const attached = rec?.attached;
      if (attached && !attached.closed) return true;
      if (!options.leading() || locator.attached(name)) return false;
      // Shown Running with no process attached anywhere: its server died, or an attach elsewhere
      // is on its way to etcd. The leader takes it only to wait, writing nothing, for the process
      // to attach again (see awaitProcess); a record it had from before is let go of.
      return obj.status?.phase !== "Running" || rec === undefined || rec.state.is === "AwaitingHost";
    }
    const bound = boundHost(obj);
    const host = rec?.host ?? (bound ? liveHost(bound) : undefined);
    if (host) return inForce(host);
    // Bound to a host another server holds: that server's.
    if (bound && locator.host(bound)) return false;
    return options.leading();
  }

  return {
    holds,
    deliveredBy(obj, rec) {
      if (!obj) return "";
      const self = options.self();
      const kind = containerKind(obj.spec);
      const link = kind === "module" ? (rec?.host ?? liveHost(boundHost(obj))) : rec?.attached;
      if (link && !link.closed && (kind !== "module" || inForce(link))) return self;
      // This server's own record lingering after its session ended is no place to deliver to.
      const delivers = placementOf(obj, locator).delivers;
      return delivers === self ? "" : delivers;
    },
    closeReplaced() {
      for (const h of [...links.hosts()]) {
        if (inForce(h)) continue;
        const by = locator.host(h.name)?.server ?? "another server";
        links.lose(h, new ConnectError(`host "${h.name}" is held by server ${by}: its session there is the one in force`, Code.AlreadyExists));
      }
    },
  };
}
