/**
 * The Service controller: keeps status.endpoints, the ready containers a service routes to.
 *
 * A container is an endpoint of a service when the service's selector (a glob over names)
 * and matchLabels both pick it, it reports status.ready, and it is not being deleted. A
 * container event requeues exactly the services whose endpoint set it can change, so a
 * readiness change reaches the router within milliseconds.
 */
import { create } from "@bufbuild/protobuf";
import type { AnyObject } from "../../api/kinds.js";
import { matchesSelector } from "../../api/selector.js";
import { ServiceSpecSchema, ServiceStatusSchema, type Container, type Service } from "../../gen/k4s/v1/resources_pb.js";
import type { ObjectEvent } from "../store/resource-store.js";
import { createController, keysOnSpecChange, type Controller, type ObjectCache, type StoredKindControllerOptions } from "./controller.js";

/** ServiceControllerOptions are the controller's dependencies. */
export type ServiceControllerOptions = StoredKindControllerOptions;

/** Creates the Service controller. */
export function createServiceController(options: ServiceControllerOptions): Controller {
  const { resources } = options;
  return createController({
    ...options,
    name: "service",
    watches: [
      { kind: "Service", keys: keysOnSpecChange(ServiceSpecSchema) },
      { kind: "Container", keys: containerKeys },
    ],
    async reconcile(name) {
      const service = await resources.get("Service", name);
      if (!service) return;
      const selector = selectorOf(service);
      const selected = selector ? (await resources.list("Container", selector)).items : [];
      const endpoints = selected.filter((c) => isEndpointOf(service, c)).map((c) => c.metadata!.name);
      endpoints.sort();
      const uid = service.metadata?.uid;
      const generation = service.metadata!.generation;
      await resources.updateStatus("Service", name, (current) => {
        // A service re-created meanwhile is someone else's to reconcile (its event queued it).
        if (current.metadata?.uid !== uid) return undefined;
        const status = current.status;
        if (status && status.observedGeneration === generation && sameList(status.endpoints, endpoints)) return undefined;
        return create(ServiceStatusSchema, { endpoints, observedGeneration: generation });
      });
    },
  });
}

/** The services whose endpoints a container event may change. */
function containerKeys(event: ObjectEvent, cache: ObjectCache): string[] {
  const keys: string[] = [];
  for (const service of cache.list("Service")) {
    const before = event.type !== "ADDED" && event.previous !== undefined && isEndpointOf(service, event.previous);
    const after = event.type !== "DELETED" && isEndpointOf(service, event.object);
    if (before !== after) keys.push(service.metadata!.name);
  }
  return keys;
}

/** The selector of a service, or undefined when it selects nothing (neither glob nor labels). */
function selectorOf(service: Service): { nameGlob?: string; labels?: Record<string, string> } | undefined {
  const glob = service.spec?.selector ?? "";
  const labels = service.spec?.matchLabels ?? {};
  if (!glob && Object.keys(labels).length === 0) return undefined;
  return { nameGlob: glob || undefined, labels };
}

/** Tells whether a container is a ready, selected endpoint of a service. */
function isEndpointOf(service: Service, obj: AnyObject): boolean {
  const container = obj as Container;
  if (!container.status?.ready || container.metadata?.deletionTimestamp) return false;
  const selector = selectorOf(service);
  return selector !== undefined && matchesSelector(container, selector);
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
