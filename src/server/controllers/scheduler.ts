/**
 * The scheduler: binds containers that need a host to a live worker host that can run them,
 * least loaded first, with capacity respected; when none can, it says why, in words a user can
 * act on. A reconciler on the controller framework, keyed by container name: the container
 * controller queues a container when it becomes Unscheduled, and every waiting one when hosts
 * come, go or get room again. The choices themselves are pure functions.
 */
import type { EventRecorder } from "../event-recorder.js";
import type { WorkerLink } from "../messaging/worker-link.js";
import type { ContainerController } from "./container-controller.js";
import type { ContainerRecord } from "./container-record.js";
import { createController, type Controller, type ReconcileReport } from "./controller.js";

/** Host is what scheduling knows of a worker host. */
export type Host = Pick<WorkerLink, "name" | "role" | "closed" | "modules" | "capacity" | "canSpawn">;

/** Whether a host can run a container at all (ignoring its capacity). */
export function canRun(host: Host, c: Pick<ContainerRecord, "kind" | "spec">): boolean {
  if (host.closed || host.role !== "host") return false;
  if (c.kind === "module") return host.modules.has(c.spec.module);
  if (c.kind === "command") return host.canSpawn;
  return false;
}

/**
 * Picks the host for a container: among hosts that can run it and have room, the one with the
 * fewest bound containers (the first connected wins a tie). Undefined when none fits.
 */
export function pickHost<H extends Host>(c: Pick<ContainerRecord, "kind" | "spec">, hosts: Iterable<H>, load: (h: H) => number): H | undefined {
  let best: H | undefined;
  let bestLoad = Infinity;
  for (const h of hosts) {
    if (!canRun(h, c)) continue;
    const n = load(h);
    if (h.capacity > 0 && n >= h.capacity) continue;
    if (n < bestLoad) {
      best = h;
      bestLoad = n;
    }
  }
  return best;
}

/** Explains why no host can take a container right now. */
export function unschedulableReason<H extends Host>(c: Pick<ContainerRecord, "kind" | "spec" | "name">, hosts: Iterable<H>, load: (h: H) => number): string {
  if (c.kind === "external") return `waiting for a process to attach to external container "${c.name}"`;
  const live = [...hosts].filter((h) => !h.closed && h.role === "host");
  const what = c.kind === "module" ? `no worker host serves module "${c.spec.module}"` : "no worker host can spawn command containers";
  if (live.length === 0) return `${what}: none connected`;
  const able = live.filter((h) => canRun(h, c));
  if (able.length === 0) {
    const names = live.slice(0, 5).map((h) => (c.kind === "module" ? `${h.name} [${[...h.modules].join(", ")}]` : h.name));
    const more = live.length > 5 ? `, and ${live.length - 5} more` : "";
    return c.kind === "module"
      ? `${what}: connected hosts serve other modules (${names.join("; ")}${more})`
      : `${what}: none of the connected hosts may spawn processes (${names.join(", ")}${more})`;
  }
  const loads = able.slice(0, 5).map((h) => `${h.name} ${load(h)}/${h.capacity}`);
  return `every worker host that can run container "${c.name}" is at capacity (${loads.join(", ")})`;
}

/**
 * Binder is where a scheduler of a cluster binds: the hosts of every server with their load, and
 * a binding written to the store for the host's server to act on (instead of the lifecycle's own
 * bind to a host connected here).
 */
export interface Binder<H extends Host = Host> {
  /** The hosts to pick from, in a stable order; each call takes a fresh look at their load. */
  hosts(): H[];
  /** How many containers a host runs or was given, as of the last hosts(). */
  load(host: H): number;
  /** Whether a container is bound already (a binding on its way, or one in force): its host's server acts. */
  bound(name: string): boolean;
  /** Binds a container to a host (asynchronously: a failed write schedules it again). */
  bind(name: string, host: H): void;
  /** Calls listener when the hosts changed (one came, went or got room); returns what stops it. */
  onChange(listener: () => void): () => void;
}

/** SchedulerOptions are the scheduler's dependencies. */
export interface SchedulerOptions {
  containers: ContainerController;
  /** The live worker hosts, in connection order. */
  hosts: () => Iterable<WorkerLink>;
  /** In a cluster: binds through the store among the hosts of every server (default: hosts and the lifecycle's bind). */
  binder?: Binder;
  events?: EventRecorder;
  onError?: (message: string, err: unknown) => void;
  onReconcile?: (report: ReconcileReport) => void;
}

/** Creates the scheduler. */
export function createScheduler(options: SchedulerOptions): Controller {
  const { containers } = options;
  /** Containers waiting for a host, in arrival order (the queue dedupes, this remembers). */
  const waiting = new Set<string>();
  const binder: Binder = options.binder ?? localBinder(containers, options.hosts);
  const scheduler = createController({
    name: "scheduler",
    workers: 1,
    watches: [],
    onError: options.onError,
    onReconcile: options.onReconcile,
    reconcile(name) {
      const rec = containers.record(name);
      if (!rec || rec.state.is !== "Unscheduled" || rec.deleting || rec.kind === "external") {
        waiting.delete(name);
        return;
      }
      // Bound in the store and not started yet: its host's server acts (waiting, in case it never does).
      if (binder.bound(name)) return;
      const hosts = binder.hosts();
      const load = (h: Host) => binder.load(h);
      const host = pickHost(rec, hosts, load);
      if (!host) return containers.unschedulable(name, unschedulableReason(rec, hosts, load));
      waiting.delete(name);
      binder.bind(name, host);
    },
  });
  const retryWaiting = () => waiting.forEach((n) => scheduler.enqueue(n));
  // A stopped scheduler (its server no longer leads) is told of nothing more.
  const listening = [
    containers.onSchedulingNeeded((name) => {
      if (name !== undefined) {
        waiting.add(name);
        scheduler.enqueue(name);
      } else {
        retryWaiting();
      }
    }),
    binder.onChange(retryWaiting),
  ];
  return {
    ...scheduler,
    async stop() {
      for (const stopListening of listening) stopListening();
      await scheduler.stop();
    },
  };
}

/** The binder of a single server: its own hosts, their load as the lifecycle counts it, and the lifecycle's bind. */
function localBinder(containers: ContainerController, hosts: () => Iterable<WorkerLink>): Binder<WorkerLink> {
  return {
    hosts: () => [...hosts()],
    load: (h) => containers.load(h),
    bound: () => false,
    bind: (name, h) => containers.bind(name, h),
    onChange: () => () => {},
  };
}
