/**
 * Where an envelope goes: into a container's inbox, or through a service to one of its ready
 * endpoints, waiting (bounded) at the service while none is ready; and how envelopes move on
 * when a container stops taking them (rerouted to other endpoints, or failed).
 */
import { Code } from "@connectrpc/connect";
import type { Answers } from "./answers.js";
import type { DeadlineQueue } from "./deadline-queue.js";
import type { Deliveries } from "./deliveries.js";
import { isReady, type Directory } from "./directory.js";
import { EnvelopeState } from "./envelope.js";
import { DEFAULT_INBOX_BYTES, overBytes, type Letter, type Mailbox } from "./mailbox.js";
import type { SendJournal } from "./send-journal.js";
import { MAX_SERVICE_WAITERS, type ServiceRoute } from "./service-route.js";

/** How long a send waits for a service endpoint before it is refused (ms). */
export const SEND_ENDPOINT_WAIT_MS = 30_000;

/** ServiceRouting places envelopes in mailboxes, directly or through services. */
export interface ServiceRouting {
  /** Queues an envelope at a container, or refuses it (full inbox, ended, being deleted). */
  toContainer(env: Letter, m: Mailbox): void;
  /** Queues an envelope at a ready endpoint of a service, or lets it wait for one. */
  toService(env: Letter, s: ServiceRoute): void;
  /**
   * Moves the messages that came through a service out of a mailbox to other endpoints: all
   * of them (`force`: the container takes no more), or only while another endpoint is ready.
   */
  reroute(m: Mailbox, force: boolean): void;
  /** Fails the requests waiting in a mailbox with UNAVAILABLE. */
  failQueuedRequests(m: Mailbox, message: string): void;
  /**
   * Empties a forgotten mailbox: its messages go to other endpoints of their service, or fail.
   * Returns how many sends it had already accepted found nowhere to go (their senders were
   * answered when they were queued, so only the caller can still tell of them).
   */
  empty(m: Mailbox, message: string): number;
  /** Fails the calls waiting for a forgotten service. */
  dropService(s: ServiceRoute): void;
  /** Readiness, labels or the set of containers or services changed: waiting calls may move. */
  topologyChanged(): void;
}

/** ServiceRoutingOptions are the parts of the router that routing works with. */
export interface ServiceRoutingOptions {
  directory: Directory;
  deadlines: DeadlineQueue<Letter>;
  answers: Answers;
  deliveries: Deliveries;
  /** Where sends to durable containers are written before they are accepted. */
  journal?: SendJournal;
  /** Payload bytes one inbox, or one service's queue of waiting calls, holds (default 64 MiB). */
  maxInboxBytes?: number;
}

/** Creates the placing of envelopes over a directory. */
export function createServiceRouting(options: ServiceRoutingOptions): ServiceRouting {
  const { directory, deadlines, answers, deliveries, journal } = options;
  const maxBytes = options.maxInboxBytes ?? DEFAULT_INBOX_BYTES;
  let drainScheduled = false;

  // Every call refused here is one no worker had (a request delivered once is failed by the deliveries).
  const refuse = (env: Letter, code: Code, message: string, container = "") => {
    env.state = EnvelopeState.Done;
    deadlines.remove(env);
    answers.refuse(env, code, message, container);
  };
  const fail = (env: Letter, message: string, container = "") => refuse(env, Code.Unavailable, message, container);

  function handOver(m: Mailbox, env: Letter) {
    journal?.release(env.journalKey!);
    env.state = EnvelopeState.Done;
    answers.accept(env, m.name);
  }

  function enqueue(m: Mailbox, env: Letter) {
    if (journal && m.durable && !env.expectsReply && !env.journalKey) return journalFirst(m, env, { journal, directory, deadlines, refuse, enqueue, again, handOver });
    env.mailbox = m;
    env.state = EnvelopeState.Queued;
    m.inbox.push(env);
    if (!env.expectsReply && !env.answered) {
      // A send is accepted once queued; from here on only the worker's ack settles it.
      deadlines.remove(env);
      env.deadline = 0;
      answers.accept(env, m.name);
    }
    deliveries.pump(m);
  }

  function toContainer(env: Letter, m: Mailbox) {
    const no = m.refuses(env, maxBytes);
    if (!no) return enqueue(m, env);
    refuse(env, no[0], no[1]);
  }

  function toService(env: Letter, s: ServiceRoute) {
    env.service = s.name;
    const eps = directory.endpointsOf(s);
    if (eps.length > 0) {
      const first = s.pick(eps);
      let lastRefusal: [Code, string] | undefined;
      for (let i = 0; i < eps.length; i++) {
        const m = eps[(first + i) % eps.length]!;
        lastRefusal = m.refuses(env, maxBytes);
        if (!lastRefusal) return enqueue(m, env);
      }
      // An accepted send must not be lost: it waits at the service instead.
      if (!env.answered) {
        const message = eps.length === 1 ? lastRefusal![1] : `every endpoint of service "${s.name}" has a full inbox (${eps.length} endpoints)`;
        return refuse(env, Code.ResourceExhausted, message);
      }
    }
    const full =
      s.waiters.live >= MAX_SERVICE_WAITERS
        ? `too many calls wait for an endpoint of service "${s.name}" (limit ${MAX_SERVICE_WAITERS})`
        : overBytes(`the queue of calls waiting for an endpoint of service "${s.name}"`, s.waiters.live, s.waiters.bytes, env.data.byteLength, maxBytes);
    if (full !== undefined && !env.answered) {
      return refuse(env, Code.ResourceExhausted, full);
    }
    env.state = EnvelopeState.Waiting;
    env.mailbox = undefined;
    s.waiters.push(env);
    if (!env.expectsReply && !env.answered) {
      const limit = Date.now() + SEND_ENDPOINT_WAIT_MS;
      env.deadline = env.deadline > 0 ? Math.min(env.deadline, limit) : limit;
      deadlines.add(env);
    }
  }

  function drainWaiters() {
    drainScheduled = false;
    for (const s of directory.services()) {
      if (s.waiters.live === 0 || directory.endpointsOf(s).length === 0) continue;
      for (const env of s.waiters.drain()) {
        env.state = EnvelopeState.New;
        toService(env, s);
      }
    }
  }

  /** Sends an envelope taken out of a mailbox through its service again (true), or fails it (false). */
  function again(env: Letter, orFail: string, container: string): boolean {
    const s = env.service ? directory.service(env.service) : undefined;
    if (!s) {
      fail(env, orFail, container);
      return false;
    }
    env.state = EnvelopeState.New;
    env.mailbox = undefined;
    toService(env, s);
    return true;
  }

  return {
    toContainer,
    toService,
    reroute(m, force) {
      const moved = m.inbox.extract((env) => {
        if (!env.service) return false;
        if (force) return true;
        const s = directory.service(env.service);
        return !!s && directory.endpointsOf(s).some((e) => e !== m);
      });
      for (const env of moved) again(env, `service "${env.service}" was deleted`, m.name);
    },
    failQueuedRequests(m, message) {
      for (const env of m.inbox.extract((e) => e.expectsReply)) fail(env, message, m.name);
    },
    empty(m, message) {
      m.ready = false;
      // Delivered once already: at most once means a request fails rather than runs again.
      deliveries.release(m, "was deleted");
      let dropped = 0;
      for (const env of m.inbox.drain()) {
        const accepted = env.answered && !env.expectsReply;
        if (!again(env, message, m.name) && accepted) dropped++;
      }
      drainWaiters();
      return dropped;
    },
    dropService(s) {
      for (const env of s.waiters.drain()) fail(env, `service "${s.name}" was deleted`);
    },
    topologyChanged() {
      directory.topologyChanged();
      if (!drainScheduled) {
        drainScheduled = true;
        setImmediate(drainWaiters);
      }
    },
  };
}

/** What journalFirst works with: the router's parts, and where a journaled send goes next. */
interface JournalContext {
  journal: SendJournal;
  directory: Directory;
  deadlines: DeadlineQueue<Letter>;
  refuse(env: Letter, code: Code, message: string, container?: string): void;
  /** Queues the send at its container, now that it is journaled. */
  enqueue(m: Mailbox, env: Letter): void;
  /** Sends it through its service again (its container went), or fails it. */
  again(env: Letter, orFail: string, container: string): void;
  /** Accepts it without queueing it: its journal entry is released to the server holding its container now. */
  handOver(m: Mailbox, env: Letter): void;
}

/**
 * A send to a durable container is accepted (and delivered) only once it is in the store.
 * Through a service it is journaled against the service, so that after a restart it goes to
 * whichever endpoint is ready then; sent to the container itself, against the container.
 */
function journalFirst(m: Mailbox, env: Letter, ctx: JournalContext): void {
  const { journal, directory, deadlines } = ctx;
  const s = env.service ? directory.service(env.service) : undefined;
  const owner = s ?? m;
  const what = s ? `service "${s.name}"` : `container "${m.name}"`;
  const full = journal.refuses(owner.uid, env.data.byteLength, what);
  if (full) return ctx.refuse(env, Code.ResourceExhausted, full);
  deadlines.remove(env);
  env.deadline = 0;
  env.mailbox = m;
  const entry = { data: env.data, contentType: env.contentType, sender: env.sender, service: s ? s.name : "" };
  const letGoes = m.letGoes;
  journal.append(owner.uid, entry).then(
    (key) => {
      env.journalKey = key;
      // Given up on while it was written (its caller went): never accepted, so never delivered,
      // not after a restart either, and not counted against the journal's bounds.
      if (env.state === EnvelopeState.Done) return journal.remove(key);
      const still = directory.mailbox(m.name) === m;
      // Through a service it goes to an endpoint that is ready now: the one picked may have
      // stopped being ready, or gone, while the send was written.
      if (s) return still && isReady(m) ? ctx.enqueue(m, env) : ctx.again(env, `service "${s.name}" was deleted`, m.name);
      // Another server took the container over while it was written: that server reads it back.
      if (still && m.letGoes !== letGoes) return ctx.handOver(m, env);
      if (still) return ctx.enqueue(m, env);
      ctx.refuse(env, Code.Unavailable, `container "${m.name}" was deleted`, m.name);
    },
    (err: unknown) => {
      if (env.state === EnvelopeState.Done) return;
      ctx.refuse(env, Code.Unavailable, `could not write the send to the journal of ${what}: ${err instanceof Error ? err.message : String(err)}`, m.name);
    },
  );
}
