/**
 * The messaging plane: the router and the worker links, fed from the server's informer.
 *
 * Stored Containers and Services reach the router as they change (a container's mailbox exists
 * from the moment the Container does); a target the router does not know yet is looked up in
 * the store once, since a watch event may trail a write the caller already saw. A link that
 * dies takes what was in flight on it, and its own unanswered calls, with it. Routing itself
 * never touches the store.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Target } from "../../api/target.js";
import type { MessagingService } from "../../gen/k4s/v1/messaging_service_pb.js";
import type { Container } from "../../gen/k4s/v1/resources_pb.js";
import type { Informer } from "../controllers/informer.js";
import type { EventRecorder } from "../event-recorder.js";
import type { ServiceHandlers } from "../grpc-adapter.js";
import { createMessagingService } from "../handlers/messaging-service.js";
import type { Metrics } from "../metrics.js";
import type { ObjectEvent } from "../store/resource-store.js";
import type { HostCredentials } from "./host-credentials.js";
import { EnvelopeState } from "./envelope.js";
import { createLinkRegistry, type LinkRegistry } from "./link-registry.js";
import type { Letter } from "./mailbox.js";
import { createRouter, type Router } from "./router.js";
import type { RecoveredEntry, SendJournal } from "./send-journal.js";
import type { WorkerLink } from "./worker-link.js";

/** MessagingPlaneOptions are the plane's dependencies and limits. */
export interface MessagingPlaneOptions {
  /** The server's informer over Containers and Services. */
  informer: Informer;
  events: EventRecorder;
  /** Heartbeat interval announced to links (default 5000 ms); lost after 3 silent intervals. */
  heartbeatIntervalMs?: number;
  /** Counters and gauges to report to (messages, deliveries, sessions, inbox depths). */
  metrics?: Metrics;
  /** Count each container's load for the live stats (default true). */
  countLoad?: boolean;
  /** Issues and checks the credentials of host names (none: any session may claim any name). */
  credentials?: HostCredentials;
  /** Where sends to durable containers are journaled (none: durable delivery is kept in memory only). */
  journal?: SendJournal;
  /**
   * In a cluster: a durable container's journal is read back when this server starts holding it
   * (taken()), not when the container is first seen, since another server may hold it and
   * deliver what it journaled; and of a service's journal, a server reads back at start only
   * what its own earlier runs (or runs that wrote no writer in their keys) left: what another
   * member wrote is that member's to deliver while it lives, and the leader's once it is gone
   * (readDeparted).
   */
  recoversOnHold?: boolean;
  /**
   * Told after sends read back from a journal were handed to the router (in a cluster, those
   * that wait for an endpoint of their service here go on to its endpoints on other servers).
   */
  onRestored?: () => void;
  onError?: (message: string, err?: unknown) => void;
  /** Bytes a session may leave unread before it is cut off (default 64 MiB). */
  maxSessionBufferBytes?: number;
  /** Bytes of payload one inbox (or a service's queue of waiting calls) holds (default 64 MiB). */
  maxInboxBytes?: number;
}

/** MessagingPlane is the router with its links, and the unary messaging API over them. */
export interface MessagingPlane {
  readonly router: Router;
  readonly links: LinkRegistry;
  readonly heartbeatIntervalMs: number;
  readonly messagingService: ServiceHandlers<typeof MessagingService>;
  /** Starts the links' liveness checks. */
  start(): void;
  /**
   * This server starts holding a container: a durable one's journal is read back, and what other
   * servers (or earlier runs) journaled and did not settle is delivered here.
   */
  taken(obj: Container): void;
  /**
   * This server let go of a container: its journal is read back again when it is taken again.
   * Returns what waited in its inbox here, for the caller to route to the server holding it now,
   * but for the sends journaled against the container: the server holding it reads them back.
   */
  letGo(name: string, uid: string): Letter[];
  /**
   * (The leader, in a cluster.) Reads back the entries of every service's journal written by a
   * server that is no longer a member (its name is not in `live`): that server will never
   * deliver them. Each entry is claimed in a transaction that holds only while its writer's
   * member record (`recordOf(writer)`) is absent, so a writer that joined again (or was alive
   * all along) keeps its entries, and of two readers only one delivers an entry. Entries this
   * run reads back already are skipped. Resolves with how many it read; rejects when a journal
   * could not be read (what was read is delivered: read all again later).
   */
  readDeparted(live: ReadonlySet<string>, recordOf: (writer: string) => string): Promise<number>;
  /** Ends every link and fails every waiting call with UNAVAILABLE. */
  stop(message: string): void;
}

/** Creates the messaging plane; it follows the informer from now on. */
export function createMessagingPlane(options: MessagingPlaneOptions): MessagingPlane {
  const { informer, metrics } = options;
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? 5000;
  const { journal } = options;
  const router = createRouter({ events: options.events, metrics, lookup, countLoad: options.countLoad, journal, maxInboxBytes: options.maxInboxBytes });
  const links = createLinkRegistry({ heartbeatIntervalMs, metrics, credentials: options.credentials, maxSessionBufferBytes: options.maxSessionBufferBytes });

  links.onLost((link) => {
    const calls = [...link.calls.values()];
    // The waiting ones first: withdrawing one in flight hands its worker the next waiting
    // message, which must not be another call of this gone session.
    for (const env of calls) if (env.state !== EnvelopeState.InFlight) router.abandon(env, 0, `caller session ${link.id} ended`);
    for (const env of calls) router.abandon(env, 0, `caller session ${link.id} ended`);
    router.linkLost(link, describe(link));
  });
  links.onDrained((link) => router.linkDrained(link));
  const reader = journal && createJournalReader(journal, router, options);
  informer.subscribe((e) => {
    feed(router, e);
    reader?.follow(e);
  });
  metrics?.onCollectInboxes(function* () {
    for (const l of router.loads()) yield [l.name, l.queued] as [string, number];
  });

  async function lookup(target: Target): Promise<void> {
    if (target.kind !== "service" && (await informer.refresh("Container", target.name))) return;
    if (target.kind !== "container" && !router.knows({ kind: "service", name: target.name })) await informer.refresh("Service", target.name);
  }

  return {
    router,
    links,
    heartbeatIntervalMs,
    messagingService: createMessagingService({ router, metrics }),
    start: () => links.start(),
    taken(obj) {
      const meta = obj.metadata;
      if (reader && options.recoversOnHold && meta && obj.spec?.delivery === "durable") reader.taken(meta.name, meta.uid);
    },
    letGo(name, uid) {
      if (!options.recoversOnHold) return [];
      reader?.letGo(uid);
      const out: Letter[] = [];
      for (const env of router.takeBack(name)) {
        if (journal && env.journalKey && env.service === "") {
          journal.release(env.journalKey);
          env.state = EnvelopeState.Done;
        } else out.push(env);
      }
      return out;
    },
    readDeparted: async (live, recordOf) => (reader ? reader.readDeparted(live, recordOf) : 0),
    stop(message) {
      links.stop(new ConnectError(message, Code.Unavailable));
      router.stop(message);
    },
  };
}

/** JournalReader reads the journals of durable sends back into the router (see MessagingPlane). */
interface JournalReader {
  /** A stored Container or Service changed: a journal is read back when first seen (or dropped with its owner). */
  follow(e: ObjectEvent): void;
  /** A durable container is held here now: its journal is read back, then again until quiet. */
  taken(name: string, uid: string): void;
  /** A container is held here no more: read back anew when taken again. */
  letGo(uid: string): void;
  readDeparted(live: ReadonlySet<string>, recordOf: (writer: string) => string): Promise<number>;
}

/** Creates the reading back of a plane's journal into its router. */
function createJournalReader(journal: SendJournal, router: Router, options: MessagingPlaneOptions): JournalReader {
  const { informer, metrics } = options;
  /**
   * The owners whose journals this run has read back (once each while known, or held: later
   * entries are its own), each with the token of that reading: a container taken again gets a
   * new one, which stops the read-again chain of its earlier takeover.
   */
  const recovered = new Map<string, object>();
  const failed = (kind: string, name: string) => (err: unknown) => options.onError?.(`the journal of durable sends of ${kind} "${name}"`, err);
  type From = (writer: string | undefined) => boolean;

  /**
   * Reads an owner's journal back (once while it is known, or held), again after a back-off
   * while it fails; returns the reading's token.
   */
  function readBack(kind: "container" | "service", name: string, uid: string, from?: From): object {
    const token = {};
    recovered.set(uid, token);
    const attempt = () =>
      void read(kind, name, uid, from).then((found) => {
        if (found < 0) setTimeout(() => recovered.get(uid) === token && attempt(), READ_RETRY_MS).unref();
      });
    attempt();
    return token;
  }

  /**
   * Hands what an owner's journal holds (and this run reads back for the first time) to the
   * router; resolves with how much, or -1 when the journal could not be read.
   */
  function read(kind: "container" | "service", name: string, uid: string, from?: From): Promise<number> {
    return journal.recover(uid, from).then(
      (entries) => restore(kind, name, uid, entries),
      (err: unknown) => (failed(kind, name)(err), -1),
    );
  }

  function restore(kind: "container" | "service", name: string, uid: string, entries: RecoveredEntry[]): number {
    if (entries.length > 0 && router.restore(kind, name, uid, entries)) {
      metrics?.journalRecovered.inc(entries.length);
      options.onRestored?.();
    }
    return entries.length;
  }

  /**
   * Reads a container taken over again every READ_AGAIN_MS while it is held here, until
   * QUIET_READS reads in a row found nothing new: the old holder, until it sees the container
   * move, may still journal sends that it lets go of then, for this server to read back.
   */
  function readAgain(name: string, uid: string, token: object, quiet: number) {
    const current = () => recovered.get(uid) === token;
    setTimeout(() => {
      if (!current()) return;
      void read("container", name, uid).then((found) => {
        // A failed read is not a quiet one: what it may have claimed comes with the next.
        const next = found > 0 ? 0 : found < 0 ? quiet : quiet + 1;
        if (current() && next < QUIET_READS) readAgain(name, uid, token, next);
      });
    }, READ_AGAIN_MS).unref();
  }

  return {
    follow(e) {
      const obj = e.object;
      const meta = obj.metadata;
      if (!meta || (obj.$typeName === "k4s.v1.Container" && obj.spec?.delivery !== "durable")) return;
      if (obj.$typeName !== "k4s.v1.Container" && obj.$typeName !== "k4s.v1.Service") return;
      const kind = obj.$typeName === "k4s.v1.Container" ? "container" : "service";
      if (e.type === "DELETED") {
        recovered.delete(meta.uid);
        journal.drop(meta.uid).catch(failed(kind, meta.name));
        return;
      }
      if ((kind === "container" && options.recoversOnHold) || recovered.has(meta.uid)) return;
      // In a cluster, another member's entries are its own to deliver while it lives (see readDeparted).
      const from = options.recoversOnHold ? (w: string | undefined) => w === undefined || w === journal.writer : undefined;
      readBack(kind, meta.name, meta.uid, from);
    },
    taken(name, uid) {
      if (recovered.has(uid)) return;
      readAgain(name, uid, readBack("container", name, uid), 0);
    },
    letGo: (uid) => void recovered.delete(uid),
    async readDeparted(live, recordOf) {
      const departed = (w: string | undefined) => w !== undefined && w !== journal.writer && !live.has(w);
      // Claimed only while the writer's member record is absent: `live` may be stale by now.
      const gone = (w: string | undefined) => (w === undefined ? undefined : recordOf(w));
      let found = 0;
      let failure: { err: unknown } | undefined;
      // A journal that fails to be read does not hold up the others; the pass fails once all
      // were tried, and the leader reads every journal again (see departed-journals.ts).
      for (const s of [...informer.list("Service")]) {
        const meta = s.metadata;
        if (!meta) continue;
        try {
          found += restore("service", meta.name, meta.uid, await journal.recover(meta.uid, departed, gone));
        } catch (err) {
          failure ??= { err };
        }
      }
      if (failure) throw failure.err;
      return found;
    },
  };
}

/** How often a durable container taken over has its journal read again (ms). */
const READ_AGAIN_MS = 3000;
/** How long after a failed first read of a journal it is read again (ms). */
const READ_RETRY_MS = 2000;
/** After how many reads in a row that found nothing new the reading again stops. */
const QUIET_READS = 10;

/** Hands a stored change to the router. */
function feed(router: Router, e: ObjectEvent): void {
  const obj = e.object;
  const meta = obj.metadata;
  if (!meta) return;
  if (obj.$typeName === "k4s.v1.Container") {
    if (e.type === "DELETED") router.removeContainer(meta.name, meta.uid);
    else if (obj.spec) router.upsertContainer(obj);
  } else if (obj.$typeName === "k4s.v1.Service") {
    if (e.type === "DELETED") router.removeService(meta.name, meta.uid);
    else router.upsertService(obj);
  }
}

/** How a lost link is named in what the router answers ("lost its host ..."). */
function describe(link: WorkerLink): string {
  return link.role === "attached" ? `its attached process "${link.name}"` : `its host "${link.name}"`;
}
