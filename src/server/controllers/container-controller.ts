/**
 * The container controller: follows stored Containers and what worker hosts and attached
 * processes say, and reconciles each container by name on the controller framework. A
 * reconcile re-reads the stored object and the record (state, host reports, attached process,
 * time), advances it through the lifecycle's transitions, and publishes the result: where the
 * router delivers (availability) and the stored status. The scheduler binds the containers it
 * leaves Unscheduled.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import type { Container } from "../../gen/k4s/v1/resources_pb.js";
import type { Attach, ContainerState as ReportedState, RunningContainer } from "../../gen/k4s/v1/worker_service_pb.js";
import type { EventRecorder } from "../event-recorder.js";
import type { LogStore } from "../log-store.js";
import { assignFrame, stopFrame } from "../messaging/frames.js";
import type { LinkRegistry } from "../messaging/link-registry.js";
import type { Router } from "../messaging/router.js";
import type { WorkerLink } from "../messaging/worker-link.js";
import type { ResourceStore } from "../store/resource-store.js";
import { adopt, advance, awaitProcess, bind, resume, stopAwaiting, unschedulable, type LifecycleEffects } from "./container-lifecycle.js";
import { ContainerRecord, containerKind, storedBinding } from "./container-record.js";
import { listenTo } from "../listen-to.js";
import { createController, type Controller, type ReconcileReport } from "./controller.js";
import type { Informer } from "./informer.js";
import { createStatusWriter, type StatusWriter } from "./status-writer.js";
import { createTurnBatcher } from "./turn-batcher.js";

/** ContainerControllerOptions are the controller's dependencies. */
export interface ContainerControllerOptions {
  informer: Informer;
  resources: ResourceStore;
  events: EventRecorder;
  logs: LogStore;
  router: Router;
  links: LinkRegistry;
  /**
   * How long, after the server starts, a container its stored status shows Running on a host
   * waits for that host to reconnect and resume it before it is scheduled elsewhere (ms).
   */
  resumeGraceMs: number;
  /**
   * In a cluster: the leader's scheduler binds in the store, and a container bound to a host of
   * this server starts here when its binding is seen (one bound elsewhere keeps naming its host).
   */
  bindsFromStore?: boolean;
  /**
   * In a cluster: whether this server holds a container now (runs its lifecycle and writes its
   * status), given the stored object and the record it has of it, if any. One it does not hold
   * is let go of: released as a lost host releases it, and forgotten without a write, for the
   * server holding it to drive. Absent: this server holds every container.
   */
  holds?: (obj: Container, rec: ContainerRecord | undefined) => boolean;
  /**
   * This server starts holding a container it had no record of (at its start, when the
   * container is created or bound here, or taken over from another server).
   */
  onTaken?: (obj: Container) => void;
  /** This server let go of a container another server holds now (see holds). */
  onLetGo?: (name: string, uid: string) => void;
  onError: (message: string, err?: unknown) => void;
  onReconcile?: (report: ReconcileReport) => void;
}

/**
 * ContainerLifecycle is what the stream handlers tell the lifecycle: hosts joining and
 * reporting, processes attaching. A server that does not run the controllers would forward it.
 */
export interface ContainerLifecycle {
  /** A host said hello; `running` lists what it still runs from before a reconnect. */
  hostJoined(host: WorkerLink, running: readonly RunningContainer[]): void;
  /** A host reconnected on a new stream before its old one was declared lost: what it still runs moves over. */
  hostReplaced(old: WorkerLink, next: WorkerLink, running: readonly RunningContainer[]): void;
  /** A host reported a container's state. */
  stateReported(host: WorkerLink, state: ReportedState): void;
  /** The host link a container is bound to now, if any. */
  hostOf(container: string): WorkerLink | undefined;
  /**
   * Validates an Attach; resolves to the container's name or rejects with the reason.
   * `credentialOnly`: the stream holds no bearer token, only an attach credential, which admits
   * a command container's own process and nothing else.
   */
  checkAttach(attach: Attach, credentialOnly?: boolean): Promise<string>;
  /**
   * A process attached to a container (after checkAttach); FAILED_PRECONDITION when another
   * one attached meanwhile, NOT_FOUND when the container went.
   */
  attached(link: WorkerLink, container: string): void;
  /**
   * An attach checked here (checkAttach) ended without attaching: refused, or claimed by another
   * server. The container is held here for it no longer.
   */
  attachFailed(container: string): void;
}

/** ContainerController is the running lifecycle, with what the scheduler needs of it. */
export interface ContainerController extends Controller, ContainerLifecycle {
  /** The record of a container, read-only for the scheduler. */
  record(name: string): ContainerRecord | undefined;
  /** Looks at every stored container again (in a cluster: which ones this server holds changed). */
  recheckAll(): void;
  /** How many containers are held here for a process attaching to them now. */
  attachHolds(): number;
  /** Containers bound to a host now. */
  load(host: WorkerLink): number;
  /** Binds an Unscheduled container to a host (the scheduler's choice). */
  bind(name: string, host: WorkerLink): void;
  /** Says why no host can take an Unscheduled container now. */
  unschedulable(name: string, why: string): void;
  /**
   * Calls listener with a container's name when it needs a host, and with undefined when
   * every waiting container may fit now (a host joined, or one has room again). Returns what
   * stops it.
   */
  onSchedulingNeeded(listener: (name: string | undefined) => void): () => void;
}

/** Creates the container controller. */
export function createContainerController(options: ContainerControllerOptions): ContainerController {
  const { informer, links } = options;
  const records = new Map<string, ContainerRecord>();
  const hostLoad = new Map<WorkerLink, number>();
  const schedulingListeners: Array<(name: string | undefined) => void> = [];
  // A status whose write failed is written again at a later reconcile (which writes only what differs).
  const status = createStatusWriter({ resources: options.resources, onError: options.onError, retry: (rec, delayMs) => controller.enqueue(rec.name, delayMs) });
  const needScheduling = (name: string | undefined) => schedulingListeners.forEach((l) => l(name));
  const adjustLoad = (host: WorkerLink | undefined, delta: number) => {
    if (host) hostLoad.set(host, (hostLoad.get(host) ?? 0) + delta);
  };

  const finalize = batchedFinalizer(options.resources, (rec, err) => {
    rec.finalizing = false;
    options.onError(`finalizing container "${rec.name}" failed`, err);
    controller.enqueue(rec.name, FINALIZE_RETRY_MS);
  });

  const parts: RecordParts = { records, adjustLoad, needScheduling };
  const fx = lifecycleEffects(options, {
    finalize,
    enqueue: (name, delayMs) => controller.enqueue(name, delayMs),
    moved(before, after) {
      adjustLoad(before, -1);
      adjustLoad(after, +1);
      // A host with room again may take a waiting container.
      if (before && !before.closed) needScheduling(undefined);
    },
    needScheduling,
  });
  const publish = (rec: ContainerRecord) => publishRecord(rec, options, status);
  const newRecord = (obj: Container) => newRecordOf(obj, options, parts);
  const forget = (rec: ContainerRecord) => forgetRecord(rec, options, parts);
  const letGo = (rec: ContainerRecord) => letGoOf(rec, options, parts, fx);

  const attachHolds = createAttachHolds();

  /** `attaching`: a process is attaching here, so this server holds the container whoever held it before. */
  function reconcile(name: string, attaching = false): void {
    attaching = attachHolds.held(name, attaching);
    const obj = informer.get("Container", name);
    let rec = records.get(name);
    if (rec && rec.uid !== obj?.metadata?.uid) {
      forget(rec);
      rec = undefined;
    }
    if (!obj?.metadata || !obj.spec) {
      // Gone: no attach to it can finish.
      attachHolds.drop(name);
      return;
    }
    if (options.holds && !attaching && !options.holds(obj, rec)) {
      if (rec) letGo(rec);
      return;
    }
    if (!rec) {
      rec = newRecord(obj);
      options.onTaken?.(obj);
    }
    rec.spec = obj.spec;
    rec.generation = obj.metadata.generation;
    rec.kind = containerKind(obj.spec);
    rec.deleting = !!obj.metadata.deletionTimestamp;
    rec.storedPhase = obj.status?.phase ?? "";
    advance(rec, fx);
    if (options.bindsFromStore) bindStored(rec, obj, links.hosts(), fx, needScheduling, options.resumeGraceMs);
    publish(rec);
  }

  const controller = createController({
    name: "container",
    informer,
    workers: 1,
    onError: options.onError,
    onReconcile: options.onReconcile,
    watches: [{ kind: "Container", keys: (e) => [e.object.metadata?.name ?? ""] }],
    reconcile: (name) => reconcile(name),
  });

  links.onLost((link) => {
    for (const rec of records.values()) if (rec.host === link || rec.attached === link) controller.enqueue(rec.name);
    if (link.role === "host") needScheduling(undefined);
  });

  const lifecycle = createLifecycleInput({
    records,
    informer,
    reconcile,
    enqueue: controller.enqueue,
    fx,
    publish,
    needScheduling,
    // The attach finished: attached (its link holds the container now) or refused (what holds it is looked at again).
    attachEnded: (name, ok) => attachHolds.drop(name) && !ok && controller.enqueue(name),
  });
  return {
    ...controller,
    ...lifecycle,
    record: (name) => records.get(name),
    recheckAll() {
      for (const c of informer.list("Container")) controller.enqueue(c.metadata?.name ?? "");
    },
    attachHolds: () => attachHolds.size(),
    load: (host) => hostLoad.get(host) ?? 0,
    bind(name, host) {
      const rec = records.get(name);
      if (!rec) return;
      bind(rec, host, fx);
      publish(rec);
    },
    unschedulable(name, why) {
      const rec = records.get(name);
      if (!rec) return;
      unschedulable(rec, why, fx);
      publish(rec);
    },
    onSchedulingNeeded: (listener) => listenTo(schedulingListeners, listener),
    async stop() {
      await controller.stop();
      await status.stop();
    },
  };
}

/** The controller's records of the containers it holds, and what follows their changes. */
interface RecordParts {
  records: Map<string, ContainerRecord>;
  adjustLoad(host: WorkerLink | undefined, delta: number): void;
  needScheduling(name: string | undefined): void;
}

/** Tells the router and the store where the container is now. */
function publishRecord(rec: ContainerRecord, options: ContainerControllerOptions, status: StatusWriter): void {
  const { router, informer } = options;
  const ended = rec.state.is === "Ended";
  router.setAvailability(rec.name, {
    link: rec.deliveryLink(),
    ready: rec.ready(),
    accepts: rec.deleting ? "none" : ended ? "sends" : "all",
    notReady: rec.message || rec.phase(),
    refusal: rec.deleting
      ? `container "${rec.name}" is being deleted`
      : `container "${rec.name}" has ended (${rec.phase()}) and takes no more requests`,
  });
  // In a cluster, a container waiting for its host keeps its stored status (bound to that
  // host) meanwhile: the server the host reconnects to finds it there and resumes it.
  if (options.bindsFromStore && rec.state.is === "AwaitingHost") return;
  status.write(rec, informer.get("Container", rec.name));
}

/** Records a container this server starts holding. */
function newRecordOf(obj: Container, options: ContainerControllerOptions, parts: RecordParts): ContainerRecord {
  const { records, needScheduling } = parts;
  const rec = new ContainerRecord(obj.metadata!.name, obj.metadata!.uid, obj);
  records.set(rec.name, rec);
  adopt(rec, obj.status, options.resumeGraceMs, Date.now());
  // In a cluster, an external container shown Running that this server takes without a
  // process attaching here (its server died) waits for the process to attach again first.
  if (options.bindsFromStore) awaitProcess(rec, obj.status, options.resumeGraceMs, Date.now());
  if (rec.state.is === "Unscheduled") needScheduling(rec.name);
  return rec;
}

/** A container gone from the store (or re-created under its name): nothing of it may keep running. */
function forgetRecord(rec: ContainerRecord, options: ContainerControllerOptions, parts: RecordParts): void {
  const { records, adjustLoad, needScheduling } = parts;
  const { links } = options;
  records.delete(rec.name);
  const host = rec.host;
  // Removed while its host still runs it (grace passed, or deleted before it was bound in
  // the store): the host stops it now.
  if (host && !host.closed) host.push(stopFrame({ container: rec.name, uid: rec.uid, graceMs: 0 }));
  adjustLoad(host, -1);
  if (rec.attached) links.lose(rec.attached, new ConnectError(`container "${rec.name}" was deleted`, Code.NotFound));
  options.logs.drop(rec.name);
  if (host) needScheduling(undefined);
}

/**
 * Another server holds the container now (its host moved there, or this server's session of
 * it is no longer the one in force): stop driving it, without a write. What its worker had in
 * flight here is released (requests fail UNAVAILABLE, sends go back to the inbox). The mailbox
 * is unavailable first: its old link may still be open, and the release must not deliver what
 * it puts back (nor what was queued) on it again.
 */
function letGoOf(rec: ContainerRecord, options: ContainerControllerOptions, parts: RecordParts, fx: LifecycleEffects): void {
  const { router } = options;
  parts.records.delete(rec.name);
  parts.adjustLoad(rec.host, -1);
  router.setAvailability(rec.name, { link: undefined, ready: false, accepts: "all", notReady: "held by another server of the cluster", refusal: "" });
  fx.release(rec, "is held by another server of the cluster now");
  options.onLetGo?.(rec.name, rec.uid);
}

/**
 * The containers a process is attaching to here (until the attach ends, at most ATTACH_HOLD_MS):
 * this server holds them meanwhile, whoever held them before. held() records an attach and says
 * whether one is on; drop() ends one (the attach finished, or the container went).
 */
function createAttachHolds() {
  const until = new Map<string, number>();
  return {
    drop: (name: string): boolean => until.delete(name),
    size: () => until.size,
    held(name: string, attaching: boolean): boolean {
      if (attaching) until.set(name, Date.now() + ATTACH_HOLD_MS);
      else if ((until.get(name) ?? 0) > Date.now()) return true;
      else until.delete(name);
      return attaching;
    },
  };
}

/** What lifecycleEffects needs of the controller besides its options. */
interface EffectsParts {
  finalize(rec: ContainerRecord): void;
  enqueue(name: string, delayMs?: number): void;
  /** A container's host changed (before, after: either may be none). */
  moved(before: WorkerLink | undefined, after: WorkerLink | undefined): void;
  needScheduling(name: string | undefined): void;
}

/** The effects the lifecycle's transitions ask for, on the controller's router, links and events. */
function lifecycleEffects(options: ContainerControllerOptions, parts: EffectsParts): LifecycleEffects {
  const { router, links, events } = options;
  return {
    now: () => Date.now(),
    assign: (rec, host) => host.push(assignFrame({ container: rec.name, uid: rec.uid, spec: rec.spec, token: rec.token, restarts: rec.restarts })),
    stop: (rec, host, graceMs) => host.push(stopFrame({ container: rec.name, uid: rec.uid, graceMs })),
    release: (rec, why) => router.release(rec.name, why),
    detach: (_rec, link, why, code) => links.lose(link, new ConnectError(why, code)),
    finalize(rec) {
      rec.finalizing = true;
      parts.finalize(rec);
    },
    inFlight: (rec) => router.load(rec.name)?.inFlight ?? 0,
    record: (rec, reason, message, type = "Normal") => events.record({ type, reason, kind: "Container", name: rec.name, message }),
    wakeAt: (rec, at) => parts.enqueue(rec.name, Math.max(0, at - Date.now()) + 1),
    token: () => randomBytes(16).toString("hex"),
    changed(rec, from) {
      const before = from.is === "Starting" || from.is === "Running" || from.is === "Stopping" ? from.host : undefined;
      if (before !== rec.host) parts.moved(before, rec.host);
      if (rec.state.is === "Unscheduled") parts.needScheduling(rec.name);
    },
  };
}

/**
 * In a cluster: a container the leader bound in the store starts on its host when that host is
 * connected here; one bound to a host elsewhere (or not back yet) keeps naming it; one not bound
 * needs scheduling.
 */
function bindStored(rec: ContainerRecord, obj: Container, hosts: Iterable<WorkerLink>, fx: LifecycleEffects, needScheduling: (name: string) => void, graceMs: number): void {
  if (rec.state.is !== "Unscheduled" || rec.deleting || rec.kind === "external") return;
  const name = storedBinding(obj);
  if (name === "") return needScheduling(rec.name);
  const host = [...hosts].find((h) => h.name === name && !h.closed);
  if (host) return bind(rec, host, fx);
  if (rec.awaitedBinding !== name && graceMs > 0) {
    // Bound to a host no server holds now (its server went before starting it): the host may
    // come back, to any server, within the resume grace; it is bound again only after.
    rec.awaitedBinding = name;
    rec.message = `bound to host "${name}", which no server holds now: waiting up to ${graceMs} ms for it to reconnect`;
    rec.state = { is: "AwaitingHost", host: name, until: fx.now() + graceMs, ran: false };
    fx.wakeAt(rec, fx.now() + graceMs);
    return;
  }
  rec.hostName = name;
  rec.message = obj.status!.message;
  // The scheduler keeps it among those waiting: bound to a host no server holds (any more, or
  // gone before the binding was stored), it is scheduled again.
  needScheduling(rec.name);
}

/**
 * Removes containers marked for deletion in batches, as statuses are written (see
 * turn-batcher.ts): those asked in one turn together, and those asked while a batch is on its
 * way in the next one, so a scale-down of thousands is a few transactions.
 */
function batchedFinalizer(resources: ResourceStore, failed: (rec: ContainerRecord, err: unknown) => void): (rec: ContainerRecord) => void {
  const batches = createTurnBatcher<ContainerRecord>(
    async (recs) => {
      const errors = await resources.finalizeAll(recs.map((r) => r.name));
      errors.forEach((err, i) => err && failed(recs[i]!, err));
    },
    (recs, err) => recs.forEach((r) => failed(r, err)),
  );
  return (rec) => batches.add(rec);
}

/** How long a container a process is attaching to stays held here for that attach to finish (ms). */
const ATTACH_HOLD_MS = 10_000;

/** Retry delay of a finalize that failed (ms). */
const FINALIZE_RETRY_MS = 500;

/** What createLifecycleInput works on: the controller's records and how to reconcile them. */
interface LifecycleInputOptions {
  records: Map<string, ContainerRecord>;
  informer: Informer;
  reconcile(name: string, attaching?: boolean): void;
  enqueue(name: string): void;
  fx: LifecycleEffects;
  publish(rec: ContainerRecord): void;
  needScheduling(name: string | undefined): void;
  /** An attach checked here ended: attached (ok) or not. */
  attachEnded(name: string, ok: boolean): void;
}

/** The lifecycle's inputs from worker streams, turned into facts on the records and reconciles. */
function createLifecycleInput(o: LifecycleInputOptions): ContainerLifecycle {
  const { records, fx } = o;
  return {
    hostOf(container) {
      return records.get(container)?.host;
    },
    hostJoined(host, running) {
      for (const r of running) {
        // A container whose stored change is still in the queue is looked at now.
        if (!records.has(r.name)) o.reconcile(r.name);
        const rec = records.get(r.name);
        // Only the host it ran on resumes it: one that proved its name, and after a server
        // restart the very name the container waits for.
        const awaited = rec?.state.is !== "AwaitingHost" || rec.state.host === host.name;
        if (rec && rec.uid === r.uid && rec.host === undefined && host.proven && awaited) {
          // A reconnecting host still runs it: resume instead of restarting. At once, so that
          // the scheduler, which may be about to look at it, finds it running.
          resume(rec, host, fx);
          o.publish(rec);
        }
        if (!rec || rec.uid !== r.uid || rec.host !== host) host.push(stopFrame({ container: r.name, uid: r.uid, graceMs: 0 }));
      }
      for (const rec of records.values()) {
        // Bound in the store to this host while it was away: it starts now.
        if (rec.state.is === "Unscheduled" && rec.hostName === host.name) o.reconcile(rec.name);
        // Its old host is back and did not list it: no reason to wait any longer.
        if (host.proven && rec.kind !== "external" && rec.state.is === "AwaitingHost" && rec.state.host === host.name) {
          stopAwaiting(rec, fx);
          o.enqueue(rec.name);
        }
      }
      o.needScheduling(undefined);
    },
    hostReplaced(old, next, running) {
      const still = new Set(running.map((r) => `${r.name}/${r.uid}`));
      for (const rec of records.values()) {
        const s = rec.state;
        if ((s.is !== "Starting" && s.is !== "Running" && s.is !== "Stopping") || s.host !== old) continue;
        if (!still.has(`${rec.name}/${rec.uid}`)) continue;
        // Deliveries sent on the old stream are gone with it.
        fx.release(rec, `lost its host session ${old.id}`);
        const from = rec.state;
        rec.state = { ...s, host: next };
        rec.hostName = next.name;
        fx.changed(rec, from);
        o.publish(rec);
      }
    },
    stateReported(host, st) {
      const rec = records.get(st.container);
      if (!rec || rec.host !== host || (st.uid !== "" && st.uid !== rec.uid)) return;
      if (st.phase !== "Running" && st.phase !== "Stopped" && st.phase !== "Succeeded" && st.phase !== "Failed") return;
      rec.reports.push({ host, phase: st.phase, message: st.message, exitCode: st.exitCode });
      o.enqueue(rec.name);
    },
    async checkAttach(a, credentialOnly = false) {
      try {
        return await checkAttach(a, credentialOnly);
      } catch (err) {
        o.attachEnded(a.container, false);
        throw err;
      }
    },
    attached(link, name) {
      if (!records.has(name)) o.reconcile(name, true);
      const rec = records.get(name);
      if (!rec) throw new ConnectError(`attach: no container named "${name}"`, Code.NotFound);
      if (rec.attached && !rec.attached.closed) {
        throw new ConnectError(`attach: container "${name}" is already attached by "${rec.attached.name}"`, Code.FailedPrecondition);
      }
      rec.attached = link;
      // At once: deliveries may go to it from now on.
      o.reconcile(name, true);
      o.attachEnded(name, true);
    },
    attachFailed: (name) => o.attachEnded(name, false),
  };

  async function checkAttach(a: Attach, credentialOnly: boolean): Promise<string> {
    let rec = records.get(a.container);
    if (!rec && ((await o.informer.refresh("Container", a.container)) || o.informer.get("Container", a.container))) {
      o.reconcile(a.container, true);
      rec = records.get(a.container);
    }
    if (!rec) throw new ConnectError(`attach: no container named "${a.container}"`, Code.NotFound);
    if (rec.deleting) throw new ConnectError(`attach: container "${rec.name}" is being deleted`, Code.FailedPrecondition);
    if (rec.kind === "module") {
      throw new ConnectError(
        `attach: container "${rec.name}" runs function "${rec.spec.function}" of module "${rec.spec.module}" in a worker host; only command and external containers take an attached process`,
        Code.FailedPrecondition,
      );
    }
    if (credentialOnly && rec.kind !== "command") {
      throw new ConnectError(`attach: container "${rec.name}" is not a command container: attaching to it needs the server's bearer token`, Code.PermissionDenied);
    }
    if (rec.kind === "command" && (rec.token === "" || a.token !== rec.token)) {
      throw new ConnectError(
        `attach: wrong token for container "${rec.name}": a command container is attached by the process its host spawned, with the token of its Assign`,
        Code.PermissionDenied,
      );
    }
    if (rec.attached && !rec.attached.closed) {
      throw new ConnectError(`attach: container "${rec.name}" is already attached by "${rec.attached.name}" (session ${rec.attached.id})`, Code.FailedPrecondition);
    }
    return rec.name;
  }
}
