/**
 * The server's end of one WorkerService.Connect stream (a "link"; "session" is the client's
 * word for its end): who is on the other end (a worker host, a calling client, or a process
 * attached to one container), what it serves, its unanswered calls, and its outgoing frames,
 * coalesced into one ConnectResponse per tick.
 */
import type { ConnectError } from "@connectrpc/connect";
import type { ServerFrame } from "../../gen/k4s/v1/worker_service_pb.js";
import { formatBytes } from "../../api/byte-size.js";
import { batchSpan, frameBytes } from "../../transport/frame-batch.js";
import { MAX_BATCH_BYTES } from "../../transport/limits.js";
import type { Caller } from "./envelope.js";
import type { Letter, Mailbox } from "./mailbox.js";

/** Who is on the other end of a link. */
export type LinkRole = "host" | "client" | "attached";

/** Frames a link may have queued for a peer that does not read before it is cut off. */
export const MAX_QUEUED_FRAMES = 100_000;

/**
 * Bytes of queued frames past which a link is congested: deliveries wait in their inboxes
 * rather than on a stream whose peer reads slower than they come.
 */
export const CONGESTED_BYTES = MAX_BATCH_BYTES;

/**
 * Default bytes of frames (payloads plus a fixed overhead each) a link may hold unread, queued or
 * handed to its stream and not yet written to the peer, before it is cut off: 64 MiB, room for
 * four of the largest messages.
 */
export const DEFAULT_SESSION_BUFFER_BYTES = 64 * 1024 * 1024;

/**
 * A batch of frames next() took for one stream message, with their bytes as counted when they
 * were queued (so the stream and written() need not size each frame again).
 */
export interface LinkBatch {
  readonly frames: ServerFrame[];
  readonly bytes: number;
}

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
  /** The server whose peer session this is, proven by its peer credential ("" for any other session). */
  peer?: string;
  /**
   * Bytes of unread frames (queued, or taken and not yet written: see written()) past which the
   * peer counts as not reading (default DEFAULT_SESSION_BUFFER_BYTES). One frame larger than
   * this still goes when nothing else is unread.
   */
  maxQueuedBytes?: number;
  /**
   * Called when the peer lets frames pile up beyond MAX_QUEUED_FRAMES or maxQueuedBytes; the
   * queued frames are dropped first (a peer that does not read would never take them).
   * `limit` names the bound it passed, for the error the peer gets.
   */
  onOverflow?: (link: WorkerLink, limit: string) => void;
  /** Called when the link stops being congested (its peer took what held deliveries back). */
  onDrained?: (link: WorkerLink) => void;
}

const EMPTY_BATCH: LinkBatch = { frames: [], bytes: 0 };

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
  /** The bytes of each queued frame (frameBytes, computed once in push). */
  private outSizes: number[] = [];
  private outBytes = 0;
  /** Frames (and their bytes) taken for the stream that it has not written to the peer yet. */
  private sendingFrames = 0;
  private sendingBytes = 0;
  private waiter: ((batch: LinkBatch | undefined) => void) | undefined = undefined;
  private wakeScheduled = false;
  private closeListeners: Array<(error: ConnectError | undefined) => void> = [];

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
  /**
   * The server of the cluster whose peer session this is ("" for any other session): set only
   * once its peer credential was verified, never from a name a client could choose.
   */
  readonly peer: string;
  /** Bytes of queued frames past which the peer counts as not reading. */
  readonly maxQueuedBytes: number;
  private readonly onOverflow: (link: WorkerLink, limit: string) => void;
  private readonly onDrained: (link: WorkerLink) => void;

  constructor(init: WorkerLinkInit) {
    this.id = init.id;
    this.name = init.name;
    this.role = init.role;
    this.modules = init.modules ?? new Set();
    this.capacity = init.capacity ?? 0;
    this.canSpawn = init.canSpawn ?? false;
    this.container = init.container ?? "";
    this.proven = init.proven ?? false;
    this.peer = init.peer ?? "";
    this.maxQueuedBytes = init.maxQueuedBytes ?? DEFAULT_SESSION_BUFFER_BYTES;
    this.onOverflow = init.onOverflow ?? (() => {});
    this.onDrained = init.onDrained ?? (() => {});
  }

  /** Frames waiting to be written. */
  get queued(): number {
    return this.out.length;
  }

  /**
   * Bytes of the frames the peer has not read (payloads plus a fixed overhead per frame): those
   * queued, and those taken for the stream that it has not written yet.
   */
  get queuedBytes(): number {
    return this.outBytes + this.sendingBytes;
  }

  /** Whether deliveries should wait: CONGESTED_BYTES or more are unread. */
  get congested(): boolean {
    return this.queuedBytes >= CONGESTED_BYTES;
  }

  /** Queues a frame; frames queued in one tick leave together in one ConnectResponse. */
  push(frame: ServerFrame): void {
    if (this.closed) return;
    const size = frameBytes(frame);
    this.out.push(frame);
    this.outSizes.push(size);
    this.outBytes += size;
    if (this.out.length > MAX_QUEUED_FRAMES || (this.queuedBytes > this.maxQueuedBytes && this.out.length + this.sendingFrames > 1)) {
      const limit =
        this.out.length > MAX_QUEUED_FRAMES
          ? `more than ${MAX_QUEUED_FRAMES} frames queued`
          : `more than ${formatBytes(this.maxQueuedBytes)} of frames queued (the server's maxSessionBufferBytes, ${this.maxQueuedBytes} bytes)`;
      this.out = [];
      this.outSizes = [];
      this.outBytes = 0;
      this.onOverflow(this, limit);
      return;
    }
    if (this.waiter && !this.wakeScheduled) {
      this.wakeScheduled = true;
      setImmediate(this.wake);
    }
  }

  /** Resolves with the next batch of frames, or undefined once the session is closed and flushed. */
  next(): Promise<LinkBatch | undefined> {
    if (this.out.length > 0) return Promise.resolve(this.take());
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /**
   * The stream wrote a batch that next() returned to the peer (into its HTTP/2 flow-control
   * window): those frames stop counting as unread. Until then they count, so a peer that does
   * not read is measured by everything the server holds for it, whatever the transport buffers.
   */
  written(batch: LinkBatch): void {
    const wasCongested = this.congested;
    this.sendingFrames -= batch.frames.length;
    this.sendingBytes -= batch.bytes;
    if (wasCongested && !this.congested && !this.closed) this.onDrained(this);
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
    const listeners = this.closeListeners;
    this.closeListeners = [];
    for (const listener of listeners) listener(error);
  }

  /** Calls `listener` with the link's close error (undefined: ended cleanly) once it is closed. */
  onClose(listener: (error: ConnectError | undefined) => void): void {
    if (this.closed) listener(this.closeError);
    else this.closeListeners.push(listener);
  }

  /** Takes the next batch: it counts as unread until the stream says it was written. */
  private take(): LinkBatch {
    const out = this.out;
    const sizes = this.outSizes;
    this.lastSent = Date.now();
    const { end: n, bytes } = batchSpan(out.length, 0, (i) => sizes[i]!);
    let frames = out;
    if (n === out.length) {
      this.out = [];
      this.outSizes = [];
      this.outBytes = 0;
    } else {
      // The rest goes in the next response: next() finds it queued and returns it at once.
      frames = out.slice(0, n);
      this.out = out.slice(n);
      this.outSizes = sizes.slice(n);
      this.outBytes -= bytes;
    }
    this.sendingFrames += n;
    this.sendingBytes += bytes;
    return { frames, bytes };
  }

  private readonly wake = () => {
    this.wakeScheduled = false;
    const w = this.waiter;
    if (!w) return;
    this.waiter = undefined;
    w(this.out.length > 0 ? this.take() : this.closed ? undefined : EMPTY_BATCH);
  };
}
