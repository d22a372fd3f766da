/**
 * The lifecycle controller's record of one Container: what it was told (spec, generation,
 * deletion), where it runs now (its state, an explicit union), what its host last reported,
 * and the status it reports. The stored object is the desired state; this is what is happening.
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Container, ContainerSpec } from "../../gen/k4s/v1/resources_pb.js";
import type { WorkerLink } from "../messaging/worker-link.js";

/** How a container runs: a module function in a host, a spawned command, or an external process. */
export type ContainerKind = "module" | "command" | "external";

/** Default grace a stopping container gets, in seconds. */
export const DEFAULT_GRACE_SECONDS = 5;

/** Returns how a container spec runs. */
export function containerKind(spec: ContainerSpec | undefined): ContainerKind {
  if (spec && spec.command.length > 0) return "command";
  if (spec && spec.module !== "") return "module";
  return "external";
}

/**
 * ContainerState is where a container is in its lifecycle. Module and command containers go
 * Unscheduled → Starting → Running, and on to Stopping, BackOff or Ended; external ones are
 * Unattached or Attached. Deleted ones drain and end Finalizing.
 */
export type ContainerState =
  /** Needs a host; the scheduler binds it to one. */
  | { is: "Unscheduled" }
  /**
   * After a server restart (or, in a cluster, its host's server's loss): the host that ran it may
   * reconnect and resume it until `until`; for an external container, the process (named `host`)
   * may attach again. `ran`: its stored status showed it Running there, so running it anywhere
   * else afterwards is a restart (false for a binding its host never started).
   */
  | { is: "AwaitingHost"; host: string; until: number; ran: boolean }
  /** Assigned to a host, which has not reported it running yet. */
  | { is: "Starting"; host: WorkerLink }
  /** Its host runs it (since `since`, ms). */
  | { is: "Running"; host: WorkerLink; since: number }
  /** A Stop was sent; the host has until `until` to report it stopped. */
  | { is: "Stopping"; host: WorkerLink; until: number }
  /** It exited and restarts at `until`. */
  | { is: "BackOff"; until: number }
  /** It exited for good (its restart policy says so). */
  | { is: "Ended"; phase: "Succeeded" | "Failed" }
  /** An external container no process serves. */
  | { is: "Unattached" }
  /** An external container a process serves (since `since`, ms). */
  | { is: "Attached"; since: number }
  /** Deleted while a process is attached: in-flight messages finish until `until`. */
  | { is: "Draining"; until: number }
  /** Deleted, nothing runs: removed from the store. */
  | { is: "Finalizing" };

/** HostReport is a state a host reported for the container it runs. */
export interface HostReport {
  /** The stream it came on: a report from another host than the container's is stale. */
  host: WorkerLink;
  phase: "Running" | "Stopped" | "Succeeded" | "Failed";
  message: string;
  exitCode: number;
}

/** ContainerRecord is what the lifecycle knows of one container. */
export class ContainerRecord {
  spec: ContainerSpec;
  /** The generation last taken from the store. */
  generation: bigint;
  kind: ContainerKind;
  /** Marked for deletion (metadata.deletionTimestamp). */
  deleting = false;
  state: ContainerState = { is: "Unscheduled" };
  /** What its host reported and the lifecycle has not acted on yet, oldest first. */
  reports: HostReport[] = [];
  /** The process attached to it (command and external containers). */
  attached: WorkerLink | undefined = undefined;
  /** The attached process the lifecycle last acted on (a new one is announced once). */
  attachSeen: WorkerLink | undefined = undefined;
  /** Token of the current Assign (command containers attach with it). */
  token = "";
  /** The generation its host was assigned. */
  runGeneration = 0n;
  /** Consecutive exits without a healthy run, for the restart back-off. */
  failures = 0;
  /** finalize() is on its way. */
  finalizing = false;
  /** The generation the lifecycle last acted on (a newer one restarts the container with it). */
  actedGeneration: bigint;

  /** The host of a stored binding it already waited the resume grace for (see bindStored). */
  awaitedBinding = "";
  /** The phase its stored status shows (status.phase in the store, as last read). */
  storedPhase = "";
  restarts = 0;
  hostName = "";
  startedAt: Timestamp | undefined = undefined;
  message = "";
  observedGeneration = 0n;
  exitCode = 0;

  constructor(
    readonly name: string,
    readonly uid: string,
    obj: Container,
  ) {
    this.spec = obj.spec!;
    this.generation = obj.metadata?.generation ?? 0n;
    this.kind = containerKind(this.spec);
    this.actedGeneration = this.generation;
    const st = obj.status;
    if (st) {
      this.restarts = st.restarts;
      this.startedAt = st.startedAt;
      this.exitCode = st.exitCode;
      this.observedGeneration = st.observedGeneration;
      this.storedPhase = st.phase;
    }
  }

  /** The host it is bound to, in the states that have one. */
  get host(): WorkerLink | undefined {
    const s = this.state;
    return s.is === "Starting" || s.is === "Running" || s.is === "Stopping" ? s.host : undefined;
  }

  /** The phase it reports (status.phase). */
  phase(): string {
    const s = this.state;
    if (this.deleting) return "Terminating";
    if (s.is === "Ended") return s.phase;
    return s.is === "Running" || s.is === "Stopping" || s.is === "Attached" ? "Running" : "Pending";
  }

  /** Whether it takes deliveries: its worker runs, is connected, and is not stopping. */
  ready(): boolean {
    if (this.deleting) return false;
    const s = this.state;
    if (this.kind === "module") return s.is === "Running" && !s.host.closed;
    const link = this.attached;
    if (!link || link.closed) return false;
    return this.kind === "external" || s.is === "Starting" || s.is === "Running";
  }

  /** The stream its deliveries go to: its host's for a module, else its attached process's. */
  deliveryLink(): WorkerLink | undefined {
    return this.kind === "module" ? this.host : this.attached;
  }

  /** Grace for a Stop, in ms. */
  graceMs(): number {
    const s = this.spec.terminationGraceSeconds > 0 ? this.spec.terminationGraceSeconds : DEFAULT_GRACE_SECONDS;
    return s * 1000;
  }
}

/** The host a container's stored status binds it to before it started: Pending on a host ("" when none). */
export function storedBinding(obj: Container | undefined): string {
  const st = obj?.status;
  return st && st.phase === "Pending" && !obj.metadata?.deletionTimestamp ? st.host : "";
}
