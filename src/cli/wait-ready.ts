/**
 * Waiting until applied objects are ready, for `apply --wait`: a watch over every kind that
 * prints progress as replicas come up and fails with a message naming what is not ready.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { K4sClient } from "../client/client.js";
import { kindOf, type AnyObject, type Kind } from "../api/kinds.js";
import type { Container, ReplicaSet, Service } from "../gen/k4s/v1/resources_pb.js";
import { formatDuration } from "./duration.js";
import { CliError } from "./errors.js";
import { kindRef } from "./format.js";
import { createProgress } from "./progress.js";

/** Readiness of one object: whether it is ready and, in words, how far it got. */
interface Readiness {
  ready: boolean;
  progress: string;
  /** How far it got in steps of `of` (a ReplicaSet: its ready replicas); else 0 or 1 of 1. */
  done?: number;
  of?: number;
  /** Set when the object can never become ready (a container failed for good). */
  failure?: string;
}

function containerReadiness(c: Container): Readiness {
  const phase = c.status?.phase || "Pending";
  const message = c.status?.message ? `: ${c.status.message}` : "";
  if (c.status?.ready || phase === "Succeeded") return { ready: true, progress: phase === "Succeeded" ? "Succeeded" : "ready" };
  if (phase === "Failed" && c.spec?.restartPolicy === "Never") {
    return { ready: false, progress: `Failed${message}`, failure: `failed${message}` };
  }
  return { ready: false, progress: `${phase}${message}` };
}

function replicaSetReadiness(rs: ReplicaSet): Readiness {
  const desired = rs.spec?.replicas ?? 1;
  const ready = rs.status?.readyReplicas ?? 0;
  const current = rs.status?.replicas ?? 0;
  const progress = current > desired ? `${current} replicas, scaling down to ${desired}` : `${ready} of ${desired} replicas ready`;
  return { ready: ready >= desired && current === desired, progress, done: Math.min(ready, desired), of: desired };
}

function serviceReadiness(s: Service): Readiness {
  const n = s.status?.endpoints.length ?? 0;
  return { ready: n > 0, progress: n === 0 ? "no ready endpoints" : `${n} endpoint${n === 1 ? "" : "s"}` };
}

/** Tells whether an object is ready: a ready or Succeeded Container, a full ReplicaSet, a Service with an endpoint. */
export function readiness(obj: AnyObject): Readiness {
  switch (obj.$typeName) {
    case "k4s.v1.Container":
      return containerReadiness(obj);
    case "k4s.v1.ReplicaSet":
      return replicaSetReadiness(obj);
    case "k4s.v1.Service":
      return serviceReadiness(obj);
  }
}

/**
 * Watches until every named object is ready, printing a line as each becomes ready and showing
 * progress meanwhile: a bar on a terminal (stderr), else a line whenever one's progress changes.
 * Throws a CliError naming the objects still not ready when timeoutMs passes.
 */
export async function waitReady(
  client: K4sClient,
  objects: readonly { kind: Kind; name: string }[],
  options: { timeoutMs: number; print: (line: string) => void },
): Promise<void> {
  const pending = new Map<string, string>(objects.map((o) => [kindRef(o.kind, o.name), "not found yet"]));
  if (pending.size === 0) return;
  const bar = createProgress(options.print);
  /** Steps done and to do per object, for the bar: a ReplicaSet counts its replicas. */
  const steps = new Map<string, { done: number; of: number }>([...pending.keys()].map((ref) => [ref, { done: 0, of: 1 }]));
  const report = (ref: string, r: Readiness) => {
    steps.set(ref, { done: r.ready ? (r.of ?? 1) : (r.done ?? 0), of: r.of ?? 1 });
    let done = 0;
    let of = 0;
    for (const s of steps.values()) {
      done += s.done;
      of += s.of;
    }
    return { done, of };
  };
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, options.timeoutMs);
  try {
    for await (const ev of client.watch({ signal: controller.signal })) {
      const ref = kindRef(kindOf(ev.object), ev.object.metadata?.name ?? "");
      if (!pending.has(ref)) continue;
      if (ev.type === "DELETED") {
        pending.set(ref, "deleted");
        continue;
      }
      const r = readiness(ev.object);
      if (r.failure) throw new CliError(`${ref} ${r.failure}`);
      const { done, of } = report(ref, r);
      if (r.ready) {
        pending.delete(ref);
        bar.end();
        options.print(`${ref} ${r.progress === "ready" || r.progress === "Succeeded" ? r.progress : `ready (${r.progress})`}`);
        if (pending.size === 0) return;
        continue;
      }
      if (pending.get(ref) !== r.progress) {
        pending.set(ref, r.progress);
        bar.update(done, of, `waiting for ${ref}: ${r.progress}`);
      }
    }
  } catch (err) {
    if (!(timedOut && err instanceof ConnectError && err.code === Code.Canceled)) throw err;
  } finally {
    clearTimeout(timer);
    controller.abort();
    bar.end();
  }
  const what = [...pending].map(([ref, progress]) => `${ref} (${progress})`).join(", ");
  if (!timedOut) throw new CliError(`the server ended the watch while waiting for ${what}`);
  throw new CliError(`timed out after ${formatDuration(options.timeoutMs)} waiting for ${what}`);
}
