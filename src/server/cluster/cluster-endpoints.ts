/**
 * The endpoints of every Service across a cluster: each ready container its selector picks (or
 * its published status.endpoints name), by the statuses the servers holding them wrote, wherever
 * they run. The cluster router picks among them, local and remote alike. Computed again only
 * after the informer saw a Container or a Service change.
 */
import { kindOf } from "../../api/kinds.js";
import type { Container } from "../../gen/k4s/v1/resources_pb.js";
import type { Informer } from "../controllers/informer.js";
import { ServiceRoute } from "../messaging/service-route.js";

/** ClusterEndpoints says which containers serve each Service now. */
export interface ClusterEndpoints {
  /** The ready endpoints of a service, sorted by name (undefined: no such Service is stored). */
  of(service: string): readonly string[] | undefined;
}

/** Creates the endpoints over an informer of Containers and Services. */
export function createClusterEndpoints(informer: Pick<Informer, "get" | "list" | "subscribe">): ClusterEndpoints {
  const known = new Map<string, readonly string[]>();
  informer.subscribe((e) => {
    const kind = kindOf(e.object);
    if (kind === "Container" || kind === "Service") known.clear();
  });
  return {
    of(service) {
      const cached = known.get(service);
      if (cached) return cached;
      const obj = informer.get("Service", service);
      if (!obj?.metadata) return undefined;
      const route = new ServiceRoute(service, obj.metadata.uid, obj);
      const ready: string[] = [];
      for (const c of informer.list("Container")) if (readyEndpoint(c) && route.routesTo(endpointOf(c))) ready.push(c.metadata!.name);
      ready.sort();
      known.set(service, ready);
      return ready;
    },
  };
}

/** Whether a stored container takes deliveries now, by its status. */
function readyEndpoint(c: Container): boolean {
  return !!c.metadata && !c.metadata.deletionTimestamp && c.status?.ready === true;
}

/** What a selector looks at of a container. */
function endpointOf(c: Container) {
  return { name: c.metadata!.name, labels: c.metadata!.labels };
}
