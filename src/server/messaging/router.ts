/**
 * The router: resolves targets, picks service endpoints, keeps container mailboxes (FIFO,
 * bounded, at most `concurrency` unsettled deliveries), settles deliveries, and enforces
 * deadlines with one timer. Everything here is synchronous and in memory; payload bytes pass
 * through untouched. Other components change its state only through the Router interface:
 * the messaging plane feeds it the stored Containers and Services, the lifecycle controller
 * says where each container's worker is (setAvailability), the stream handlers route and settle.
 */
import { Code } from "@connectrpc/connect";
import type { Target } from "../../api/target.js";
import type { Container, Service } from "../../gen/k4s/v1/resources_pb.js";
import type { DeliveryResult } from "../../gen/k4s/v1/worker_service_pb.js";
import type { EventRecorder } from "../event-recorder.js";
import type { Metrics } from "../metrics.js";
import type { LoadCounters } from "../stats/load-counters.js";
import { createAnswers, type Answers } from "./answers.js";
import { createCancellation } from "./cancellation.js";
import { createDeadlineQueue, type DeadlineQueue } from "./deadline-queue.js";
import { createDeliveries, type Deliveries } from "./deliveries.js";
import { createDirectory, isReady, type Directory } from "./directory.js";
import { Envelope, EnvelopeState, type FrameSink } from "./envelope.js";
import { Mailbox, type Availability, type Letter } from "./mailbox.js";
import type { RecoveredEntry, SendJournal } from "./send-journal.js";
import type { ServiceRoute } from "./service-route.js";
import { createServiceRouting, type ServiceRouting } from "./service-routing.js";

/** RouterOptions are the router's dependencies. */
export interface RouterOptions {
  events: EventRecorder;
  /**
   * Looks a target up in the store when the router does not know it yet (a watch event may
   * trail a write the caller already saw); resolves once any object found was handed to the
   * router (upsertContainer / upsertService).
   */
  lookup?: (target: Target) => Promise<void>;
  metrics?: Metrics;
  /** Count each container's settled messages and their latency for the live stats (default true). */
  countLoad?: boolean;
  /** Where sends to durable containers are written before they are accepted (none: kept in memory only). */
  journal?: SendJournal;
  /** Payload bytes one inbox, or one service's queue of waiting calls, holds (default 64 MiB). */
  maxInboxBytes?: number;
}

/** MailboxLoad is what waits at one container and what its worker has in hand. */
export interface MailboxLoad {
  name: string;
  queued: number;
  inFlight: number;
  ready: boolean;
  /** What it settled since it was created, with latencies (the live stats read it). */
  counters: LoadCounters;
}

/**
 * How a stopping server's refusal of a call no worker had says so ("server X is stopping and
 * ..."): the call may go to another server, even a request.
 */
export const NOT_TAKEN_STOPPING = "is stopping and did not take this call";

/** Router moves envelopes from callers to workers and answers back. */
export interface Router {
  /** Routes a new envelope; requests must have their deadline set. */
  route(env: Letter, target: Target): void;
  /** Settles a delivery with the worker's result; unknown or late results are dropped. */
  settle(link: FrameSink, result: DeliveryResult): void;
  /** Gives up on an envelope (cancel, deadline, caller gone), answering code/message unless 0. */
  abandon(env: Letter, code: Code | 0, message: string): void;
  /** The delivery a stream is handling, for nested calls. */
  inflightOf(link: FrameSink, deliveryId: number): Letter | undefined;
  /** A stored Container appeared or changed: its mailbox exists from now on. */
  upsertContainer(obj: Container): void;
  /** A Container was deleted: its messages fail or go to other endpoints of their service. */
  removeContainer(name: string, uid: string): void;
  /** A stored Service appeared or changed. */
  upsertService(obj: Service): void;
  /** A Service was deleted: calls waiting for it fail. */
  removeService(name: string, uid: string): void;
  /** Where a container's deliveries go and which messages it takes (a level: repeating it is a no-op). */
  setAvailability(name: string, availability: Availability): void;
  /**
   * A container's worker lost what it had in flight (it exited, stopped, or its stream was
   * replaced): unsettled requests fail with UNAVAILABLE, unsettled sends go back to its inbox.
   */
  release(name: string, why: string): void;
  /** A stream died (`what`: e.g. `its host "h1"`): what was in flight on it is released. */
  linkLost(link: FrameSink, what: string): void;
  /** A congested stream drained: the containers it serves get their waiting messages. */
  linkDrained(link: FrameSink): void;
  /** What waits at a container and what its worker has in hand. */
  load(name: string): MailboxLoad | undefined;
  /** The load of every container. */
  loads(): Iterable<MailboxLoad>;
  /** Every service with the endpoints its controller published. */
  services(): Iterable<{ name: string; endpoints: readonly string[] }>;
  /** Calls listener when a container has no unsettled delivery left (a draining stop may finish). */
  onIdle(listener: (container: string) => void): void;
  /**
   * Hands back durable sends an earlier server run journaled and did not settle: to the front of
   * the container's inbox, or through the service. False when that very object (uid) is unknown.
   */
  restore(kind: "container" | "service", name: string, uid: string, entries: readonly RecoveredEntry[]): boolean;
  /**
   * This server let go of a container (another server holds it now): takes out, in order, what
   * waits in its inbox (queued, or handed back by its worker), New again, for the caller to route
   * anew. What its worker has in flight is not taken (release() it first).
   */
  takeBack(name: string): Letter[];
  /** The services that calls wait for here (no endpoint of theirs ready here took them). */
  waitingServices(): string[];
  /**
   * Takes out, in order, the calls waiting here for an endpoint of a service, New again, for the
   * caller to route anew (in a cluster: to the service's endpoints on other servers).
   */
  takeWaiting(service: string): Letter[];
  /** Whether a target names a container or service the router knows. */
  knows(target: Target): boolean;
  /** Fails every waiting call with UNAVAILABLE and disarms the deadline timer. */
  stop(message: string): void;
}

/**
 * CallRouter is what the stream and unary handlers need of a router: routing calls, settling
 * and cancelling them. A standby server's peer forwarder is one too.
 */
export type CallRouter = Pick<Router, "route" | "settle" | "abandon" | "inflightOf" | "knows">;

/** Creates the router. */
export function createRouter(options: RouterOptions): Router {
  const directory = createDirectory();
  // Expired envelopes are given up on (the cancellation is made below, with what it needs).
  const deadlines = createDeadlineQueue<Letter>((env) => cancellation.expire(env));
  const answers = createAnswers({ deadlines, metrics: options.metrics, journal: options.journal });
  const idleListeners: Array<(container: string) => void> = [];
  const countLoad = options.countLoad ?? true;
  const deliveries = createDeliveries({
    answers,
    events: options.events,
    metrics: options.metrics,
    countLoad,
    journal: options.journal,
    onIdle: (m) => idleListeners.forEach((l) => l(m.name)),
  });
  const services = createServiceRouting({ directory, deadlines, answers, deliveries, journal: options.journal, maxInboxBytes: options.maxInboxBytes });
  const cancellation = createCancellation({ directory, deadlines, answers, deliveries });
  const abandon = cancellation.abandon;
  const stranded = new Set<Mailbox>();
  const emptied = (m: Mailbox) => emptyMailbox(m, services, options.events);

  const availability: AvailabilityContext = { services, deliveries, stranded };
  const setAvailability = (m: Mailbox, a: Availability) => applyAvailability(m, a, availability);
  // Requests are timed for the latency histogram, every message for the live stats.
  const timed = !!options.metrics?.requestSeconds || countLoad;
  let stopped = false;

  function refuse(env: Letter, code: Code, message: string) {
    deadlines.remove(env);
    env.state = EnvelopeState.Done;
    answers.refuse(env, code, message);
  }

  function resolveAndRoute(env: Letter, target: Target): boolean {
    const to = directory.resolve(target);
    if (!to) return false;
    if ("inbox" in to) services.toContainer(env, to);
    else services.toService(env, to);
    return true;
  }

  return {
    route(env, target) {
      if (env.expectsReply && env.deadline > 0) deadlines.add(env);
      if (timed) env.started = performance.now();
      if (stopped) return refuse(env, Code.Unavailable, `server ${NOT_TAKEN_STOPPING}`);
      if (resolveAndRoute(env, target)) return;
      if (!options.lookup) return refuse(env, Code.NotFound, notFound(target));
      routeAfterLookup(env, target, options.lookup(target), resolveAndRoute, refuse);
    },
    settle: deliveries.settle,
    abandon,
    inflightOf: deliveries.inflightOf,
    upsertContainer(obj) {
      const { mailbox, replaced } = directory.putContainer(obj);
      if (replaced) {
        stranded.delete(replaced);
        emptied(replaced);
      }
      services.topologyChanged();
      // New labels may have made a ready container an endpoint of a service.
      moveStranded(availability);
      // A raised concurrency takes effect at once.
      deliveries.pump(mailbox);
    },
    removeContainer(name, uid) {
      const m = directory.mailbox(name);
      if (!m || m.uid !== uid) return;
      directory.remove(m);
      stranded.delete(m);
      emptied(m);
      services.topologyChanged();
    },
    upsertService(obj) {
      const { replaced } = directory.putService(obj);
      if (replaced) services.dropService(replaced);
      services.topologyChanged();
      moveStranded(availability);
    },
    removeService(name, uid) {
      const s = directory.service(name);
      if (!s || s.uid !== uid) return;
      directory.remove(s);
      services.dropService(s);
    },
    setAvailability(name, a) {
      const m = directory.mailbox(name);
      if (m) setAvailability(m, a);
    },
    release(name, why) {
      const m = directory.mailbox(name);
      if (m) deliveries.release(m, why);
    },
    linkLost(link, what) {
      for (const m of directory.mailboxes()) {
        if (m.inflight.size > 0) deliveries.release(m, `lost ${what}`, link);
        // Not ready any more, before the lifecycle says so: its endpoints move on at once.
        if (m.link === link) setAvailability(m, { link: undefined, ready: false, accepts: m.accepts, notReady: `lost ${what}`, refusal: m.refusal });
      }
    },
    linkDrained(link) {
      for (const m of directory.mailboxes()) if (m.link === link) deliveries.pump(m);
    },
    load(name) {
      const m = directory.mailbox(name);
      return m && loadOf(m);
    },
    *loads() {
      for (const m of directory.mailboxes()) yield loadOf(m);
    },
    *services() {
      for (const s of directory.services()) yield { name: s.name, endpoints: s.statusEndpoints };
    },
    onIdle(listener) {
      idleListeners.push(listener);
    },
    restore(kind, name, uid, entries) {
      const to = kind === "container" ? directory.mailbox(name) : directory.service(name);
      if (!to || to.uid !== uid) return false;
      restoreTo(to, entries.map(recovered), { services, deliveries });
      return true;
    },
    takeBack(name) {
      const m = directory.mailbox(name);
      return m ? takeBackFrom(m, deadlines, stranded) : [];
    },
    waitingServices: () => [...directory.services()].filter((s) => s.waiters.live > 0).map((s) => s.name),
    takeWaiting(name) {
      const envs = directory.service(name)?.waiters.drain() ?? [];
      for (const env of envs) {
        deadlines.remove(env);
        env.state = EnvelopeState.New;
      }
      return envs;
    },
    knows: (target) => directory.resolve(target) !== undefined,
    stop(message) {
      stopped = true;
      failEverything(directory, answers, options.events, message);
      deliveries.clear();
      deadlines.clear();
      stranded.clear();
    },
  };
}

/**
 * Empties a deleted container's mailbox. Sends it had accepted that no endpoint of their
 * service can take (sent to the container itself, or their service is gone too) end here:
 * their senders were answered when they were queued, so a warning event says how many.
 */
function emptyMailbox(m: Mailbox, services: ServiceRouting, events: EventRecorder): void {
  const dropped = services.empty(m, `container "${m.name}" was deleted`);
  if (dropped === 0) return;
  events.record({
    type: "Warning",
    reason: "MessagesDropped",
    kind: "Container",
    name: m.name,
    message: `${dropped} accepted ${dropped === 1 ? "send" : "sends"} still queued were dropped: the container was deleted and no endpoint of a service took them`,
  });
}

/** Takes a container's queued messages out of its mailbox, to be routed anew (see Router.takeBack). */
function takeBackFrom(m: Mailbox, deadlines: DeadlineQueue<Letter>, stranded: Set<Mailbox>): Letter[] {
  m.letGoes++;
  stranded.delete(m);
  const envs = m.inbox.drain();
  for (const env of envs) {
    deadlines.remove(env);
    env.mailbox = undefined;
    env.state = EnvelopeState.New;
  }
  return envs;
}

/** What a change of availability moves messages through. */
interface AvailabilityContext {
  services: ServiceRouting;
  deliveries: Deliveries;
  /**
   * Mailboxes that stopped being ready while no other endpoint of their services was: the
   * messages that came through a service move on when another endpoint becomes ready.
   */
  stranded: Set<Mailbox>;
}

/**
 * Takes a container's new availability: a narrowed `accepts` fails or reroutes what it no longer
 * takes, a mailbox that became ready gets its messages (and frees the stranded ones of its
 * services), one that stopped being ready hands its service messages to other endpoints.
 */
function applyAvailability(m: Mailbox, a: Availability, ctx: AvailabilityContext): void {
  const { services, deliveries, stranded } = ctx;
  const wasReady = isReady(m);
  const narrowed = a.accepts !== m.accepts && a.accepts !== "all";
  m.link = a.link;
  m.ready = a.ready;
  m.accepts = a.accepts;
  m.notReady = a.notReady;
  m.refusal = a.refusal;
  const ready = isReady(m);
  // Before any rerouting: a service must not pick this container from its stale endpoints.
  if (ready !== wasReady) services.topologyChanged();
  if (narrowed) {
    services.failQueuedRequests(m, a.refusal);
    services.reroute(m, true);
  }
  if (ready) {
    stranded.delete(m);
    deliveries.pump(m);
    if (!wasReady) moveStranded(ctx);
  } else if (wasReady) {
    services.reroute(m, false);
    if (m.inbox.live > 0) stranded.add(m);
  }
}

/** Moves the service messages of stranded mailboxes to endpoints that became ready or were added. */
function moveStranded(ctx: AvailabilityContext): void {
  for (const m of ctx.stranded) {
    ctx.services.reroute(m, false);
    if (m.inbox.live === 0) ctx.stranded.delete(m);
  }
}

/** Hands recovered journaled sends to their container (ahead of its inbox) or their service. */
function restoreTo(to: Mailbox | ServiceRoute, envs: Letter[], ctx: Pick<AvailabilityContext, "services" | "deliveries">): void {
  if (to instanceof Mailbox) {
    // Older than anything accepted since the start: they go first.
    for (let i = envs.length - 1; i >= 0; i--) {
      const env = envs[i]!;
      env.mailbox = to;
      env.state = EnvelopeState.Queued;
      to.inbox.unshift(env);
    }
    ctx.deliveries.pump(to);
  } else {
    for (const env of envs) ctx.services.toService(env, to);
  }
}

/**
 * Fails every message the router holds (in flight, queued, waiting for an endpoint) with
 * UNAVAILABLE. A send accepted here was answered already: one journaled stays in its journal
 * (read back by whoever delivers its container or service next); any other is lost, and a
 * MessagesDropped warning per container or service says how many (never silently).
 */
function failEverything(directory: Directory, answers: Answers, events: EventRecorder, message: string): void {
  let dropped = 0;
  const fail = (env: Letter) => {
    if (env.answered && !env.expectsReply && env.journalKey === "") dropped++;
    env.state = EnvelopeState.Done;
    answers.fail(env, Code.Unavailable, message, env.mailbox?.name);
  };
  const told = (kind: "Container" | "Service", name: string) => {
    if (dropped > 0) {
      const sends = dropped === 1 ? "send" : "sends";
      events.record({ type: "Warning", reason: "MessagesDropped", kind, name, message: `${dropped} accepted ${sends} that no worker acknowledged were dropped: ${message}` });
    }
    dropped = 0;
  };
  for (const m of directory.mailboxes()) {
    for (const env of m.inflight) fail(env);
    m.inbox.drain().forEach(fail);
    told("Container", m.name);
  }
  for (const s of directory.services()) {
    s.waiters.drain().forEach(fail);
    told("Service", s.name);
  }
}

/**
 * Routes an envelope to a target the router did not know, once the store was looked up (a
 * watch event may trail a write the caller already saw): still unknown is NOT_FOUND, a failed
 * lookup UNAVAILABLE. An envelope given up on meanwhile is left alone.
 */
function routeAfterLookup(
  env: Letter,
  target: Target,
  lookup: Promise<void>,
  tryRoute: (env: Letter, target: Target) => boolean,
  refuse: (env: Letter, code: Code, message: string) => void,
): void {
  lookup.then(
    () => {
      if (env.state !== EnvelopeState.New) return;
      if (!tryRoute(env, target)) refuse(env, Code.NotFound, notFound(target));
    },
    (err: unknown) => {
      if (env.state === EnvelopeState.New) refuse(env, Code.Unavailable, `looking up target "${target.name}" failed: ${String(err)}`);
    },
  );
}

/** An envelope for a journaled send: accepted long ago, delivered (maybe) once already. */
function recovered(e: RecoveredEntry): Letter {
  const env: Letter = new Envelope({ data: e.data, contentType: e.contentType, expectsReply: false, sender: e.sender });
  env.answered = true;
  env.journalKey = e.key;
  env.service = e.service;
  // Its next delivery counts as a redelivery.
  env.attempt = 1;
  return env;
}

function loadOf(m: Mailbox): MailboxLoad {
  return { name: m.name, queued: m.inbox.live, inFlight: m.inflight.size, ready: isReady(m), counters: m.load };
}

function notFound(target: Target): string {
  if (target.kind === "container") return `no container named "${target.name}"`;
  if (target.kind === "service") return `no service named "${target.name}"`;
  return `no container or service named "${target.name}"`;
}
