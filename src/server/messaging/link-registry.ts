/**
 * The live worker links of the server, and their liveness: a heartbeat goes out on a link the
 * server was otherwise silent on for an interval, and a link silent for three intervals is
 * declared lost.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import type { Metrics } from "../metrics.js";
import type { HostCredentials } from "./host-credentials.js";
import { heartbeatFrame, welcomeFrame } from "./frames.js";
import { createStallWatch } from "../../transport/stall-watch.js";
import { WorkerLink, type LinkRole } from "./worker-link.js";

/** LinkRegistryOptions are the registry's dependencies. */
export interface LinkRegistryOptions {
  /** Heartbeat interval announced to links (ms); a link silent for 3 intervals is lost. */
  heartbeatIntervalMs: number;
  /** Issues each host link's Welcome the credential of its name (none: hosts get no credential). */
  credentials?: HostCredentials;
  metrics?: Metrics;
  /**
   * Bytes of frames a link may have queued for a peer that does not read before it is cut off
   * with RESOURCE_EXHAUSTED (default DEFAULT_SESSION_BUFFER_BYTES, 64 MiB).
   */
  maxSessionBufferBytes?: number;
}

/** LinkSpec describes a link being opened. */
export interface LinkSpec {
  /** The name asked for: a host's (made unique among hosts and clients), or an attached process's. */
  name: string;
  role: LinkRole;
  /** Worker modules a host runs. */
  modules?: readonly string[];
  /** Containers a host runs at once (0: no limit). */
  capacity?: number;
  canSpawn?: boolean;
  /** The container an attached process serves. */
  container?: string;
  /** A host that showed the credential of the name it asked for. */
  proven?: boolean;
  /** The server whose peer session this is (its peer credential verified), if it is one. */
  peer?: string;
}

/** LinkRegistry keeps the live links: it opens them (with their Welcome), finds and loses them. */
export interface LinkRegistry {
  /** Registers a new link and queues its Welcome. `keepName` takes the name as given. */
  open(spec: LinkSpec, options?: { keepName?: boolean }): WorkerLink;
  /** Live host links, in connection order. */
  hosts(): Iterable<WorkerLink>;
  /** Live links of hosts and attached processes (not calling clients). */
  workers(): Iterable<WorkerLink>;
  /** Ends a link (idempotent); with an error, its stream ends with that status. */
  lose(link: WorkerLink, err?: ConnectError): void;
  /** Calls listener once for every link lost from now on (after it was closed). */
  onLost(listener: (link: WorkerLink) => void): void;
  /** Calls listener once for every link opened from now on (after its Welcome was queued). */
  onOpened(listener: (link: WorkerLink) => void): void;
  /** Calls listener whenever a congested link drained (see WorkerLink.congested). */
  onDrained(listener: (link: WorkerLink) => void): void;
  /** Whether the registry refuses new links (it is stopping). */
  readonly stopping: boolean;
  /** Starts the liveness timer. */
  start(): void;
  /** Ends every link with `err` and stops the liveness timer. */
  stop(err: ConnectError): void;
}

/** Creates an empty link registry. */
export function createLinkRegistry(options: LinkRegistryOptions): LinkRegistry {
  const hb = options.heartbeatIntervalMs;
  const links = new Map<string, WorkerLink>();
  const listeners: Array<(link: WorkerLink) => void> = [];
  const openListeners: Array<(link: WorkerLink) => void> = [];
  const drainListeners: Array<(link: WorkerLink) => void> = [];
  const drained = (link: WorkerLink) => drainListeners.forEach((l) => l(link));
  let timer: NodeJS.Timeout | undefined;
  let stopping = false;
  let stalls = createStallWatch(Math.max(10, Math.floor(hb / 4)));

  const countRole = (role: string, delta: number) => options.metrics?.sessions.inc({ role }, delta);

  function* hosts(): Iterable<WorkerLink> {
    for (const l of links.values()) if (l.role === "host" && !l.closed) yield l;
  }

  function* workers(): Iterable<WorkerLink> {
    for (const l of links.values()) if (l.role !== "client" && !l.closed) yield l;
  }

  function lose(link: WorkerLink, err?: ConnectError) {
    link.close(err);
    if (!links.delete(link.id)) return;
    countRole(link.role, -1);
    for (const listener of listeners) listener(link);
  }

  function overflow(link: WorkerLink, limit: string) {
    lose(link, new ConnectError(`session "${link.name}" does not read its stream: ${limit}`, Code.ResourceExhausted));
  }

  /** A name no host or client link holds yet: `base`, else `base-2`, `base-3`, ... */
  function uniqueName(base: string): string {
    const taken = (n: string) => {
      for (const l of links.values()) if (l.name === n && l.role !== "attached") return true;
      return false;
    };
    if (!taken(base)) return base;
    for (let i = 2; ; i++) if (!taken(`${base}-${i}`)) return `${base}-${i}`;
  }

  function tick() {
    const now = Date.now();
    const lostAfter = 3 * hb;
    // After the server's own loop stalled, what the peers sent meanwhile is still unread.
    const excused = stalls.excused(now, hb);
    for (const l of [...links.values()]) {
      if (now - l.lastReceived > lostAfter && !excused) {
        lose(l, new ConnectError(`session "${l.name}" sent nothing for ${now - l.lastReceived} ms (3 heartbeat intervals): declared lost`, Code.Unavailable));
      } else if (now - l.lastSent >= hb && l.queued === 0) {
        l.push(heartbeatFrame());
      }
    }
  }

  return {
    open(spec, openOptions = {}) {
      const name = openOptions.keepName || spec.role === "attached" ? spec.name : uniqueName(spec.name);
      const link = new WorkerLink({
        id: randomUUID(),
        name,
        role: spec.role,
        modules: new Set(spec.modules ?? []),
        capacity: spec.capacity ?? 0,
        canSpawn: spec.canSpawn ?? false,
        container: spec.container ?? "",
        // A suffixed name is a new identity: only the name asked for was proven.
        proven: (spec.proven ?? false) && name === spec.name,
        peer: spec.peer,
        maxQueuedBytes: options.maxSessionBufferBytes,
        onOverflow: overflow,
        onDrained: drained,
      });
      links.set(link.id, link);
      countRole(link.role, 1);
      const credential = link.role === "host" ? (options.credentials?.issue(link.name) ?? "") : "";
      link.push(welcomeFrame(link.id, link.name, hb, credential));
      for (const listener of openListeners) listener(link);
      return link;
    },
    hosts,
    workers,
    lose,
    onLost(listener) {
      listeners.push(listener);
    },
    onOpened(listener) {
      openListeners.push(listener);
    },
    onDrained(listener) {
      drainListeners.push(listener);
    },
    get stopping() {
      return stopping;
    },
    start() {
      const interval = Math.max(10, Math.floor(hb / 4));
      stalls = createStallWatch(interval);
      timer = setInterval(tick, interval);
      timer.unref();
    },
    stop(err) {
      stopping = true;
      if (timer) clearInterval(timer);
      timer = undefined;
      for (const l of [...links.values()]) lose(l, err);
    },
  };
}
