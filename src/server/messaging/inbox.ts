/**
 * A FIFO of envelopes (a container's inbox, or a service's queue of calls waiting for an
 * endpoint): a growable ring buffer with O(1) push, push-front and shift. Envelopes abandoned
 * while queued (deadline, cancel) are skipped lazily instead of searched for.
 */
import { EnvelopeState } from "./envelope.js";

/** An item an inbox holds: an envelope, whose state tells whether it was abandoned. */
interface Queued {
  readonly state: number;
  /** Its payload, counted in the inbox's bytes. */
  readonly data: Uint8Array;
}

/** Inbox is a FIFO of envelopes with a live count and byte size that exclude abandoned ones. */
export class Inbox<T extends Queued> {
  private buf: (T | undefined)[] = new Array(16);
  private head = 0;
  private length = 0;
  /** Envelopes still waiting (abandoned ones excluded). */
  live = 0;
  /** Payload bytes of the envelopes still waiting. */
  bytes = 0;

  /** Appends an envelope. */
  push(env: T): void {
    if (this.length === this.buf.length) this.grow();
    this.buf[(this.head + this.length) & (this.buf.length - 1)] = env;
    this.length++;
    this.live++;
    this.bytes += env.data.byteLength;
  }

  /** Puts an envelope first (a redelivery goes before newer messages). */
  unshift(env: T): void {
    if (this.length === this.buf.length) this.grow();
    this.head = (this.head - 1) & (this.buf.length - 1);
    this.buf[this.head] = env;
    this.length++;
    this.live++;
    this.bytes += env.data.byteLength;
  }

  /** Takes the first envelope still waiting, skipping abandoned ones. */
  shift(): T | undefined {
    while (this.length > 0) {
      const env = this.buf[this.head]!;
      this.buf[this.head] = undefined;
      this.head = (this.head + 1) & (this.buf.length - 1);
      this.length--;
      if (env.state !== EnvelopeState.Done) {
        this.live--;
        this.bytes -= env.data.byteLength;
        return env;
      }
    }
    return undefined;
  }

  /**
   * Tells the inbox one of its envelopes was abandoned (its state is now Done); compacts when
   * abandoned entries outnumber live ones, so an inbox nobody drains stays bounded.
   */
  abandoned(env: T): void {
    this.live--;
    this.bytes -= env.data.byteLength;
    if (this.length > 64 && this.length > 2 * this.live) this.compact();
  }

  /** Removes and returns every waiting envelope, in order. */
  drain(): T[] {
    const out: T[] = [];
    for (let env = this.shift(); env; env = this.shift()) out.push(env);
    return out;
  }

  /** Removes the waiting envelopes for which pick returns true; returns them in order. */
  extract(pick: (env: T) => boolean): T[] {
    const taken: T[] = [];
    const kept: T[] = [];
    for (let env = this.shift(); env; env = this.shift()) (pick(env) ? taken : kept).push(env);
    for (const env of kept) this.push(env);
    return taken;
  }

  private compact(): void {
    const kept: T[] = [];
    for (let env = this.shift(); env; env = this.shift()) kept.push(env);
    this.live = 0;
    this.bytes = 0;
    for (const env of kept) this.push(env);
  }

  private grow(): void {
    const next: (T | undefined)[] = new Array(this.buf.length * 2);
    for (let i = 0; i < this.length; i++) next[i] = this.buf[(this.head + i) & (this.buf.length - 1)];
    this.buf = next;
    this.head = 0;
  }
}
