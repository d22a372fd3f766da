/**
 * The container lifecycle: binds Containers to worker hosts (the scheduler), follows what hosts
 * and attached processes report (phases Pending → Running → Succeeded/Failed, Terminating),
 * applies the restart policy with back-off, restarts on spec changes, stops and finalizes
 * deleted containers, reschedules the containers of lost hosts, and writes status and events.
 *
 * Restart back-off: 200 ms after the first exit, doubling on every exit without a healthy run,
 * capped at 30 s; a run of 30 s or more counts as healthy and resets it. k4s reacts in
 * milliseconds, so the numbers are those of Kubernetes' CrashLoopBackOff scaled down 50x.
 */
import { create, equals } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import { ContainerStatusSchema, type Container, type ContainerStatus } from "../../gen/k4s/v1/resources_pb.js";
import type { Attach, ContainerState, RunningContainer } from "../../gen/k4s/v1/worker_service_pb.js";
import type { EventRecorder } from "../event-recorder.js";
import type { LogStore } from "../log-store.js";
import type { ResourceStore } from "../store/resource-store.js";
import { ContainerRecord } from "./container-record.js";
import { assignFrame, stopFrame } from "./frames.js";
import type { Router } from "./router.js";
import { pickHost, unschedulableReason } from "../controllers/scheduler.js";
import type { WorkerLink } from "./worker-link.js";

/** First restart delay after an exit (ms). */
export const BACKOFF_INITIAL_MS = 200;
/** Longest restart delay (ms). */
export const BACKOFF_MAX_MS = 30_000;
/** A run this long (ms) resets the back-off. */
export const BACKOFF_RESET_AFTER_MS = 30_000;
/** Extra wait beyond a Stop's grace before a stopping container is given up on (ms). */
export const STOP_SLACK_MS = 1000;

/** Returns the restart delay after `failures` consecutive exits without a healthy run (0-based). */
export function backoffDelay(failures: number): number {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * 2 ** Math.min(failures, 20));
}

/** ContainerLifecycleOptions are the lifecycle's dependencies. */
export interface ContainerLifecycleOptions {
  resources: ResourceStore;
  events: EventRecorder;
  logs: LogStore;
  router: Router;
  /** The live host sessions. */
  hosts: () => Iterable<WorkerLink>;
  /** Ends a session from the server side with an error status. */
  closeSession: (s: WorkerLink, err: ConnectError) => void;
  onError: (message: string, err?: unknown) => void;
  /**
   * How long, after the plane starts, a container its stored status shows Running on a host
   * waits for that host to reconnect and resume it (ms).
   */
  resumeGraceMs: number;
}

/** ContainerLifecycle reacts to stored Containers and to what sessions report. */
export interface ContainerLifecycle {
  /** A Container was added or modified in the store. */
  ingest(obj: Container): void;
  /** A Container was deleted from the store. */
  remove(obj: Container): void;
  /** A host said hello; `running` lists what it still runs from before a reconnect. */
  hostJoined(host: WorkerLink, running: readonly RunningContainer[]): void;
  /** A host reconnected on a new session before its old one was declared lost: move its containers over. */
  hostReplaced(old: WorkerLink, next: WorkerLink): void;
  /** A host reported a container's state. */
  stateReported(host: WorkerLink, state: ContainerState): void;
  /** Validates an Attach; resolves to the container or rejects with the reason. */
  checkAttach(attach: Attach): Promise<ContainerRecord>;
  /** An attached session was registered for a container. */
  attached(session: WorkerLink, c: ContainerRecord, processName: string): void;
  /** A session ended (host or attached). */
  sessionLost(session: WorkerLink): void;
  /** A container has no unsettled delivery left. */
  idle(c: ContainerRecord): void;
  /** Looks a container up in the store when the plane did not see it yet. */
  fetch(name: string): Promise<ContainerRecord | undefined>;
  stop(): Promise<void>;
}

/** Creates the container lifecycle. */
export function createContainerLifecycle(options: ContainerLifecycleOptions): ContainerLifecycle {
  const { resources, events, router, onError } = options;
  const containers = router.containers;
  /** Containers waiting for a host, in arrival order. */
  const pending = new Set<ContainerRecord>();
  const writes = new Set<Promise<void>>();
  let scheduled = false;
  let stopped = false;
  let resumeTimer: NodeJS.Timeout | undefined;

  const record = (c: ContainerRecord, reason: string, message: string, type: "Normal" | "Warning" = "Normal") =>
    events.record({ type, reason, kind: "Container", name: c.name, message });

  function buildStatus(c: ContainerRecord, current: Container): ContainerStatus {
    return create(ContainerStatusSchema, {
      phase: current.metadata?.deletionTimestamp ? "Terminating" : c.phase,
      ready: c.ready,
      restarts: c.restarts,
      host: c.hostName,
      startedAt: c.startedAt,
      message: c.message,
      observedGeneration: c.observedGeneration,
      exitCode: c.exitCode,
    });
  }

  /** Writes the container's status, coalescing changes made while a write is on its way. */
  function writeStatus(c: ContainerRecord) {
    if (stopped) return;
    c.statusDirty = true;
    if (c.statusWriting) return;
    c.statusWriting = true;
    const run = async () => {
      try {
        while (c.statusDirty && !stopped) {
          // Let the rest of this tick's changes land first: one write for all of them.
          await new Promise((r) => setImmediate(r));
          c.statusDirty = false;
          await resources.updateStatus("Container", c.name, (cur) => {
            if (cur.metadata?.uid !== c.uid) return undefined;
            const next = buildStatus(c, cur);
            return cur.status && equals(ContainerStatusSchema, cur.status, next) ? undefined : next;
          });
        }
      } catch (err) {
        if (!stopped) onError(`writing the status of container "${c.name}" failed`, err);
      } finally {
        c.statusWriting = false;
      }
    };
    const p = run();
    writes.add(p);
    void p.then(() => writes.delete(p));
  }

  /** Recomputes readiness (telling the router when it changed), delivers, and writes status. */
  function refresh(c: ContainerRecord) {
    const ready = c.computeReady();
    if (ready !== c.ready) {
      c.ready = ready;
      router.topologyChanged();
    }
    if (ready) router.pump(c);
    writeStatus(c);
  }

  function scheduleSoon() {
    if (scheduled || stopped) return;
    scheduled = true;
    setImmediate(runSchedule);
  }

  function runSchedule() {
    scheduled = false;
    if (stopped) return;
    const hosts = [...options.hosts()];
    const now = Date.now();
    let nextResume = Infinity;
    for (const c of pending) {
      if (c.deleting || c.terminal || c.host || c.backoffTimer || c.kind === "external") {
        pending.delete(c);
        continue;
      }
      if (c.awaitUntil > now) {
        nextResume = Math.min(nextResume, c.awaitUntil);
        continue;
      }
      const h = pickHost(c, hosts);
      if (!h) {
        const why = unschedulableReason(c, hosts);
        if (why !== c.message || c.phase !== "Pending") {
          c.phase = "Pending";
          c.message = why;
          c.hostName = "";
          record(c, "FailedScheduling", why, "Warning");
          refresh(c);
        }
        continue;
      }
      pending.delete(c);
      bind(c, h);
    }
    if (nextResume < Infinity && !resumeTimer) {
      resumeTimer = setTimeout(() => {
        resumeTimer = undefined;
        scheduleSoon();
      }, nextResume - now + 1);
    }
  }

  function needHost(c: ContainerRecord) {
    if (c.kind === "external") {
      if (!c.attached) {
        c.phase = "Pending";
        c.message = unschedulableReason(c, []);
        c.hostName = "";
      }
      return;
    }
    pending.add(c);
    scheduleSoon();
  }

  function bind(c: ContainerRecord, h: WorkerLink) {
    c.awaitUntil = 0;
    c.host = h;
    h.bound.add(c);
    c.started = false;
    c.stopping = false;
    c.token = c.kind === "command" ? randomBytes(16).toString("hex") : "";
    c.assignedGeneration = c.generation;
    c.hostName = h.name;
    c.phase = "Pending";
    c.message = `starting on host "${h.name}"`;
    record(c, "Scheduled", `assigned to host "${h.name}"`);
    h.push(assignFrame(c.name, c.uid, c.spec, c.token, c.restarts));
    refresh(c);
  }

  function unbind(c: ContainerRecord) {
    if (c.host) {
      c.host.bound.delete(c);
      c.host = undefined;
      scheduleSoon();
    }
    c.started = false;
    c.runningSince = 0;
    if (c.stopTimer) {
      clearTimeout(c.stopTimer);
      c.stopTimer = undefined;
    }
  }

  function closeAttached(c: ContainerRecord, why: string, code: Code = Code.Unavailable) {
    const s = c.attached;
    if (!s) return;
    c.attached = undefined;
    s.attached = undefined;
    router.release(c, `lost its attached process "${s.name}"`);
    options.closeSession(s, new ConnectError(why, code));
  }

  function finalize(c: ContainerRecord) {
    if (c.finalized || stopped) return;
    c.finalized = true;
    resources.finalize(c.name).catch((err: unknown) => {
      c.finalized = false;
      if (!stopped) onError(`finalizing container "${c.name}" failed`, err);
    });
  }

  function stopOnHost(c: ContainerRecord, reason: string) {
    const h = c.host;
    if (!h || c.stopping) return;
    c.stopping = true;
    const grace = c.graceMs();
    record(c, "Killing", `stopping on host "${h.name}" (${reason}), grace ${grace} ms`);
    h.push(stopFrame(c.name, c.uid, grace));
    c.stopTimer = setTimeout(() => {
      c.stopTimer = undefined;
      if (c.host === h && c.stopping) {
        record(c, "Killing", `host "${h.name}" did not report the container stopped within ${grace + STOP_SLACK_MS} ms`, "Warning");
        stoppedOnHost(c);
      }
    }, grace + STOP_SLACK_MS);
    refresh(c);
  }

  /** The host stopped a container we asked it to stop (or its grace passed). */
  function stoppedOnHost(c: ContainerRecord) {
    unbind(c);
    c.stopping = false;
    router.release(c, "was stopped");
    if (c.kind === "command") closeAttached(c, `container "${c.name}" was stopped`);
    if (c.deleting) {
      finalize(c);
      refresh(c);
      return;
    }
    c.respec = false;
    if (c.terminal) c.terminal = false;
    needHost(c);
    refresh(c);
  }

  function exited(c: ContainerRecord, phase: string, message: string, exitCode: number) {
    const hostName = c.host?.name ?? "";
    const ranFor = c.runningSince ? Date.now() - c.runningSince : 0;
    unbind(c);
    router.release(c, phase === "Failed" ? "failed" : "ended");
    if (c.kind === "command") closeAttached(c, `container "${c.name}" exited`);
    c.exitCode = exitCode;
    if (phase === "Stopped") {
      // The host gave the container up on its own (e.g. it is shutting down): run it elsewhere.
      c.restarts++;
      c.phase = "Pending";
      c.message = `stopped by host "${hostName}"${message ? `: ${message}` : ""}; rescheduling`;
      needHost(c);
      refresh(c);
      return;
    }
    if (phase === "Failed") record(c, "Failed", `failed on host "${hostName}": ${message || `exit code ${exitCode}`}`, "Warning");
    else record(c, "Completed", `completed on host "${hostName}"`);
    const policy = c.spec.restartPolicy || "Always";
    const restart = policy === "Never" ? false : policy === "OnFailure" ? phase === "Failed" : true;
    if (!restart) {
      c.terminal = true;
      c.phase = phase;
      c.message = message || (phase === "Succeeded" ? "completed" : `exit code ${exitCode}`);
      router.failQueuedRequests(c, Code.Unavailable, `container "${c.name}" has ended (${phase}) and takes no more requests`);
      router.reroute(c, true);
      refresh(c);
      return;
    }
    if (ranFor >= BACKOFF_RESET_AFTER_MS) c.failures = 0;
    const delay = backoffDelay(c.failures);
    c.failures++;
    c.phase = "Pending";
    c.message = `back-off ${delay} ms before restarting: ${phase === "Failed" ? `failed: ${message || `exit code ${exitCode}`}` : "completed"}`;
    record(c, "BackOff", `back-off ${delay} ms before restart ${c.restarts + 1}`, "Warning");
    router.reroute(c, false);
    c.backoffTimer = setTimeout(() => {
      c.backoffTimer = undefined;
      if (stopped || c.deleting || containers.get(c.name) !== c || c.host) return;
      c.restarts++;
      needHost(c);
    }, delay);
    refresh(c);
  }

  function hostLost(c: ContainerRecord, h: WorkerLink) {
    unbind(c);
    router.release(c, `lost its host "${h.name}"`);
    if (c.kind === "command") closeAttached(c, `container "${c.name}" lost its host "${h.name}"`);
    const wasStopping = c.stopping;
    c.stopping = false;
    c.respec = false;
    if (c.deleting) {
      finalize(c);
      refresh(c);
      return;
    }
    record(c, "HostLost", `host "${h.name}" was lost; rescheduling`, "Warning");
    if (!wasStopping) c.restarts++;
    c.phase = "Pending";
    c.message = `host "${h.name}" was lost; rescheduling`;
    c.hostName = "";
    router.reroute(c, false);
    needHost(c);
    refresh(c);
  }

  function beginDelete(c: ContainerRecord) {
    c.deleting = true;
    c.phase = "Terminating";
    pending.delete(c);
    if (c.backoffTimer) {
      clearTimeout(c.backoffTimer);
      c.backoffTimer = undefined;
    }
    router.reroute(c, true);
    router.failQueuedRequests(c, Code.Unavailable, `container "${c.name}" is being deleted`);
    if (c.host) {
      if (c.stopping) c.respec = false;
      else stopOnHost(c, "deleted");
    } else if (c.attached) {
      if (c.inflight.size === 0) {
        closeAttached(c, `container "${c.name}" was deleted`, Code.NotFound);
        finalize(c);
      } else {
        const grace = c.graceMs();
        record(c, "Killing", `waiting up to ${grace} ms for in-flight messages before detaching "${c.attached.name}"`);
        c.stopTimer = setTimeout(() => {
          c.stopTimer = undefined;
          closeAttached(c, `container "${c.name}" was deleted`, Code.NotFound);
          finalize(c);
        }, grace);
      }
    } else {
      finalize(c);
    }
    refresh(c);
  }

  function respecced(c: ContainerRecord) {
    if (c.deleting) return;
    if (c.host) {
      c.respec = true;
      stopOnHost(c, "spec changed");
      return;
    }
    if (c.attached && c.kind !== "external" && c.kind !== "command") {
      closeAttached(c, `container "${c.name}" is no longer external`, Code.FailedPrecondition);
    }
    c.terminal = false;
    c.failures = 0;
    if (c.backoffTimer) {
      clearTimeout(c.backoffTimer);
      c.backoffTimer = undefined;
    }
    if (c.kind === "external") c.observedGeneration = c.generation;
    needHost(c);
    refresh(c);
  }

  function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
    const ka = Object.keys(a);
    if (ka.length !== Object.keys(b).length) return false;
    for (const k of ka) if (a[k] !== b[k]) return false;
    return true;
  }

  function ingest(obj: Container): ContainerRecord | undefined {
    const meta = obj.metadata;
    if (!meta || !obj.spec) return undefined;
    let c = containers.get(meta.name);
    if (c && c.uid !== meta.uid) {
      remove(obj, c);
      c = undefined;
    }
    if (!c) {
      c = new ContainerRecord(meta.name, meta.uid, obj);
      const st = obj.status;
      if (st) {
        c.restarts = st.restarts;
        c.startedAt = st.startedAt;
        c.exitCode = st.exitCode;
        c.observedGeneration = st.observedGeneration;
      }
      containers.set(c.name, c);
      router.topologyChanged();
      if (meta.deletionTimestamp) {
        beginDelete(c);
        return c;
      }
      const policy = c.spec.restartPolicy || "Always";
      const endedForGood =
        (st?.phase === "Succeeded" && (policy === "Never" || policy === "OnFailure")) || (st?.phase === "Failed" && policy === "Never");
      if (endedForGood) {
        // Ended before a server restart: stays ended, as it was reported.
        c.terminal = true;
        c.phase = st!.phase;
        c.message = st!.message;
        c.hostName = st!.host;
        return c;
      }
      if (c.kind === "external") c.observedGeneration = c.generation;
      if (st?.phase === "Running" && st.host !== "" && c.kind !== "external" && options.resumeGraceMs > 0) {
        // Running before a server restart: its host may still run it and is about to reconnect.
        c.awaitHost = st.host;
        c.awaitUntil = Date.now() + options.resumeGraceMs;
        c.message = `waiting up to ${options.resumeGraceMs} ms for host "${st.host}" to reconnect and resume it`;
      }
      needHost(c);
      writeStatus(c);
      return c;
    }
    const labelsChanged = !sameLabels(c.labels, meta.labels);
    const generationChanged = meta.generation !== c.generation;
    if (labelsChanged || generationChanged) {
      c.applySpec(obj);
      if (labelsChanged) router.topologyChanged();
      if (generationChanged) respecced(c);
    }
    if (meta.deletionTimestamp && !c.deleting) beginDelete(c);
    if (c.ready) router.pump(c);
    return c;
  }

  function remove(obj: Container, known?: ContainerRecord) {
    const c = known ?? containers.get(obj.metadata?.name ?? "");
    if (!c || (!known && c.uid !== obj.metadata?.uid)) return;
    pending.delete(c);
    if (c.backoffTimer) clearTimeout(c.backoffTimer);
    c.backoffTimer = undefined;
    if (c.host) {
      // Removed while its host still runs it (grace passed, or deleted before it was bound in
      // the store): tell the host to stop it now.
      c.host.push(stopFrame(c.name, c.uid, 0));
      unbind(c);
    }
    if (c.stopTimer) clearTimeout(c.stopTimer);
    c.stopTimer = undefined;
    c.deleting = true;
    c.ready = false;
    closeAttached(c, `container "${c.name}" was deleted`, Code.NotFound);
    router.dropContainer(c);
    options.logs.drop(c.name);
  }

  return {
    ingest(obj) {
      ingest(obj);
    },
    remove(obj) {
      remove(obj);
    },
    hostJoined(h, running) {
      for (const r of running) {
        const c = containers.get(r.name);
        if (c && c.uid === r.uid && !c.host && !c.deleting && !c.terminal && !c.backoffTimer && c.kind !== "external") {
          // A reconnecting host still runs it: resume instead of restarting.
          pending.delete(c);
          c.awaitUntil = 0;
          c.host = h;
          h.bound.add(c);
          c.started = true;
          c.stopping = false;
          c.hostName = h.name;
          c.phase = "Running";
          c.runningSince = Date.now();
          c.assignedGeneration = c.generation;
          c.observedGeneration = c.generation;
          c.message = c.kind === "command" && !c.attached ? "process resumed; waiting for it to attach" : "";
          record(c, "Resumed", `host "${h.name}" still runs it`);
          refresh(c);
        } else if (!c || c.host !== h) {
          h.push(stopFrame(r.name, r.uid, 0));
        }
      }
      for (const c of pending) {
        // Its old host is back and did not list it: no reason to wait any longer.
        if (c.awaitUntil > 0 && c.awaitHost === h.name) c.awaitUntil = 0;
      }
      if (h.bound.size > 0) {
        const still = new Set(running.map((r) => r.name));
        for (const c of [...h.bound]) if (!still.has(c.name)) hostLost(c, h);
      }
      scheduleSoon();
    },
    hostReplaced(old, next) {
      for (const c of [...old.bound]) {
        old.bound.delete(c);
        // Deliveries sent on the old stream are gone with it.
        router.release(c, `lost its host session ${old.id}`);
        c.host = next;
        next.bound.add(c);
        c.hostName = next.name;
        refresh(c);
      }
    },
    stateReported(h, st) {
      const c = containers.get(st.container);
      if (!c || c.host !== h || (st.uid !== "" && st.uid !== c.uid)) return;
      switch (st.phase) {
        case "Running":
          if (c.started || c.stopping) return;
          c.started = true;
          c.phase = "Running";
          c.startedAt = timestampNow();
          c.runningSince = Date.now();
          c.observedGeneration = c.assignedGeneration;
          c.exitCode = 0;
          c.message = c.kind === "command" && !c.attached ? "process started; waiting for it to attach" : "";
          record(c, "Started", `started on host "${h.name}"`);
          refresh(c);
          return;
        case "Stopped":
        case "Succeeded":
        case "Failed":
          if (c.stopping) stoppedOnHost(c);
          else exited(c, st.phase, st.message, st.exitCode);
          return;
        default:
          return;
      }
    },
    async checkAttach(a) {
      const c = containers.get(a.container) ?? (await this.fetch(a.container));
      if (!c) throw new ConnectError(`attach: no container named "${a.container}"`, Code.NotFound);
      if (c.deleting) throw new ConnectError(`attach: container "${c.name}" is being deleted`, Code.FailedPrecondition);
      if (c.kind === "module") {
        throw new ConnectError(
          `attach: container "${c.name}" runs function "${c.spec.function}" of module "${c.spec.module}" in a worker host; only command and external containers take an attached process`,
          Code.FailedPrecondition,
        );
      }
      if (c.kind === "command" && (c.token === "" || a.token !== c.token)) {
        throw new ConnectError(
          `attach: wrong token for container "${c.name}": a command container is attached by the process its host spawned, with the token of its Assign`,
          Code.PermissionDenied,
        );
      }
      if (c.attached && !c.attached.closed) {
        throw new ConnectError(
          `attach: container "${c.name}" is already attached by "${c.attached.name}" (session ${c.attached.id})`,
          Code.FailedPrecondition,
        );
      }
      return c;
    },
    attached(s, c, processName) {
      c.attached = s;
      s.attached = c;
      if (c.kind === "external") {
        c.phase = "Running";
        c.hostName = processName;
        c.startedAt = timestampNow();
        c.runningSince = Date.now();
        c.observedGeneration = c.generation;
        record(c, "Started", `process "${processName}" attached`);
      } else {
        record(c, "Attached", `process "${processName}" attached`);
      }
      c.message = "";
      refresh(c);
    },
    sessionLost(s) {
      if (s.role === "host") {
        for (const c of [...s.bound]) hostLost(c, s);
      } else if (s.role === "attached" && s.attached) {
        const c = s.attached;
        s.attached = undefined;
        if (c.attached === s) {
          c.attached = undefined;
          router.release(c, `lost its attached process "${s.name}"`);
          if (c.deleting) {
            finalize(c);
          } else if (c.kind === "external") {
            c.phase = "Pending";
            c.message = unschedulableReason(c, []);
            c.hostName = "";
            record(c, "Detached", `process "${s.name}" detached`, "Warning");
          } else if (c.started) {
            c.message = "process detached; waiting for it to attach again";
            record(c, "Detached", `process "${s.name}" detached`, "Warning");
          }
          router.reroute(c, false);
          refresh(c);
        }
      }
      scheduleSoon();
    },
    idle(c) {
      if (c.deleting && !c.host && c.attached && c.inflight.size === 0 && c.stopTimer) {
        clearTimeout(c.stopTimer);
        c.stopTimer = undefined;
        closeAttached(c, `container "${c.name}" was deleted`, Code.NotFound);
        finalize(c);
      }
    },
    async fetch(name) {
      const obj = await resources.get("Container", name);
      if (!obj || stopped) return undefined;
      const known = containers.get(name);
      if (known && known.uid === obj.metadata?.uid) return known;
      return ingest(obj);
    },
    async stop() {
      stopped = true;
      if (resumeTimer) clearTimeout(resumeTimer);
      for (const c of containers.values()) {
        if (c.backoffTimer) clearTimeout(c.backoffTimer);
        if (c.stopTimer) clearTimeout(c.stopTimer);
        c.backoffTimer = undefined;
        c.stopTimer = undefined;
      }
      await Promise.allSettled([...writes]);
    },
  };
}
