/**
 * The container lifecycle's transitions, in one place: given a record (the desired spec and
 * deletion, the state, what its host reported, its attached process) and the time, advance()
 * moves it to where it must be and asks for the effects (Assign, Stop, release in-flight
 * deliveries, detach, finalize, events, a wake-up). It reads levels, not edges: calling it again
 * with nothing new changes nothing.
 *
 * Restart back-off: 200 ms after the first exit, doubling on every exit without a healthy run,
 * capped at 30 s; a run of 30 s or more counts as healthy and resets it. k4s reacts in
 * milliseconds, so the numbers are those of Kubernetes' CrashLoopBackOff scaled down 50x.
 */
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { backoffDelay, type BackoffPolicy } from "../../api/backoff.js";
import type { ContainerStatus } from "../../gen/k4s/v1/resources_pb.js";
import type { WorkerLink } from "../messaging/worker-link.js";
import type { ContainerRecord, ContainerState, HostReport } from "./container-record.js";

/** The restart back-off of exited containers. */
export const RESTART_BACKOFF: BackoffPolicy = { initialMs: 200, maxMs: 30_000 };
/** A run this long (ms) resets the back-off. */
export const BACKOFF_RESET_AFTER_MS = 30_000;
/** Extra wait beyond a Stop's grace before a stopping container is given up on (ms). */
export const STOP_SLACK_MS = 1000;

/** LifecycleEffects are what transitions ask of the world. */
export interface LifecycleEffects {
  /** The time, in ms since the epoch. */
  now(): number;
  /** Sends a host the Assign of a container. */
  assign(rec: ContainerRecord, host: WorkerLink): void;
  /** Sends a host the Stop of a container, with its grace. */
  stop(rec: ContainerRecord, host: WorkerLink, graceMs: number): void;
  /** The deliveries the container's worker had in flight are lost (`why`: "failed", ...). */
  release(rec: ContainerRecord, why: string): void;
  /** Ends the attached process's stream with an error status. */
  detach(rec: ContainerRecord, link: WorkerLink, why: string, code: Code): void;
  /** Removes the container from the store (it was deleted and nothing runs any more). */
  finalize(rec: ContainerRecord): void;
  /** Deliveries its worker has not settled yet. */
  inFlight(rec: ContainerRecord): number;
  /** Records an event about the container. */
  record(rec: ContainerRecord, reason: string, message: string, type?: "Normal" | "Warning"): void;
  /** Asks for the container to be advanced again at `at` (ms). */
  wakeAt(rec: ContainerRecord, at: number): void;
  /** A fresh secret for the attach of a spawned command. */
  token(): string;
  /** The container's state changed (the scheduler and the host load follow it). */
  changed(rec: ContainerRecord, from: ContainerState): void;
}

/**
 * Sets where a container the lifecycle sees for the first time starts, from its stored
 * status: ended for good stays ended; one that ran on a host before a server restart waits
 * `resumeGraceMs` for that host to come back and resume it; the rest need a host (external
 * ones, a process).
 */
export function adopt(rec: ContainerRecord, st: ContainerStatus | undefined, resumeGraceMs: number, now: number): void {
  const policy = rec.spec.restartPolicy || "Always";
  if ((st?.phase === "Succeeded" && policy !== "Always") || (st?.phase === "Failed" && policy === "Never")) {
    rec.state = { is: "Ended", phase: st.phase };
    rec.message = st.message;
    rec.hostName = st.host;
  } else if (rec.kind === "external") {
    rec.observedGeneration = rec.generation;
    rec.state = { is: "Unattached" };
    rec.message = waitingForAttach(rec);
  } else if (st?.phase === "Running" && st.host !== "" && resumeGraceMs > 0) {
    rec.state = { is: "AwaitingHost", host: st.host, until: now + resumeGraceMs, ran: true };
    rec.message = `waiting up to ${resumeGraceMs} ms for host "${st.host}" to reconnect and resume it`;
  } else {
    rec.state = { is: "Unscheduled" };
  }
}

/** Moves a record through as many transitions as its facts call for. */
export function advance(rec: ContainerRecord, fx: LifecycleEffects): void {
  // Every transition consumes what triggered it, so this ends; the bound only guards a bug.
  for (let i = 0; i < 32 && step(rec, fx); i++);
}

/** Takes one transition; false when the record is where its facts say it should be. */
function step(rec: ContainerRecord, fx: LifecycleEffects): boolean {
  const report = rec.reports.shift();
  if (report) {
    // A report from a host the container left is stale.
    if (report.host === rec.host) reported(rec, report, fx);
    return true;
  }
  const host = rec.host;
  if (host?.closed) return hostLost(rec, host, fx), true;
  const attached = rec.attached;
  if (attached?.closed) return detached(rec, attached, fx), true;
  if (attached && attached !== rec.attachSeen) return attachedNow(rec, attached, fx), true;
  if (rec.deleting) return deleting(rec, fx);
  if (rec.generation !== rec.actedGeneration) return respec(rec, fx), true;
  return timers(rec, fx);
}

/** Moves a record to a new state, telling the effects. */
function become(rec: ContainerRecord, next: ContainerState, fx: LifecycleEffects): void {
  const from = rec.state;
  rec.state = next;
  fx.changed(rec, from);
}

/** Binds an unscheduled container to a host and sends it the Assign (the scheduler's choice). */
export function bind(rec: ContainerRecord, host: WorkerLink, fx: LifecycleEffects): void {
  if (rec.state.is !== "Unscheduled" || rec.deleting) return;
  rec.token = rec.kind === "command" ? fx.token() : "";
  rec.runGeneration = rec.generation;
  rec.hostName = host.name;
  rec.message = `starting on host "${host.name}"`;
  become(rec, { is: "Starting", host }, fx);
  fx.record(rec, "Scheduled", `assigned to host "${host.name}"`);
  fx.assign(rec, host);
}

/** No host can take an unscheduled container now: says why (once per reason). */
export function unschedulable(rec: ContainerRecord, why: string, fx: LifecycleEffects): void {
  if (rec.state.is !== "Unscheduled" || why === rec.message) return;
  rec.message = why;
  rec.hostName = "";
  fx.record(rec, "FailedScheduling", why, "Warning");
}

/** Whether a reconnecting host that still runs a container may resume it. */
export function resumable(rec: ContainerRecord): boolean {
  return (rec.state.is === "Unscheduled" || rec.state.is === "AwaitingHost") && !rec.deleting && rec.kind !== "external";
}

/** A reconnecting host still runs the container: it resumes there instead of restarting. */
export function resume(rec: ContainerRecord, host: WorkerLink, fx: LifecycleEffects): void {
  if (!resumable(rec)) return;
  rec.hostName = host.name;
  rec.runGeneration = rec.generation;
  rec.observedGeneration = rec.generation;
  rec.message = rec.kind === "command" && !rec.attached ? "process resumed; waiting for it to attach" : "";
  become(rec, { is: "Running", host, since: fx.now() }, fx);
  fx.record(rec, "Resumed", `host "${host.name}" still runs it`);
}

/**
 * In a cluster: an external container stored Running, whose process no server holds now (its
 * server died), waits `graceMs` for that process to attach again, to any server, before it is
 * shown not running (see the AwaitingHost case of timers). Its stored status is left as it is
 * meanwhile.
 */
export function awaitProcess(rec: ContainerRecord, st: ContainerStatus | undefined, graceMs: number, now: number): void {
  if (rec.kind !== "external" || rec.state.is !== "Unattached" || st?.phase !== "Running" || graceMs <= 0) return;
  rec.state = { is: "AwaitingHost", host: st.host, until: now + graceMs, ran: false };
  rec.message = `waiting up to ${graceMs} ms for process "${st.host}" to attach again`;
}

/** Its old host came back without it: it waits no longer (it runs again elsewhere: a restart when it ran there). */
export function stopAwaiting(rec: ContainerRecord, fx: LifecycleEffects): void {
  if (rec.state.is !== "AwaitingHost") return;
  if (rec.state.ran) rec.restarts++;
  become(rec, { is: "Unscheduled" }, fx);
}

function reported(rec: ContainerRecord, r: HostReport, fx: LifecycleEffects): void {
  const s = rec.state;
  if (r.phase === "Running") {
    if (s.is !== "Starting") return;
    rec.startedAt = timestampFromMs(fx.now());
    rec.observedGeneration = rec.runGeneration;
    rec.exitCode = 0;
    rec.message = rec.kind === "command" && !rec.attached ? "process started; waiting for it to attach" : "";
    become(rec, { is: "Running", host: s.host, since: fx.now() }, fx);
    fx.record(rec, "Started", `started on host "${s.host.name}"`);
  } else if (s.is === "Stopping") {
    stopped(rec, fx);
  } else if (s.is === "Starting" || s.is === "Running") {
    exited(rec, { ...r, phase: r.phase }, s.host, s.is === "Running" ? fx.now() - s.since : 0, fx);
  }
}

/** The host stopped a container it was asked to stop (or its grace passed). */
function stopped(rec: ContainerRecord, fx: LifecycleEffects): void {
  fx.release(rec, "was stopped");
  detachCommand(rec, `container "${rec.name}" was stopped`, fx);
  become(rec, rec.deleting ? { is: "Finalizing" } : { is: "Unscheduled" }, fx);
}

function exited(rec: ContainerRecord, r: HostReport & { phase: "Stopped" | "Succeeded" | "Failed" }, host: WorkerLink, ranFor: number, fx: LifecycleEffects): void {
  fx.release(rec, r.phase === "Failed" ? "failed" : "ended");
  detachCommand(rec, `container "${rec.name}" exited`, fx);
  rec.exitCode = r.exitCode;
  if (r.phase === "Stopped") {
    // The host gave the container up on its own (e.g. it is shutting down): run it elsewhere.
    rec.restarts++;
    rec.message = `stopped by host "${host.name}"${r.message ? `: ${r.message}` : ""}; rescheduling`;
    become(rec, { is: "Unscheduled" }, fx);
    return;
  }
  const failure = r.message || `exit code ${r.exitCode}`;
  if (r.phase === "Failed") fx.record(rec, "Failed", `failed on host "${host.name}": ${failure}`, "Warning");
  else fx.record(rec, "Completed", `completed on host "${host.name}"`);
  const policy = rec.spec.restartPolicy || "Always";
  const restart = policy === "Never" ? false : policy === "OnFailure" ? r.phase === "Failed" : true;
  if (!restart) {
    rec.message = r.message || (r.phase === "Succeeded" ? "completed" : `exit code ${r.exitCode}`);
    become(rec, { is: "Ended", phase: r.phase }, fx);
    return;
  }
  if (ranFor >= BACKOFF_RESET_AFTER_MS) rec.failures = 0;
  const delay = backoffDelay(RESTART_BACKOFF, rec.failures);
  rec.failures++;
  rec.message = `back-off ${delay} ms before restarting: ${r.phase === "Failed" ? `failed: ${failure}` : "completed"}`;
  fx.record(rec, "BackOff", `back-off ${delay} ms before restart ${rec.restarts + 1}`, "Warning");
  become(rec, { is: "BackOff", until: fx.now() + delay }, fx);
}

function hostLost(rec: ContainerRecord, host: WorkerLink, fx: LifecycleEffects): void {
  const wasStopping = rec.state.is === "Stopping";
  fx.release(rec, `lost its host "${host.name}"`);
  detachCommand(rec, `container "${rec.name}" lost its host "${host.name}"`, fx);
  if (rec.deleting) return become(rec, { is: "Finalizing" }, fx);
  fx.record(rec, "HostLost", `host "${host.name}" was lost; rescheduling`, "Warning");
  if (!wasStopping) rec.restarts++;
  rec.message = `host "${host.name}" was lost; rescheduling`;
  rec.hostName = "";
  become(rec, { is: "Unscheduled" }, fx);
}

/** A command container's process goes with its run. */
function detachCommand(rec: ContainerRecord, why: string, fx: LifecycleEffects): void {
  const link = rec.attached;
  if (rec.kind !== "command" || !link) return;
  rec.attached = rec.attachSeen = undefined;
  fx.detach(rec, link, why, Code.Unavailable);
}

function detached(rec: ContainerRecord, link: WorkerLink, fx: LifecycleEffects): void {
  rec.attached = rec.attachSeen = undefined;
  fx.release(rec, `lost its attached process "${link.name}"`);
  if (rec.deleting) return become(rec, { is: "Finalizing" }, fx);
  if (rec.kind === "external") {
    rec.message = waitingForAttach(rec);
    rec.hostName = "";
    fx.record(rec, "Detached", `process "${link.name}" detached`, "Warning");
    become(rec, { is: "Unattached" }, fx);
  } else if (rec.state.is === "Running") {
    rec.message = "process detached; waiting for it to attach again";
    fx.record(rec, "Detached", `process "${link.name}" detached`, "Warning");
  }
}

/**
 * An external container's process did not attach again within the grace: shown as a single
 * server shows a detached one. Only when its stored status still shows it Running: one no
 * longer shown so had its process detach normally from a live server, which recorded that and
 * showed it Pending itself (that write reached the store after its attach claim's delete).
 */
function processGone(rec: ContainerRecord, process: string, fx: LifecycleEffects): void {
  rec.message = waitingForAttach(rec);
  rec.hostName = "";
  if (rec.storedPhase === "Running") fx.record(rec, "Detached", `process "${process}" did not attach again after its server was lost`, "Warning");
  become(rec, { is: "Unattached" }, fx);
}

function attachedNow(rec: ContainerRecord, link: WorkerLink, fx: LifecycleEffects): void {
  rec.attachSeen = link;
  rec.message = "";
  if (rec.kind !== "external") return fx.record(rec, "Attached", `process "${link.name}" attached`);
  rec.hostName = link.name;
  rec.startedAt = timestampFromMs(fx.now());
  rec.observedGeneration = rec.generation;
  become(rec, { is: "Attached", since: fx.now() }, fx);
  fx.record(rec, "Started", `process "${link.name}" attached`);
}

/** Deleted: stop what runs, let an attached process finish, then finalize. */
function deleting(rec: ContainerRecord, fx: LifecycleEffects): boolean {
  const s = rec.state;
  const now = fx.now();
  if (s.is === "Starting" || s.is === "Running") return stopOnHost(rec, s.host, "deleted", fx), true;
  if (s.is === "Stopping") return stopDeadline(rec, s.host, s.until, fx);
  const link = rec.attached;
  if (link && s.is !== "Draining") {
    if (fx.inFlight(rec) === 0) return become(rec, { is: "Draining", until: now }, fx), true;
    const grace = rec.graceMs();
    fx.record(rec, "Killing", `waiting up to ${grace} ms for in-flight messages before detaching "${link.name}"`);
    return become(rec, { is: "Draining", until: now + grace }, fx), true;
  }
  if (s.is === "Draining") {
    if (link && fx.inFlight(rec) > 0 && now < s.until) return fx.wakeAt(rec, s.until), false;
    if (link) {
      rec.attached = rec.attachSeen = undefined;
      fx.detach(rec, link, `container "${rec.name}" was deleted`, Code.NotFound);
    }
    return become(rec, { is: "Finalizing" }, fx), true;
  }
  if (s.is !== "Finalizing") return become(rec, { is: "Finalizing" }, fx), true;
  if (!rec.finalizing) fx.finalize(rec);
  return false;
}

function stopOnHost(rec: ContainerRecord, host: WorkerLink, reason: string, fx: LifecycleEffects): void {
  const grace = rec.graceMs();
  const until = fx.now() + grace + STOP_SLACK_MS;
  fx.record(rec, "Killing", `stopping on host "${host.name}" (${reason}), grace ${grace} ms`);
  become(rec, { is: "Stopping", host, until }, fx);
  fx.stop(rec, host, grace);
}

/** A stopping container whose host did not report it stopped in time is given up on. */
function stopDeadline(rec: ContainerRecord, host: WorkerLink, until: number, fx: LifecycleEffects): boolean {
  if (fx.now() < until) return fx.wakeAt(rec, until), false;
  fx.record(rec, "Killing", `host "${host.name}" did not report the container stopped within ${rec.graceMs() + STOP_SLACK_MS} ms`, "Warning");
  stopped(rec, fx);
  return true;
}

/** Its spec changed: a running container restarts with it, an ended one starts again. */
function respec(rec: ContainerRecord, fx: LifecycleEffects): void {
  rec.actedGeneration = rec.generation;
  const s = rec.state;
  if (s.is === "Starting" || s.is === "Running") return stopOnHost(rec, s.host, "spec changed", fx);
  if (s.is === "Stopping") return;
  const link = rec.attached;
  if (link && rec.kind === "module") {
    rec.attached = rec.attachSeen = undefined;
    fx.detach(rec, link, `container "${rec.name}" is no longer external`, Code.FailedPrecondition);
  }
  rec.failures = 0;
  if (rec.kind !== "external") return become(rec, { is: "Unscheduled" }, fx);
  rec.observedGeneration = rec.generation;
  if (s.is !== "Attached" && s.is !== "Unattached") {
    rec.message = waitingForAttach(rec);
    rec.hostName = "";
    become(rec, rec.attached ? { is: "Attached", since: fx.now() } : { is: "Unattached" }, fx);
  }
}

/** States that end at a time: back-off, stop deadline, the wait for a known host. */
function timers(rec: ContainerRecord, fx: LifecycleEffects): boolean {
  const s = rec.state;
  const now = fx.now();
  switch (s.is) {
    case "Stopping":
      return stopDeadline(rec, s.host, s.until, fx);
    case "BackOff":
      if (now < s.until) return fx.wakeAt(rec, s.until), false;
      rec.restarts++;
      become(rec, { is: "Unscheduled" }, fx);
      return true;
    case "AwaitingHost":
      if (now < s.until) return fx.wakeAt(rec, s.until), false;
      if (rec.kind === "external") return processGone(rec, s.host, fx), true;
      // Its host is gone for good: it runs again elsewhere, a restart as when a live server loses a host.
      if (s.ran) rec.restarts++;
      become(rec, { is: "Unscheduled" }, fx);
      return true;
    default:
      return false;
  }
}

/** What an external container without a process says while it waits. */
export function waitingForAttach(rec: ContainerRecord): string {
  return `waiting for a process to attach to external container "${rec.name}"`;
}
