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
  /** A binding was not written (refused, or skipped over a status that changed): the container needs scheduling again. */
  retry(name: string): void;
  onError(message: string, err?: unknown): void;
  /**
   * The restarts the leader's lifecycle counts for a container (one moved off a host gone for
   * good counts one more than its stored status may show yet): the binding carries at least that.
   */
  restartsOf?(name: string): number;
}

/** The status of a container bound to a host and not yet started there (with at least `restarts`). */
export function bindingOf(current: Container, host: string, restarts = 0) {
  const st = current.status ?? create(ContainerStatusSchema);
  st.restarts = Math.max(st.restarts, restarts);
  st.phase = "Pending";
  st.ready = false;
  st.host = host;
  st.message = `scheduled to host "${host}"; waiting for its server to start it`;
  return st;
}

/** A binding written (or being written) that the informer may not show yet. */
interface OnItsWay {
  host: string;
  /** The container it was written for: one re-created under the same name is another container. */
  uid: string;
}

/** Creates the binder of a cluster's leader. */
export function createStoreBinder(options: StoreBinderOptions): Binder<ClusterHost> {
  const { locator, informer } = options;
  /** Bindings on their way, by container name: they count as load until the informer shows them. */
  const pending = new Map<string, OnItsWay>();
  let loads = new Map<string, number>();

  /**
   * The binding on its way of a container, forgotten (at any look, not only a scheduling pass)
   * once the informer shows it stored, or shows the container gone or re-created under its name.
   */
  function onItsWay(name: string): OnItsWay | undefined {
    const p = pending.get(name);
    if (!p) return undefined;
    const cur = informer.get("Container", name);
    if (cur?.metadata?.uid === p.uid && cur.status?.host !== p.host) return p;
    pending.delete(name);
    return undefined;
  }

  function freshLoads(): Map<string, number> {
    const next = hostLoads(informer.list("Container"));
    for (const name of [...pending.keys()]) {
      const p = onItsWay(name);
      if (p) next.set(p.host, (next.get(p.host) ?? 0) + 1);
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
      // On its way or stored, a binding is in force only while a server holds its host: one
      // whose host went (even before the binding was stored) is scheduled again.
      const host = onItsWay(name)?.host ?? storedBinding(informer.get("Container", name));
      return host !== "" && locator.host(host) !== undefined;
    },
    bind(name, host) {
      const seen = informer.get("Container", name);
      const uid = seen?.metadata?.uid ?? "";
      const mine: OnItsWay = { host: host.name, uid };
      pending.set(name, mine);
      const forget = () => pending.get(name) === mine && pending.delete(name);
      // Only over the status the scheduler decided on: one that changed meanwhile (its host's
      // server started it, or it was bound already) is not written over.
      const unchanged = (current: Container) =>
        current.metadata?.uid === uid && !current.metadata?.deletionTimestamp && (current.status?.host ?? "") === (seen?.status?.host ?? "") && (current.status?.phase ?? "") === (seen?.status?.phase ?? "");
      options.resources
        .updateStatus("Container", name, (current) => (unchanged(current) ? bindingOf(current, host.name, options.restartsOf?.(name)) : undefined))
        .then(
          (stored) => {
            if (stored?.status?.host === host.name) return;
            // Not written (the status changed meanwhile, or the container went): the scheduler
            // looks at it again, on the status as it is now, rather than forgetting it.
            forget();
            options.retry(name);
          },
          (err: unknown) => {
            forget();
            options.onError(`scheduler: binding container "${name}" to host "${host.name}" failed`, err);
            options.retry(name);
          },
        );
    },
    onChange: (listener) => locator.onChange(listener),
  };
}
