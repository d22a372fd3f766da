/**
 * The router of a server in a cluster where every server routes: a call for a container whose
 * messages another server delivers (its host's or attached process's session is held there) goes
 * over the peer link to that server, whose router queues and delivers it; every other call goes
 * to this server's own router. A message therefore crosses at most one extra server.
 */
import { Code, type ConnectError } from "@connectrpc/connect";
import { backoffDelay, type BackoffPolicy } from "../../api/backoff.js";
import type { Target } from "../../api/target.js";
import { EnvelopeState } from "../messaging/envelope.js";
import { DEFAULT_QUEUE_LIMIT, type Letter } from "../messaging/mailbox.js";
import { MAX_SERVICE_WAITERS } from "../messaging/service-route.js";
import { NOT_TAKEN_STOPPING, type CallRouter } from "../messaging/router.js";
import { callRefused, type CallSignal } from "../../transport/session.js";
import type { PeerLinks } from "./peer-links.js";

/** ClusterRouterOptions are this server's router, its peer links, and where containers are delivered. */
export interface ClusterRouterOptions {
  /** This server's own router (the mailboxes of what it holds). */
  local: CallRouter;
  links: PeerLinks;
  /** This server's advertise address. */
  self: () => string;
  /** The server that delivers a container's messages ("" when none does now: the local router answers). */
  deliveredBy: (container: string) => string;
  /**
   * Whether a container that no server delivers now can still come to one (stored, not ended,
   * not being deleted, not an external one waiting for a process: it is being scheduled,
   * started or moved): a call for it waits for a server to deliver it, within its deadline
   * (absent or false: the local router answers it, e.g. FAILED_PRECONDITION for an ended one).
   */
  awaited?: (container: string) => boolean;
  /**
   * The ready endpoints of a service cluster-wide, sorted (none or undefined: this server's
   * router picks among its own, and waits for one).
   */
  endpoints?: (service: string) => readonly string[] | undefined;
  /**
   * How many calls may wait for a container to be delivered by a server (its spec.queueLimit, as
   * its inbox; default DEFAULT_QUEUE_LIMIT); a service's calls: MAX_SERVICE_WAITERS, as on one server.
   */
  queueLimit?: (container: string) => number;
}

/** The codes of a refusal another place may not give: gone, not ready or full there, not held, stopping, no link. */
const REFUSAL_CODES: ReadonlySet<Code> = new Set([Code.NotFound, Code.FailedPrecondition, Code.ResourceExhausted, Code.Unavailable]);

/**
 * Whether a call another server answered with `err` never reached a worker, so it may go to
 * another endpoint: that server refused it before any worker had it (the container was gone,
 * not ready for it or full), or the link to it never carried it. A request's refusal says so
 * (CallResult.refused, or a call the session never sent): a worker's own error, whatever its
 * code and words, never does, and is the caller's answer. A send is answered only once
 * accepted, so its error is never a worker's: a refusal, or a link that failed before it was
 * accepted (the caller would send it again too).
 */
export function refusedBeforeAcceptance(err: ConnectError, expectsReply: boolean): boolean {
  return REFUSAL_CODES.has(err.code) && (!expectsReply || callRefused(err));
}

/**
 * Whether a server refused a forwarded call before any worker had it because it does not
 * deliver that container now, or is stopping (and takes no call for what it holds any more):
 * a refusal (see refusedBeforeAcceptance) in its words, never a worker's error in the same words.
 */
function notTakenThere(err: ConnectError): boolean {
  return callRefused(err) && err.code === Code.Unavailable && (/ is not held by server /.test(err.rawMessage) || err.rawMessage.includes(NOT_TAKEN_STOPPING));
}

/**
 * How soon a call another server refused is routed again when nothing changes in between (a
 * wake routes it at once): 50 ms, doubling to 1 s, spread ±25% so that calls refused together
 * (a server stopping under load) do not come back in step.
 */
export const REFUSED_RETRY: BackoffPolicy = { initialMs: 50, maxMs: 1000, jitter: 0.25 };

/** Whether a call came over another server's peer session (its peer credential verified when it opened). */
function fromPeer(env: Letter): boolean {
  const origin = env.origin as { peer?: unknown } | undefined;
  return typeof origin?.peer === "string" && origin.peer !== "";
}

/**
 * Whether a call came from a worker of this server (a host's or attached process's session
 * here). While this server leaves, such a call still goes to what this server delivers: its
 * worker may be handling a call the drain waits for, and its nested calls must not fail for the
 * stop. It is routed once, as before the stop (what was never delivered is handed over or
 * failed at the end of the drain), so it still runs at most once.
 */
function fromWorkerHere(env: Letter): boolean {
  const role = (env.origin as { role?: unknown } | undefined)?.role;
  return (role === "host" || role === "attached") && !fromPeer(env);
}

/**
 * How long after a server refused a call because it is stopping no call goes to it from here
 * (ms): calls for what it still delivers wait here for it to move (a change of where it is, or
 * the refusal back-off, routes them again). A call sent to it then could be cut off by the end of
 * its sessions before its refusal comes back, and read as a call that may have run.
 */
const STOPPING_MARK_MS = 10_000;

/** Longest a call without a deadline (a send) waits for a place (ms). */
const PLACE_WAIT_MS = 30_000;

/** ClusterRouter is a cluster's router, told when where containers are may have changed. */
export interface ClusterRouter extends CallRouter {
  /**
   * Where a container, or a service's endpoints, may be now (its session record, binding,
   * status or endpoints changed): the calls waiting for it are routed again. No name: all.
   */
  wake(name?: string): void;
  /** A service's endpoints may have changed (a Container or a Service did): the calls waiting for one are routed again. */
  wakeServices(): void;
  /** How many calls wait for a place now. */
  waiting(): number;
  /**
   * This server is stopping: from now on it takes no call for what it holds (each is refused
   * UNAVAILABLE, before any worker had it, and the server that forwarded it routes it again),
   * but its own workers' (see fromWorkerHere).
   */
  leave(): void;
}

/** A call waiting for a container (or a service endpoint) to be delivered by some server. */
interface Waiter {
  /** "container/NAME" or "service/NAME" (a call waiting for any endpoint of a service). */
  key: string;
  env: Letter;
  target: Target;
  signal: CallSignal;
  timer: NodeJS.Timeout;
  onAbort: () => void;
}

/** What routing works with: the options, with this server's own router as it is while leaving, and what servers said they are stopping. */
interface RoutingParts extends ClusterRouterOptions {
  /** Whether a server said it is stopping, lately: no call goes to it. */
  stopping(server: string): boolean;
  /** Another server refused a call: if because it is stopping, it is marked so. */
  sawRefusal(server: string, err: ConnectError): void;
}

/** Creates the router of a server that routes what it holds and forwards the rest. */
export function createClusterRouter(options: ClusterRouterOptions): ClusterRouter {
  const { local, links } = options;
  const cursors = new Map<string, number>();
  const waitingSince = new WeakMap<Letter, number>();
  /** How many times another server refused a call (its next retry is backed off by that). */
  const refusals = new WeakMap<Letter, number>();
  let leaving = false;
  /** The servers that said they are stopping, and when. */
  const stoppingSince = new Map<string, number>();
  const stopping = (server: string): boolean => {
    const since = stoppingSince.get(server);
    if (since === undefined) return false;
    if (Date.now() - since < STOPPING_MARK_MS) return true;
    stoppingSince.delete(server);
    return false;
  };
  const sawRefusal = (server: string, err: ConnectError) => {
    if (err.rawMessage.includes(NOT_TAKEN_STOPPING)) stoppingSince.set(server, Date.now());
  };
  // What this server would deliver itself: once it is leaving, refused but for its own workers' calls.
  const toLocal: CallRouter["route"] = (env, target) =>
    leaving && !fromWorkerHere(env) ? links.fail(env, Code.Unavailable, `server ${options.self()} ${NOT_TAKEN_STOPPING}`) : local.route(env, target);
  const here: RoutingParts = { ...options, local: { ...local, route: toLocal }, stopping, sawRefusal };
  /** The calls waiting for a place, by what they wait for (Waiter.key). */
  const waiters = new Map<string, Set<Waiter>>();
  let waitingCount = 0;
  /** How many keys of waiters are services' (a Container's change looks at those only when there are some). */
  let serviceKeys = 0;

  function unwait(w: Waiter) {
    const set = waiters.get(w.key);
    if (!set?.delete(w)) return false;
    if (set.size === 0) {
      waiters.delete(w.key);
      if (w.key.startsWith("service/")) serviceKeys--;
    }
    waitingCount--;
    clearTimeout(w.timer);
    w.signal.removeEventListener("abort", w.onAbort);
    return true;
  }

  /** Routes a waiting call again (it waits anew if it still has no place). */
  function retry(w: Waiter) {
    if (!unwait(w) || w.signal.aborted || w.env.state === EnvelopeState.Done) return;
    links.letGo(w.env);
    route(w.env, w.target);
  }

  /**
   * A call for a container (or a service) no server delivers yet waits, in the peer links' hands
   * (so that a cancel or the caller going reaches it), and is routed again when where the
   * container is may have changed (wake), or at its deadline; one another server refused, also
   * after a back-off (that server may let go of it without any change seen here).
   */
  function later(env: Letter, target: Target, what: string, service = false, refused = false) {
    const admitted = waitingSince.get(env);
    const since = admitted ?? Date.now();
    const giveUpAt = env.deadline > 0 ? env.deadline : since + PLACE_WAIT_MS;
    if (Date.now() >= giveUpAt) {
      const code = env.deadline > 0 ? Code.DeadlineExceeded : Code.Unavailable;
      return links.fail(env, code, `${what} is not running on any server of the cluster yet (waited ${Date.now() - since} ms)`);
    }
    // A call that waited already (routed again, still without a place) is not refused for the limit.
    const key = `${service ? "service" : "container"}/${target.name}`;
    const refusal = admitted === undefined ? full(waiters.get(key)?.size ?? 0, target, service, options) : undefined;
    if (refusal) return links.fail(env, Code.ResourceExhausted, refusal);
    waitingSince.set(env, since);
    const signal = links.holds(env) ? links.signalOf(env)! : links.hold(env);
    // Given up on already (cancelled, or the links stopping): answered by whoever gave up.
    if (signal.aborted) return;
    const w: Waiter = {
      key,
      env,
      target,
      signal,
      // At its deadline it is routed once more: that answers it, unless it has a place by now.
      timer: setTimeout(() => retry(w), Math.min(giveUpAt - Date.now(), refused ? nextRetry(env, refusals) : Infinity)).unref(),
      onAbort: () => unwait(w),
    };
    signal.addEventListener("abort", w.onAbort, { once: true });
    let set = waiters.get(key);
    if (!set) {
      waiters.set(key, (set = new Set()));
      if (service) serviceKeys++;
    }
    set.add(w);
    waitingCount++;
  }

  function wakeKey(key: string) {
    const set = waiters.get(key);
    if (!set) return;
    const kinds = new Map<string, boolean>();
    for (const w of [...set]) {
      let waits = kinds.get(w.target.kind);
      if (waits === undefined) kinds.set(w.target.kind, (waits = stillWaits(w.target, options)));
      if (!waits) retry(w);
    }
  }

  function route(env: Letter, target: Target) {
    if (fromPeer(env)) return routeFromPeer(env, target, here);
    if (target.kind === "service") return routeToService(env, target, 0, here, cursors, later);
    const server = options.deliveredBy(target.name);
    const stored = options.awaited?.(target.name) ?? false;
    // A name that is no container held anywhere but a Service's: its endpoints, cluster-wide.
    if (target.kind === "any" && server === "" && !stored && options.endpoints?.(target.name)) return routeToService(env, target, 0, here, cursors, later);
    if (server === "" && stored) return later(env, target, `container "${target.name}"`);
    if (server === "" || server === options.self()) return toLocal(env, target);
    if (stopping(server)) return later(env, target, `container "${target.name}"`, false, true);
    // Refused there because that server let the container go (or is stopping): where is it now?
    // Where this server sees it delivered changed while the call was on its way (this server, or
    // a third one, holds it now: a host whose session moved here before the old server let go of
    // it): routed there at once, since no later change may come to wake it. Else it waits for
    // one, or is tried again after a back-off, until the call's deadline (so never endlessly).
    links.forward(env, { kind: "container", name: target.name }, server, server, (err) => {
      if (!notTakenThere(err)) return false;
      sawRefusal(server, err);
      if (options.deliveredBy(target.name) !== server) route(env, target);
      else later(env, target, `container "${target.name}"`, false, true);
      return true;
    });
  }

  return {
    route,
    wake(name) {
      if (name !== undefined) return wakeKey(`container/${name}`);
      for (const key of [...waiters.keys()]) wakeKey(key);
    },
    wakeServices() {
      if (serviceKeys === 0) return;
      for (const key of [...waiters.keys()]) if (key.startsWith("service/")) wakeKey(key);
    },
    waiting: () => waitingCount,
    leave() {
      leaving = true;
    },
    abandon(env: Letter, code: Code | 0, message: string) {
      // A call the links hold was forwarded; one they answered already is Done, which both ignore.
      if (links.holds(env)) links.abandon(env, code, message);
      else local.abandon(env, code, message);
    },
    settle: (link, result) => local.settle(link, result),
    inflightOf: (link, id) => local.inflightOf(link, id),
    knows: (target) =>
      local.knows(target) || (target.kind === "service" ? (options.endpoints?.(target.name)?.length ?? 0) > 0 : options.deliveredBy(target.name) !== ""),
  };
}

/** The back-off before a refused call is routed again (counting the refusal). */
function nextRetry(env: Letter, refusals: WeakMap<Letter, number>): number {
  const n = refusals.get(env) ?? 0;
  refusals.set(env, n + 1);
  return backoffDelay(REFUSED_RETRY, n);
}

/** Why no more calls may wait for a place for a target, or undefined while they may. */
function full(waitingNow: number, target: Target, service: boolean, options: ClusterRouterOptions): string | undefined {
  const configured = service ? MAX_SERVICE_WAITERS : (options.queueLimit?.(target.name) ?? 0);
  const limit = configured > 0 ? configured : DEFAULT_QUEUE_LIMIT;
  if (waitingNow < limit) return undefined;
  return service
    ? `too many calls wait for an endpoint of service "${target.name}" (limit ${limit})`
    : `too many calls wait for container "${target.name}" to run on a server of the cluster (queueLimit ${limit})`;
}

/** Whether a target still has no place (its waiting calls would only wait again), as route() decides. */
function stillWaits(target: Target, options: ClusterRouterOptions): boolean {
  const noEndpoint = () => options.endpoints?.(target.name)?.length === 0;
  if (target.kind === "service") return noEndpoint();
  const server = options.deliveredBy(target.name);
  const stored = options.awaited?.(target.name) ?? false;
  if (target.kind === "any" && server === "" && !stored && options.endpoints?.(target.name)) return noEndpoint();
  return server === "" && stored;
}

/**
 * A call another server forwarded is never sent on (two servers whose views of where a
 * container is differ for a moment would pass it back and forth): this server answers it when
 * it delivers the container now, or no server does and none will (the local router says why);
 * else it refuses it before accepting it, UNAVAILABLE, and the sending server routes it again
 * within the call's deadline (a send's: the wait for a place).
 */
function routeFromPeer(env: Letter, target: Target, options: ClusterRouterOptions): void {
  const { local, links } = options;
  if (target.kind === "service") return local.route(env, target);
  const self = options.self();
  const server = options.deliveredBy(target.name);
  if (server === self || (server === "" && !(options.awaited?.(target.name) ?? false))) return local.route(env, target);
  links.fail(env, Code.Unavailable, `container "${target.name}" is not held by server ${self}${server === "" ? "" : ` (server ${server} delivers it)`}`);
}

/**
 * A service's call goes to its endpoints in turn, local and remote alike: a local pick to this
 * server's router (which picks among its own endpoints), a remote one over the peer link, and
 * on to the next endpoint when that one refused it before accepting it.
 */
function routeToService(
  env: Letter,
  target: Target,
  tried: number,
  options: RoutingParts,
  cursors: Map<string, number>,
  later: (env: Letter, target: Target, what: string, service: boolean, refused?: boolean) => void,
): void {
  const { local, links } = options;
  const listed = options.endpoints?.(target.name);
  const endpoints = listed ?? [];
  // None ready anywhere: wait for one (this server's router would wait only for its own).
  if (endpoints.length === 0 && listed && options.awaited) return later(env, target, `no endpoint of service "${target.name}"`, true);
  if (tried >= endpoints.length) {
    // Every endpoint refused it. None of them this server's: it waits here, in the cluster, and is
    // routed again after a back-off or a change (this server's own queue of the service would
    // wait only for an endpoint here).
    const self = options.self();
    const elsewhere = endpoints.length > 0 && endpoints.every((e) => {
      const server = options.deliveredBy(e);
      return server !== "" && server !== self;
    });
    if (elsewhere && options.awaited) return later(env, target, `an endpoint of service "${target.name}" that takes calls`, true, true);
    return local.route(env, target);
  }
  const turn = cursors.get(target.name) ?? 0;
  cursors.set(target.name, (turn + 1) % endpoints.length);
  const name = endpoints[turn % endpoints.length]!;
  const server = options.deliveredBy(name);
  if (server === "" || server === options.self()) return local.route(env, target);
  // A stopping server's endpoint is passed over, as if it refused.
  if (options.stopping(server)) return routeToService(env, target, tried + 1, options, cursors, later);
  links.forward(env, { kind: "container", name }, server, server, (err) => {
    if (!refusedBeforeAcceptance(err, env.expectsReply)) return false;
    if (callRefused(err)) options.sawRefusal(server, err);
    routeToService(env, target, tried + 1, options, cursors, later);
    return true;
  });
}
