/**
 * The scheduler's choices, as pure functions: which live worker host can run a container
 * (least loaded first, capacity respected), and, when none can, why, in words a user can act on.
 */
import type { ContainerRecord } from "../messaging/container-record.js";
import type { WorkerLink } from "../messaging/worker-link.js";

/** Whether a host can run a container at all (ignoring its capacity). */
export function canRun(host: WorkerLink, c: ContainerRecord): boolean {
  if (host.closed || host.role !== "host") return false;
  if (c.kind === "module") return host.modules.has(c.spec.module);
  if (c.kind === "command") return host.canSpawn;
  return false;
}

/**
 * Picks the host for a container: among hosts that can run it and have room, the one with the
 * fewest bound containers (the first connected wins a tie). Undefined when none fits.
 */
export function pickHost(c: ContainerRecord, hosts: Iterable<WorkerLink>): WorkerLink | undefined {
  let best: WorkerLink | undefined;
  for (const h of hosts) {
    if (!canRun(h, c) || !h.hasRoom()) continue;
    if (!best || h.bound.size < best.bound.size) best = h;
  }
  return best;
}

/** Explains why no host can take a container right now. */
export function unschedulableReason(c: ContainerRecord, hosts: Iterable<WorkerLink>): string {
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
  const load = able.slice(0, 5).map((h) => `${h.name} ${h.bound.size}/${h.capacity}`);
  return `every worker host that can run container "${c.name}" is at capacity (${load.join(", ")})`;
}
