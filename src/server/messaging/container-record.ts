/**
 * The messaging plane's live state of one Container: its inbox and unsettled deliveries, the
 * host it is bound to or the session attached to it, and the status the plane reports for it.
 * The stored object is the desired state; this is what is happening now.
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Container, ContainerSpec } from "../../gen/k4s/v1/resources_pb.js";
import type { Envelope } from "./envelope.js";
import { Inbox } from "./inbox.js";
import type { WorkerLink } from "./worker-link.js";
import { LoadCounters } from "../stats/load-counters.js";

/** How a container runs: a module function in a host, a spawned command, or an external process. */
export type ContainerKind = "module" | "command" | "external";

/** Default deliveries in flight per container. */
export const DEFAULT_CONCURRENCY = 1;
/** Default messages waiting in an inbox beyond those in flight. */
export const DEFAULT_QUEUE_LIMIT = 1000;
/** Default grace a stopping container gets, in seconds. */
export const DEFAULT_GRACE_SECONDS = 5;

/** Returns how a container spec runs. */
export function containerKind(spec: ContainerSpec | undefined): ContainerKind {
  if (spec && spec.command.length > 0) return "command";
  if (spec && spec.module !== "") return "module";
  return "external";
}

/** ContainerRecord is what the messaging plane knows of one container now: inbox, binding, lifecycle. */
export class ContainerRecord {
  readonly inbox = new Inbox();
  /** Delivered, unsettled envelopes. */
  readonly inflight = new Set<Envelope>();
  /** What it settled, for the live stats. */
  readonly load = new LoadCounters();
  spec: ContainerSpec;
  generation: bigint;
  labels: Record<string, string>;
  kind: ContainerKind;
  concurrency: number;
  queueLimit: number;

  /** The host it is bound to (module and command containers). */
  host: WorkerLink | undefined = undefined;
  /** The session attached to it (command and external containers). */
  attached: WorkerLink | undefined = undefined;
  /** Its host reported Running for the current assignment. */
  started = false;
  /** A Stop was sent and not yet answered. */
  stopping = false;
  /** Restart with the new spec once stopped. */
  respec = false;
  /** Marked for deletion (metadata.deletionTimestamp). */
  deleting = false;
  /** finalize() was called. */
  finalized = false;
  /** Ended for good (restart policy said no). */
  terminal = false;
  /** Token of the current Assign (command containers attach with it). */
  token = "";
  assignedGeneration = 0n;
  ready = false;

  phase = "Pending";
  restarts = 0;
  hostName = "";
  startedAt: Timestamp | undefined = undefined;
  message = "";
  observedGeneration = 0n;
  exitCode = 0;

  /**
   * After a server restart: the host that ran it, and until when (ms) the scheduler waits for
   * that host to reconnect and resume it before running it elsewhere.
   */
  awaitHost = "";
  awaitUntil = 0;
  /** Consecutive exits without a healthy run, for the restart back-off. */
  failures = 0;
  /** When the current run started (ms), 0 when not running. */
  runningSince = 0;
  backoffTimer: NodeJS.Timeout | undefined = undefined;
  stopTimer: NodeJS.Timeout | undefined = undefined;

  lastFailureEventAt = 0;
  suppressedFailures = 0;

  statusDirty = false;
  statusWriting = false;

  constructor(
    readonly name: string,
    readonly uid: string,
    obj: Container,
  ) {
    this.spec = obj.spec!;
    this.generation = obj.metadata?.generation ?? 0n;
    this.labels = obj.metadata?.labels ?? {};
    this.kind = containerKind(this.spec);
    this.concurrency = DEFAULT_CONCURRENCY;
    this.queueLimit = DEFAULT_QUEUE_LIMIT;
    this.applySpec(obj);
  }

  /** Takes the spec, labels and generation of a stored object. */
  applySpec(obj: Container): void {
    this.spec = obj.spec!;
    this.generation = obj.metadata?.generation ?? 0n;
    this.labels = obj.metadata?.labels ?? {};
    this.kind = containerKind(this.spec);
    this.concurrency = this.spec.concurrency > 0 ? this.spec.concurrency : DEFAULT_CONCURRENCY;
    this.queueLimit = this.spec.queueLimit > 0 ? this.spec.queueLimit : DEFAULT_QUEUE_LIMIT;
  }

  /** The session deliveries go to right now, if the container can take them. */
  serving(): WorkerLink | undefined {
    if (!this.ready) return undefined;
    return this.kind === "module" ? this.host : this.attached;
  }

  /** Whether the container should take deliveries, from its current state. */
  computeReady(): boolean {
    if (this.deleting || this.stopping || this.terminal) return false;
    if (this.kind === "module") return !!this.host && this.started && !this.host.closed;
    return !!this.attached && !this.attached.closed;
  }

  /** Grace for a Stop, in ms. */
  graceMs(): number {
    const s = this.spec.terminationGraceSeconds > 0 ? this.spec.terminationGraceSeconds : DEFAULT_GRACE_SECONDS;
    return s * 1000;
  }
}
