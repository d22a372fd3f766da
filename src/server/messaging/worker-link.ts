/**
 * The server's end of one WorkerService.Connect stream (a "link"; "session" is the client's
 * word for its end): who is on the other end (a worker host, a calling client, or a process
 * attached to one container), what it serves, its unanswered calls, and its outgoing frames,
 * coalesced into one ConnectResponse per tick.
 */
import type { ConnectError } from "@connectrpc/connect";
import type { ServerFrame } from "../../gen/k4s/v1/worker_service_pb.js";
import { batchEnd } from "../../transport/frame-batch.js";
import type { Caller } from "./envelope.js";
import type { Letter, Mailbox } from "./mailbox.js";

/** Who is on the other end of a link. */
export type LinkRole = "host" | "client" | "attached";

/** Frames a link may have queued for a peer that does not read before it is cut off. */
export const MAX_QUEUED_FRAMES = 100_000;

/** WorkerLinkInit describes a new link. */
export interface WorkerLinkInit {
  id: string;
  name: string;
  role: LinkRole;
  modules?: ReadonlySet<string>;
  capacity?: number;
  canSpawn?: boolean;
  container?: string;
  /** A host that showed the credential of its name. */
  proven?: boolean;
  /** Called when the peer lets frames pile up beyond MAX_QUEUED_FRAMES. */
  onOverflow?: (link: WorkerLink) => void;
}

/** WorkerLink is the server's end of one worker stream, with its lifecycle state. */
export class WorkerLink implements Caller<Mailbox> {
  /** This link's own requests not yet answered, by its call id. */
  readonly calls = new Map<bigint, Letter>();
  lastReceived = Date.now();
  lastSent = Date.now();
  closed = false;
  /** Why the server ended the link (sent as the stream's status); undefined: ended cleanly. */
  closeError: ConnectError | undefined = undefined;
  private out: ServerFrame[] = [];
  private waiter: ((frames: ServerFrame[] | undefined) => void) | undefined = undefined;
  private wakeScheduled = false;

  readonly id: string;
  /** Registered name: the host name, or the attaching process's name. */
  readonly name: string;
  readonly role: LinkRole;
  /** Worker modules a host runs. */
  readonly modules: ReadonlySet<string>;
  /** Containers a host runs at once (0: no limit). */
  readonly capacity: number;
  /** Whether a host spawns command containers. */
  readonly canSpawn: boolean;
  /** The container an attached link serves ("" for hosts and clients). */
  readonly container: string;
  /**
   * A host that showed the credential of its name on connect (Hello.credential): it may take
   * over its own live session and resume the containers that waited for its name.
   */
  readonly proven: boolean;
  private readonly onOverflow: (link: WorkerLink) => void;

  constructor(init: WorkerLinkInit) {
    this.id = init.id;
    this.name = init.name;
    this.role = init.role;
    this.modules = init.modules ?? new Set();
    this.capacity = init.capacity ?? 0;
    this.canSpawn = init.canSpawn ?? false;
    this.container = init.container ?? "";
    this.proven = init.proven ?? false;
    this.onOverflow = init.onOverflow ?? (() => {});
  }

  /** Frames waiting to be written. */
  get queued(): number {
    return this.out.length;
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
    const n = batchEnd(out);
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
