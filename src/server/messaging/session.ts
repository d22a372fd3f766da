/**
 * One WorkerService.Connect stream seen from the server: who is on the other end (a worker
 * host, a calling client, or a process attached to one container), what it serves, its
 * unanswered calls, and its outgoing frames, coalesced into one ConnectResponse per tick.
 */
import type { ConnectError } from "@connectrpc/connect";
import type { ServerFrame } from "../../gen/k4s/v1/worker_service_pb.js";
import type { ContainerRuntime } from "./container-runtime.js";
import type { Envelope } from "./envelope.js";

/** The kinds of sessions. */
export type SessionRole = "host" | "client" | "attached";

/** Frames a session may have queued for a peer that does not read before it is cut off. */
export const MAX_QUEUED_FRAMES = 100_000;

/**
 * Payload bytes one ConnectResponse carries before the rest of the queue goes in the next:
 * grpc clients refuse messages beyond their receive limit (4 MiB by default in grpcio and
 * grpc-js), so batching must never join frames that each fit into one that does not. A single
 * larger frame still goes, alone.
 */
export const MAX_BATCH_BYTES = 1024 * 1024;

/** Session is the lifecycle state of one worker stream. */
export class Session {
  /** Containers bound to this host. */
  readonly bound = new Set<ContainerRuntime>();
  /** The container an attached session serves. */
  attached: ContainerRuntime | undefined = undefined;
  /** This session's own requests not yet answered, by its call id. */
  readonly calls = new Map<bigint, Envelope>();
  lastReceived = Date.now();
  lastSent = Date.now();
  closed = false;
  /** Why the server ended the session (sent as the stream's status); undefined: ended cleanly. */
  closeError: ConnectError | undefined = undefined;
  private out: ServerFrame[] = [];
  private waiter: ((frames: ServerFrame[] | undefined) => void) | undefined = undefined;
  private wakeScheduled = false;

  constructor(
    readonly id: string,
    /** Registered name: the host name, or the attaching process's name. */
    readonly name: string,
    readonly role: SessionRole,
    /** Worker modules a host runs. */
    readonly modules: ReadonlySet<string> = new Set(),
    /** Containers a host runs at once (0: no limit). */
    readonly capacity = 0,
    readonly canSpawn = false,
    /** Called when the peer lets frames pile up beyond MAX_QUEUED_FRAMES. */
    private readonly onOverflow: (s: Session) => void = () => {},
  ) {}

  /** Frames waiting to be written. */
  get queued(): number {
    return this.out.length;
  }

  /** Whether a host may take one more container. */
  hasRoom(): boolean {
    return this.capacity <= 0 || this.bound.size < this.capacity;
  }

  /** Queues a frame; frames queued in one tick leave together in one ConnectResponse. */
  push(frame: ServerFrame): void {
    if (this.closed) return;
    this.out.push(frame);
    if (this.out.length > MAX_QUEUED_FRAMES) {
      this.onOverflow(this);
      return;
    }
    if (this.waiter && !this.wakeScheduled) {
      this.wakeScheduled = true;
      setImmediate(this.wake);
    }
  }

  /** Resolves with the next batch of frames, or undefined once the session is closed and flushed. */
  next(): Promise<ServerFrame[] | undefined> {
    if (this.out.length > 0) return Promise.resolve(this.take());
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** Ends the session; frames already queued are still flushed before the stream ends. */
  close(error?: ConnectError): void {
    if (this.closed) return;
    this.closed = true;
    this.closeError = error;
    if (this.waiter && !this.wakeScheduled) {
      this.wakeScheduled = true;
      setImmediate(this.wake);
    }
  }

  private take(): ServerFrame[] {
    const out = this.out;
    this.lastSent = Date.now();
    let bytes = 0;
    let n = 0;
    for (; n < out.length; n++) {
      const v = out[n]!.frame.value as { data?: Uint8Array } | undefined;
      bytes += 32 + (v?.data ? v.data.byteLength : 0);
      if (bytes > MAX_BATCH_BYTES && n > 0) break;
    }
    if (n === out.length) {
      this.out = [];
      return out;
    }
    // The rest goes in the next response: next() finds it queued and returns it at once.
    this.out = out.slice(n);
    return out.slice(0, n);
  }

  private readonly wake = () => {
    this.wakeScheduled = false;
    const w = this.waiter;
    if (!w) return;
    this.waiter = undefined;
    w(this.out.length > 0 ? this.take() : this.closed ? undefined : []);
  };
}
