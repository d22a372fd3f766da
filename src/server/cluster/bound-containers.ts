/**
 * The containers bound to each host by their stored status, kept in step with an informer: what
 * a change of one host's session record touches (which server holds them, where their messages
 * go), so that such a change looks at those containers only, not at every stored one.
 */
import { kindOf } from "../../api/kinds.js";
import type { Container } from "../../gen/k4s/v1/resources_pb.js";
import type { Informer } from "../controllers/informer.js";
import { boundHost } from "./container-placement.js";

/** BoundContainers says which containers are bound to a host now. */
export interface BoundContainers {
  /** The names of the containers bound to a host (by its name). */
  on(host: string): ReadonlySet<string>;
}

const NONE: ReadonlySet<string> = new Set();

/** Creates the index over an informer of Containers (fed from its events, the listing included). */
export function createBoundContainers(informer: Pick<Informer, "subscribe">): BoundContainers {
  const hostOf = new Map<string, string>();
  const byHost = new Map<string, Set<string>>();
  const unbind = (name: string) => {
    const host = hostOf.get(name);
    if (host === undefined) return;
    hostOf.delete(name);
    const names = byHost.get(host)!;
    names.delete(name);
    if (names.size === 0) byHost.delete(host);
  };
  informer.subscribe((e) => {
    if (kindOf(e.object) !== "Container") return;
    const name = e.object.metadata?.name ?? "";
    const host = e.type === "DELETED" ? "" : boundHost(e.object as Container);
    if (hostOf.get(name) === host || (host === "" && !hostOf.has(name))) return;
    unbind(name);
    if (host === "") return;
    hostOf.set(name, host);
    byHost.set(host, (byHost.get(host) ?? new Set()).add(name));
  });
  return { on: (host) => byHost.get(host) ?? NONE };
}
