/**
 * The router: resolves targets, picks service endpoints, keeps container inboxes (FIFO, bounded,
 * at most `concurrency` unsettled deliveries), settles deliveries, and enforces deadlines with
 * one timer. Everything here is synchronous and in memory; payload bytes pass through untouched.
 */
import { Code } from "@connectrpc/connect";
import type { Target } from "../../api/target.js";
import type { DeliveryResult } from "../../gen/k4s/v1/worker_service_pb.js";
import type { EventRecorder } from "../event-recorder.js";
import type { Metrics } from "../metrics.js";
import type { ContainerRecord } from "./container-record.js";
import { createBatchedCounter } from "./batched-counter.js";
import { createDeadlineQueue, type DeadlineQueue } from "./deadline-queue.js";
import { Envelope, EnvelopeState } from "./envelope.js";
import { callResultFrame, cancelDeliveryFrame, deliveryFrame } from "./frames.js";
import { MAX_SERVICE_WAITERS, type ServiceRoute } from "./service-route.js";
import type { WorkerLink } from "./worker-link.js";


/** Delay before a message a worker reported as not processed (UNAVAILABLE) is offered again. */
const UNPROCESSED_RETRY_MS = 100;
/** How long a send waits for a service endpoint before it is refused (ms). */
export const SEND_ENDPOINT_WAIT_MS = 30_000;

const EMPTY = new Uint8Array(0);

/** RouterOptions are the router's dependencies. */
export interface RouterOptions {
  events: EventRecorder;
  /**
   * Looks a target up in the store when the router does not know it yet (a watch event may
   * trail a write the caller already saw); resolves once any object found was ingested.
   */
  lookup?: (target: Target) => Promise<void>;
  /** Called when a container has no unsettled delivery left (a draining stop may finish). */
  onIdle?: (c: ContainerRecord) => void;
  metrics?: Metrics;
  /** Count each container's settled messages and their latency for the live stats (default true). */
  countLoad?: boolean;
}

/** Router moves envelopes from callers to workers and answers back. */
export interface Router {
  readonly containers: Map<string, ContainerRecord>;
  readonly services: Map<string, ServiceRoute>;
  /** Routes a new envelope; requests must have their deadline set. */
  route(env: Envelope, target: Target): void;
  /** Hands waiting messages of a container to its worker, up to its concurrency. */
  pump(c: ContainerRecord): void;
  /** Settles a delivery with the worker's result; unknown or late results are dropped. */
  settle(session: WorkerLink, result: DeliveryResult): void;
  /** Gives up on an envelope (cancel, deadline, caller gone), answering code/message unless 0. */
  abandon(env: Envelope, code: Code | 0, message: string): void;
  /** The delivery a session is handling, for nested calls. */
  inflightOf(session: WorkerLink, deliveryId: number): Envelope | undefined;
  /**
   * A container lost its worker (session gone, exited, stopped): unsettled requests fail with
   * UNAVAILABLE (at most once), unsettled sends go back to the front of its inbox (at least once).
   */
  release(c: ContainerRecord, why: string): void;
  /**
   * Moves messages that came through a service out of a container's inbox to other endpoints:
   * all of them (`force`, the container is going away) or only when another endpoint is ready.
   */
  reroute(c: ContainerRecord, force: boolean): void;
  /** Fails the requests waiting in a container's inbox. */
  failQueuedRequests(c: ContainerRecord, code: Code, message: string): void;
  /** Forgets a deleted container: its messages fail or go to other endpoints of their service. */
  dropContainer(c: ContainerRecord): void;
  /** Forgets a deleted service: calls waiting for it fail. */
  dropService(s: ServiceRoute): void;
  /** Readiness, labels or the set of containers or services changed: recompute endpoints. */
  topologyChanged(): void;
  /** Fails every waiting call with UNAVAILABLE and disarms the deadline timer. */
  stop(message: string): void;
}

/** The canonical gRPC name of a status code (NOT_FOUND), as the server's other metrics label them. */
function codeName(code: number): string {
  if (code === 0) return "OK";
  const name = Code[code];
  return name ? name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase() : String(code);
}

/** Creates the router. */
export function createRouter(options: RouterOptions): Router {
  const containers = new Map<string, ContainerRecord>();
  const services = new Map<string, ServiceRoute>();
  const inflight = new Map<number, Envelope>();
  let deliverySeq = 0;
  let topologyVersion = 0;
  let drainScheduled = false;
  let stopped = false;

  const deadlines: DeadlineQueue<Envelope> = createDeadlineQueue(expire);
  const deliveries = options.metrics && createBatchedCounter(options.metrics.deliveries);
  const requestSeconds = options.metrics?.requestSeconds;
  const latencyByCode = new Map<number, { observe(v: number): void }>();
  const observe = (code: number, ms: number) => {
    let h = latencyByCode.get(code);
    if (!h) latencyByCode.set(code, (h = requestSeconds!.labels(codeName(code))));
    h.observe(ms / 1000);
  };
  const redeliveries = options.metrics?.redeliveries;
  const countLoad = options.countLoad ?? true;
  const timed = countLoad || requestSeconds !== undefined;

  function answer(env: Envelope, code: Code | 0, message: string, data: Uint8Array | undefined, contentType: string, container: string) {
    if (env.answered) return;
    env.answered = true;
    const o = env.origin;
    if (env.expectsReply) {
      deadlines.remove(env);
      o?.calls.delete(env.callId);
      if (env.started > 0 && requestSeconds) observe(code, performance.now() - env.started);
    }
    if (o) {
      o.push(callResultFrame(env.callId, code, message, data, contentType, container));
    } else {
      env.onAnswer?.(code, message, data ?? EMPTY, contentType, container);
    }
  }

  function refuse(env: Envelope, code: Code, message: string) {
    deadlines.remove(env);
    env.state = EnvelopeState.Done;
    answer(env, code, message, undefined, "", "");
  }

  /** Why a container cannot take an envelope now, or undefined when it can. */
  function refusal(c: ContainerRecord, env: Envelope): [Code, string] | undefined {
    if (c.deleting) return [Code.Unavailable, `container "${c.name}" is being deleted`];
    if (c.terminal && env.expectsReply) {
      return [Code.Unavailable, `container "${c.name}" has ended (${c.phase}) and takes no more requests`];
    }
    if (c.inbox.live >= c.queueLimit) {
      return [Code.ResourceExhausted, `inbox of container "${c.name}" is full (queueLimit ${c.queueLimit})`];
    }
    return undefined;
  }

  function enqueue(c: ContainerRecord, env: Envelope) {
    env.container = c;
    env.state = EnvelopeState.Queued;
    c.inbox.push(env);
    if (!env.expectsReply && !env.answered) {
      // A send is accepted once queued; from here on only the worker's ack settles it.
      deadlines.remove(env);
      env.deadline = 0;
      answer(env, 0, "", undefined, "", c.name);
    }
    pump(c);
  }

  function routeToContainer(env: Envelope, c: ContainerRecord) {
    const no = refusal(c, env);
    if (no) refuse(env, no[0], no[1]);
    else enqueue(c, env);
  }

  function endpointsOf(s: ServiceRoute): ContainerRecord[] {
    if (s.endpointsVersion === topologyVersion) return s.endpoints;
    const eps: ContainerRecord[] = [];
    for (const c of containers.values()) {
      if (c.ready && (s.selects(c) || s.statusEndpoints.includes(c.name))) eps.push(c);
    }
    eps.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    s.endpoints = eps;
    s.endpointsVersion = topologyVersion;
    return eps;
  }

  function pick(s: ServiceRoute, eps: ContainerRecord[]): number {
    const n = eps.length;
    if (n === 1) return 0;
    switch (s.strategy) {
      case "random":
        return Math.floor(Math.random() * n);
      case "least-in-flight": {
        const start = s.cursor++ % n;
        if (s.cursor > 0x3fffffff) s.cursor = 0;
        let best = start;
        let bestLoad = Infinity;
        for (let i = 0; i < n; i++) {
          const j = (start + i) % n;
          const c = eps[j]!;
          const load = c.inflight.size + c.inbox.live;
          if (load < bestLoad) {
            best = j;
            bestLoad = load;
          }
        }
        return best;
      }
      default: {
        const i = s.cursor++ % n;
        if (s.cursor > 0x3fffffff) s.cursor = 0;
        return i;
      }
    }
  }

  function routeToService(env: Envelope, s: ServiceRoute) {
    env.service = s;
    const eps = endpointsOf(s);
    if (eps.length > 0) {
      const first = pick(s, eps);
      let lastRefusal: [Code, string] | undefined;
      for (let i = 0; i < eps.length; i++) {
        const c = eps[(first + i) % eps.length]!;
        lastRefusal = refusal(c, env);
        if (!lastRefusal) {
          enqueue(c, env);
          return;
        }
      }
      if (env.answered) {
        // An accepted send must not be lost: it waits at the service instead.
      } else {
        refuse(
          env,
          Code.ResourceExhausted,
          eps.length === 1 ? lastRefusal![1] : `every endpoint of service "${s.name}" has a full inbox (${eps.length} endpoints)`,
        );
        return;
      }
    }
    if (s.waiters.live >= MAX_SERVICE_WAITERS && !env.answered) {
      refuse(env, Code.ResourceExhausted, `too many calls wait for an endpoint of service "${s.name}" (limit ${MAX_SERVICE_WAITERS})`);
      return;
    }
    env.state = EnvelopeState.Waiting;
    env.container = undefined;
    s.waiters.push(env);
    if (!env.expectsReply && !env.answered) {
      const limit = Date.now() + SEND_ENDPOINT_WAIT_MS;
      env.deadline = env.deadline > 0 ? Math.min(env.deadline, limit) : limit;
      deadlines.add(env);
    }
  }

  function resolveAndRoute(env: Envelope, target: Target): boolean {
    if (target.kind !== "service") {
      const c = containers.get(target.name);
      if (c) {
        routeToContainer(env, c);
        return true;
      }
    }
    if (target.kind !== "container") {
      const s = services.get(target.name);
      if (s) {
        routeToService(env, s);
        return true;
      }
    }
    return false;
  }

  function notFound(target: Target): string {
    if (target.kind === "container") return `no container named "${target.name}"`;
    if (target.kind === "service") return `no service named "${target.name}"`;
    return `no container or service named "${target.name}"`;
  }

  function pump(c: ContainerRecord) {
    const s = c.serving();
    if (!s) return;
    while (c.inflight.size < c.concurrency) {
      const env = c.inbox.shift();
      if (!env) break;
      const id = ++deliverySeq;
      env.deliveryId = id;
      env.attempt++;
      deliveries?.inc();
      if (env.attempt > 1) redeliveries?.inc();
      env.state = EnvelopeState.InFlight;
      env.session = s;
      inflight.set(id, env);
      c.inflight.add(env);
      const timeoutMs = env.expectsReply && env.deadline > 0 ? Math.max(1, env.deadline - Date.now()) : 0;
      s.push(deliveryFrame(id, c.name, env.data, env.contentType, env.expectsReply, timeoutMs, env.sender, env.attempt));
    }
  }

  function unsettle(env: Envelope): ContainerRecord {
    inflight.delete(env.deliveryId);
    const c = env.container!;
    c.inflight.delete(env);
    env.session = undefined;
    return c;
  }

  function handlerFailed(c: ContainerRecord, env: Envelope, code: number, message: string) {
    const now = Date.now();
    // One event a second per container at most: a failing handler must not flood the event ring.
    if (now - c.lastFailureEventAt < 1000) {
      c.suppressedFailures++;
      return;
    }
    const more = c.suppressedFailures > 0 ? ` (${c.suppressedFailures} more failures not shown)` : "";
    c.lastFailureEventAt = now;
    c.suppressedFailures = 0;
    options.events.record({
      type: "Warning",
      reason: "MessageFailed",
      kind: "Container",
      name: c.name,
      message: `handler failed on a message${env.sender ? ` from "${env.sender}"` : ""}: code ${code}: ${message}${more}`,
    });
  }

  function expire(env: Envelope) {
    switch (env.state) {
      case EnvelopeState.Waiting:
        abandon(env, Code.Unavailable, `no endpoint of service "${env.service!.name}" became ready before the deadline`);
        return;
      case EnvelopeState.Queued: {
        const c = env.container!;
        // Never delivered: say why the container did not take it, which is what a user can fix.
        const why = c.ready ? "" : `; it is not ready${c.message ? `: ${c.message}` : ` (${c.phase})`}`;
        abandon(env, Code.DeadlineExceeded, `deadline exceeded waiting for container "${c.name}" to answer${why}`);
        return;
      }
      case EnvelopeState.InFlight:
        abandon(env, Code.DeadlineExceeded, `deadline exceeded waiting for container "${env.container!.name}" to answer`);
        return;
      default:
        abandon(env, Code.DeadlineExceeded, "deadline exceeded");
    }
  }

  function abandon(env: Envelope, code: Code | 0, message: string) {
    switch (env.state) {
      case EnvelopeState.Done:
        return;
      case EnvelopeState.Waiting:
        env.state = EnvelopeState.Done;
        env.service!.waiters.abandoned();
        break;
      case EnvelopeState.Queued:
        env.state = EnvelopeState.Done;
        env.container!.inbox.abandoned();
        break;
      case EnvelopeState.InFlight: {
        const session = env.session;
        const c = unsettle(env);
        env.state = EnvelopeState.Done;
        session?.push(cancelDeliveryFrame(env.deliveryId, message || "caller gone"));
        pump(c);
        if (c.inflight.size === 0) options.onIdle?.(c);
        break;
      }
      default:
        env.state = EnvelopeState.Done;
    }
    deadlines.remove(env);
    if (code !== 0) answer(env, code, message, undefined, "", env.container?.name ?? "");
    else if (env.expectsReply) env.origin?.calls.delete(env.callId);
  }

  function drainWaiters() {
    drainScheduled = false;
    if (stopped) return;
    for (const s of services.values()) {
      if (s.waiters.live === 0) continue;
      if (endpointsOf(s).length === 0) continue;
      for (const env of s.waiters.drain()) {
        env.state = EnvelopeState.New;
        routeToService(env, s);
      }
    }
  }

  return {
    containers,
    services,
    route(env, target) {
      if (env.expectsReply && env.deadline > 0) deadlines.add(env);
      if (timed) env.started = performance.now();
      if (stopped) {
        refuse(env, Code.Unavailable, "server is stopping");
        return;
      }
      if (resolveAndRoute(env, target)) return;
      if (!options.lookup) {
        refuse(env, Code.NotFound, notFound(target));
        return;
      }
      options.lookup(target).then(
        () => {
          if (env.state !== EnvelopeState.New) return;
          if (!resolveAndRoute(env, target)) refuse(env, Code.NotFound, notFound(target));
        },
        (err: unknown) => {
          if (env.state === EnvelopeState.New) refuse(env, Code.Unavailable, `looking up target "${target.name}" failed: ${String(err)}`);
        },
      );
    },
    pump,
    settle(session, result) {
      const env = inflight.get(Number(result.id));
      if (!env || env.session !== session) return;
      const c = unsettle(env);
      const err = result.error;
      if (!env.expectsReply && err?.code === Code.Unavailable) {
        // The worker did not process it (e.g. its host no longer runs the container): at least
        // once means it waits in the inbox again. Retried a little later, not in a tight loop
        // against a worker that keeps refusing.
        env.state = EnvelopeState.Queued;
        c.inbox.unshift(env);
        setTimeout(() => pump(c), UNPROCESSED_RETRY_MS).unref();
        if (c.inflight.size === 0) options.onIdle?.(c);
        return;
      }
      env.state = EnvelopeState.Done;
      if (countLoad) c.load.record(performance.now() - env.started, env.expectsReply, err !== undefined);
      if (env.expectsReply) {
        if (err) answer(env, (err.code || Code.Unknown) as Code, err.message, undefined, "", c.name);
        else answer(env, 0, "", result.data, result.contentType, c.name);
      } else if (err) {
        handlerFailed(c, env, err.code || Code.Unknown, err.message);
      }
      pump(c);
      if (c.inflight.size === 0) options.onIdle?.(c);
    },
    abandon,
    inflightOf(session, deliveryId) {
      const env = inflight.get(deliveryId);
      return env && env.session === session ? env : undefined;
    },
    release(c, why) {
      if (c.inflight.size === 0) return;
      const envs = [...c.inflight];
      for (let i = envs.length - 1; i >= 0; i--) {
        const env = envs[i]!;
        unsettle(env);
        if (env.expectsReply) {
          env.state = EnvelopeState.Done;
          answer(env, Code.Unavailable, `container "${c.name}" ${why} while handling the request`, undefined, "", c.name);
        } else {
          env.state = EnvelopeState.Queued;
          env.container = c;
          c.inbox.unshift(env);
        }
      }
      options.onIdle?.(c);
    },
    reroute(c, force) {
      const moved = c.inbox.extract((env) => {
        if (!env.service) return false;
        if (force) return true;
        return endpointsOf(env.service).some((e) => e !== c);
      });
      for (const env of moved) {
        env.state = EnvelopeState.New;
        env.container = undefined;
        routeToService(env, env.service!);
      }
    },
    failQueuedRequests(c, code, message) {
      for (const env of c.inbox.extract((e) => e.expectsReply)) {
        env.state = EnvelopeState.Done;
        answer(env, code, message, undefined, "", c.name);
      }
    },
    dropContainer(c) {
      containers.delete(c.name);
      topologyVersion++;
      const envs = [...c.inflight];
      for (const env of envs) {
        unsettle(env);
        env.state = EnvelopeState.Queued;
        if (env.expectsReply) {
          // Delivered once already: at most once means it fails rather than runs again.
          env.state = EnvelopeState.Done;
          answer(env, Code.Unavailable, `container "${c.name}" was deleted while handling the request`, undefined, "", c.name);
        }
      }
      const all = [...envs.filter((e) => e.state !== EnvelopeState.Done), ...c.inbox.drain()];
      for (const env of all) {
        if (env.service && services.get(env.service.name) === env.service) {
          env.state = EnvelopeState.New;
          env.container = undefined;
          routeToService(env, env.service);
        } else {
          env.state = EnvelopeState.Done;
          deadlines.remove(env);
          answer(env, Code.Unavailable, `container "${c.name}" was deleted`, undefined, "", c.name);
        }
      }
      drainWaiters();
    },
    dropService(s) {
      services.delete(s.name);
      for (const env of s.waiters.drain()) {
        env.state = EnvelopeState.Done;
        deadlines.remove(env);
        answer(env, Code.Unavailable, `service "${s.name}" was deleted`, undefined, "", "");
      }
      topologyVersion++;
    },
    topologyChanged() {
      topologyVersion++;
      if (!drainScheduled) {
        drainScheduled = true;
        setImmediate(drainWaiters);
      }
    },
    stop(message) {
      stopped = true;
      const fail = (env: Envelope) => {
        env.state = EnvelopeState.Done;
        answer(env, Code.Unavailable, message, undefined, "", env.container?.name ?? "");
      };
      for (const c of containers.values()) {
        for (const env of c.inflight) fail(env);
        c.inflight.clear();
        c.inbox.drain().forEach(fail);
      }
      for (const s of services.values()) s.waiters.drain().forEach(fail);
      inflight.clear();
      deadlines.clear();
    },
  };
}
