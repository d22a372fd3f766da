/**
 * How the leader's scheduler binds in a cluster: among the hosts of every server (their session
 * records, cluster-hosts.ts), loaded by the stored statuses of the containers bound to them, it
 * writes the binding into the store (the Container's status names the host, phase Pending),
 * through the leader's fenced store. The server holding that host's session sees the binding in
 * its informer and starts the container (container-controller.ts, `bindsFromStore`): no command
 * crosses a peer link.
 */
import { create } from "@bufbuild/protobuf";
import { ContainerStatusSchema, type Container } from "../../gen/k4s/v1/resources_pb.js";
import type { Informer } from "../controllers/informer.js";
import { storedBinding } from "../controllers/container-record.js";
import type { Binder } from "../controllers/scheduler.js";
import type { ResourceStore } from "../store/resource-store.js";
import { clusterHosts, hostLoads, type ClusterHost } from "./cluster-hosts.js";
import type { SessionLocator } from "./session-locator.js";

/** StoreBinderOptions are where the hosts, the stored statuses and the writes come from. */
export interface StoreBinderOptions {
  locator: Pick<SessionLocator, "host" | "hosts" | "onChange">;
  /** The server's informer over Containers. */
  informer: Pick<Informer, "get" | "list">;
  /** The leader's store (fenced by its election key). */
  resources: ResourceStore;
  /** A binding could not be written: the container needs scheduling again. */
  retry(name: string): void;
  onError(message: string, err?: unknown): void;
}

/** The status of a container bound to a host and not yet started there. */
export function bindingOf(current: Container, host: string) {
  const st = current.status ?? create(ContainerStatusSchema);
  st.phase = "Pending";
  st.ready = false;
  st.host = host;
  st.message = `scheduled to host "${host}"; waiting for its server to start it`;
  return st;
}

/** Creates the binder of a cluster's leader. */
export function createStoreBinder(options: StoreBinderOptions): Binder<ClusterHost> {
  const { locator, informer } = options;
  /** Bindings written (or being written) that the informer does not show yet: they count as load. */
  const pending = new Map<string, string>();
  let loads = new Map<string, number>();
  const shown = (name: string, host: string) => informer.get("Container", name)?.status?.host === host;

  function freshLoads(): Map<string, number> {
    const next = hostLoads(informer.list("Container"));
    for (const [name, host] of pending) {
      if (shown(name, host)) pending.delete(name);
      else next.set(host, (next.get(host) ?? 0) + 1);
    }
    return next;
  }

  return {
    hosts() {
      loads = freshLoads();
      return clusterHosts(locator.hosts());
    },
    load: (h) => loads.get(h.name) ?? 0,
    bound(name) {
      const host = pending.get(name);
      if (host !== undefined) return !shown(name, host) || locator.host(host) !== undefined;
      const bound = storedBinding(informer.get("Container", name));
      return bound !== "" && locator.host(bound) !== undefined;
    },
    bind(name, host) {
      const uid = informer.get("Container", name)?.metadata?.uid;
      pending.set(name, host.name);
      options.resources
        .updateStatus("Container", name, (current) => (current.metadata?.uid === uid && !current.metadata?.deletionTimestamp ? bindingOf(current, host.name) : undefined))
        .then(
          (stored) => {
            if (stored?.status?.host !== host.name) pending.delete(name);
          },
          (err: unknown) => {
            pending.delete(name);
            options.onError(`scheduler: binding container "${name}" to host "${host.name}" failed`, err);
            options.retry(name);
          },
        );
    },
    onChange: (listener) => locator.onChange(listener),
  };
}
