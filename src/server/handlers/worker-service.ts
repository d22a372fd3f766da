/**
 * WorkerService.Connect: the handshake (Hello or Attach, answered by Welcome or an error
 * status), then the link's frames in and out. The links themselves, and their liveness, are
 * kept by the link registry; what the frames say is handled by link-frames.ts.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ConnectResponseSchema,
  type Attach,
  type ConnectRequest,
  type ConnectResponse,
  type Hello,
  type WorkerFrame,
  type WorkerService,
} from "../../gen/k4s/v1/worker_service_pb.js";
import { ATTACH_TOKEN_HEADER } from "../../transport/environment.js";
import { ADMITTED_BY_ATTACH_TOKEN } from "../auth.js";
import type { ContainerLifecycle } from "../controllers/container-controller.js";
import { onWritten, type CallContext, type ServiceHandlers } from "../grpc-adapter.js";
import type { LogStore } from "../log-store.js";
import type { Metrics } from "../metrics.js";
import type { HostCredentials } from "../messaging/host-credentials.js";
import type { LinkRegistry } from "../messaging/link-registry.js";
import type { CallRouter } from "../messaging/router.js";
import type { WorkerLink } from "../messaging/worker-link.js";
import { createLinkFrames } from "./link-frames.js";

/**
 * The header that proves PEER_HEADER: the server's peer credential (an HMAC of its advertise
 * address under a key only the cluster's servers read). A client holding the bearer token
 * cannot make one, so it cannot pass for a server whose calls are answered without forwarding.
 */
export const PEER_CREDENTIAL_HEADER = "k4s-peer-credential";

/**
 * The header a server sets on its peer sessions (its advertise address), proven by
 * PEER_CREDENTIAL_HEADER: a call on such a session came from another server of the cluster.
 */
export const PEER_HEADER = "k4s-peer";

/** WorkerServiceOptions are the Connect handler's dependencies. */
export interface WorkerServiceOptions {
  router: CallRouter;
  /** The containers' lifecycle (none: the server takes client sessions only). */
  lifecycle?: ContainerLifecycle;
  links: LinkRegistry;
  logs: LogStore;
  /** Heartbeat interval announced to links (ms): a stream must say hello within 3 of them. */
  heartbeatIntervalMs: number;
  /** Resolves once the server knows its containers: a host's running list is read against them. */
  ready: Promise<void>;
  /** Checks the credential a host shows for its name (none: no host proves its name). */
  credentials?: HostCredentials;
  /**
   * Whether a session saying it is the peer session of server `advertise` comes from that server:
   * "member" when its peer credential is valid and it is a live member of the cluster, "lapsed"
   * when the credential is valid but the server's membership is not in etcd now (its lease lapsed
   * and it is joining again), "invalid" otherwise. None: every peer header is refused (a server of
   * one has no peers).
   */
  provePeer?: (advertise: string, credential: string) => Promise<PeerProof>;
  /**
   * In a cluster: why this server takes no host or attached process now (its lease went
   * unrenewed: what it holds may be taken by another server at any moment), else undefined.
   */
  workersRefused?: () => ConnectError | undefined;
  /**
   * In a cluster: claims a container for a process attaching here, cluster-wide; resolves to ""
   * when claimed, else to the server whose process is attached to it (the attach is refused
   * UNAVAILABLE: a dead server's claim lasts until its lease expires).
   */
  claimAttach?: (container: string, sessionId: string) => Promise<string>;
  metrics?: Metrics;
}

/** What a peer session's credential proves (see WorkerServiceOptions.provePeer). */
export type PeerProof = "member" | "lapsed" | "invalid";

/**
 * The server a header names, proven by its peer credential ("" when the header is absent). A
 * header nothing proves is refused PERMISSION_DENIED. A real server whose membership lapsed for a
 * moment (its etcd lease expired while etcd failed over, and it is joining again) is answered
 * UNAVAILABLE instead, and tries again.
 */
async function provenServer(ctx: CallContext, header: string, provePeer: WorkerServiceOptions["provePeer"]): Promise<string> {
  const server = String(ctx.metadata.get(header)[0] ?? "");
  if (server === "") return "";
  const credential = String(ctx.metadata.get(PEER_CREDENTIAL_HEADER)[0] ?? "");
  const refused = (why: string) => new ConnectError(`the ${header} header is for the servers of this cluster: ${why}`, Code.PermissionDenied);
  if (!provePeer) throw refused("this server is no member of a cluster");
  const proof = await provePeer(server, credential);
  if (proof === "member") return server;
  if (proof === "lapsed") throw new ConnectError(`server "${server}" is not a live member of this cluster now (its membership lapsed); try again`, Code.Unavailable);
  throw refused(`"${server}" showed no valid ${PEER_CREDENTIAL_HEADER}`);
}

/** In a cluster, claims the container for an attached link cluster-wide; ends the link and throws when another server holds it. */
async function claimAttach(options: WorkerServiceOptions, s: WorkerLink, container: string): Promise<void> {
  const heldBy = await options.claimAttach?.(container, s.id).catch((err: unknown) => {
    options.links.lose(s);
    throw new ConnectError(`attach: container "${container}" could not be claimed in the cluster: ${ConnectError.from(err).rawMessage}`, Code.Unavailable);
  });
  if (!heldBy) return;
  options.links.lose(s);
  // UNAVAILABLE, not FAILED_PRECONDITION: that server may have just died (its claim goes with
  // its lease, within the lease's TTL), and the process tries again, there or elsewhere.
  throw new ConnectError(`attach: container "${container}" is already attached by a process on server ${heldBy} (a claim of a server that died goes with its lease; try again)`, Code.Unavailable);
}

/** Takes a session's frames until its stream ends or breaks; then the session is lost. */
async function readLoop(it: AsyncIterator<ConnectRequest>, s: WorkerLink, handleFrame: (link: WorkerLink, frame: WorkerFrame) => void, links: LinkRegistry): Promise<void> {
  try {
    while (!s.closed) {
      const r = await it.next();
      if (r.done) break;
      s.lastReceived = Date.now();
      const frames = r.value.frames;
      for (let i = 0; i < frames.length && !s.closed; i++) handleFrame(s, frames[i]!);
    }
  } catch {
    // The stream broke: the session is lost like a closed one.
  }
  links.lose(s);
}

/** Waits for a stream's first request (its hello or attach), at most three heartbeats (at least 1 s). */
async function firstRequest(it: AsyncIterator<ConnectRequest>, signal: AbortSignal, hb: number): Promise<ConnectRequest> {
  const limit = Math.max(3 * hb, 1000);
  let timeout: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    const r = await Promise.race([
      it.next(),
      new Promise<never>((_, reject) => {
        timeout = setTimeout(() => reject(new ConnectError(`no hello or attach within ${limit} ms`, Code.DeadlineExceeded)), limit);
        onAbort = () => reject(new ConnectError("stream cancelled before hello", Code.Canceled));
        signal.addEventListener("abort", onAbort);
      }),
    ]);
    if (r.done) throw new ConnectError("stream ended before its first frame: expected hello or attach", Code.InvalidArgument);
    return r.value;
  } finally {
    clearTimeout(timeout);
    if (onAbort) signal.removeEventListener("abort", onAbort);
  }
}

/** Creates the WorkerService handlers. */
export function createWorkerService(options: WorkerServiceOptions): ServiceHandlers<typeof WorkerService> {
  const { links } = options;
  const lifecycleFor = (what: string): ContainerLifecycle => {
    if (options.lifecycle) return options.lifecycle;
    throw new ConnectError(`this server takes no ${what}`, Code.Unavailable);
  };
  const hb = options.heartbeatIntervalMs;
  const handleFrame = createLinkFrames(options);

  function openHello(hello: Hello, peer: string): WorkerLink {
    const role = hello.role === "" ? "host" : hello.role;
    if (role !== "host" && role !== "client") {
      throw new ConnectError(`hello.role must be "host" or "client", got "${hello.role}"`, Code.InvalidArgument);
    }
    if (peer && role !== "client") throw new ConnectError(`the ${PEER_HEADER} header is for a server's peer session (hello.role "client"), got role "${role}"`, Code.InvalidArgument);
    if (hello.capacity < 0) throw new ConnectError(`hello.capacity must be 0 (no limit) or more, got ${hello.capacity}`, Code.InvalidArgument);
    if (hello.name.length > 253) throw new ConnectError(`hello.name is longer than 253 characters`, Code.InvalidArgument);
    const lifecycle = role === "host" ? lifecycleFor("host sessions") : undefined;
    const base = hello.name || role;
    // Only the credential the server issued for a name proves a session is that host: without
    // it, a live host's name (and with it its containers) cannot be claimed.
    const proven = role === "host" && (options.credentials?.verify(base, hello.credential) ?? false);
    const spec = { name: base, role, modules: hello.modules, capacity: hello.capacity, canSpawn: hello.canSpawn, proven } as const;
    if (lifecycle && proven) {
      // The same host reconnecting before its old stream was declared lost: the newer session
      // takes over what the old one ran, under the same name, once. The older one is told so
      // (ALREADY_EXISTS) and must not reconnect, so two copies of one host never take turns.
      for (const old of links.hosts()) {
        if (old.name !== base) continue;
        const s = links.open(spec, { keepName: true });
        lifecycle.hostReplaced(old, s, hello.running);
        links.lose(old, new ConnectError(`host "${base}" reconnected on a newer session, which took over its name and containers`, Code.AlreadyExists));
        lifecycle.hostJoined(s, hello.running);
        return s;
      }
    }
    const s = links.open(peer ? { ...spec, peer } : spec);
    lifecycle?.hostJoined(s, hello.running);
    return s;
  }

  /** The attaches going on here, by container: one at a time each (the claim is this server's, whichever session makes it). */
  const attaching = new Map<string, string>();

  async function openAttach(a: Attach, credentialOnly: boolean): Promise<WorkerLink> {
    const lifecycle = lifecycleFor("attached processes");
    const other = attaching.get(a.container);
    if (other !== undefined) {
      throw new ConnectError(
        `attach: container "${a.container}" is being attached by another process ("${other}") on this server right now; a container takes one process at a time`,
        Code.AlreadyExists,
      );
    }
    const who = a.host || `${a.container}-process`;
    attaching.set(a.container, who);
    try {
      const container = await lifecycle.checkAttach(a, credentialOnly);
      try {
        if (links.stopping) throw new ConnectError("server is stopping", Code.Unavailable);
        const s = links.open({ name: who, role: "attached", container });
        await claimAttach(options, s, container);
        try {
          lifecycle.attached(s, container);
        } catch (err) {
          // Another process attached while this one was checked.
          links.lose(s);
          throw err;
        }
        return s;
      } catch (err) {
        lifecycle.attachFailed(container);
        throw err;
      }
    } finally {
      attaching.delete(a.container);
    }
  }

  async function* connect(reqs: AsyncIterable<ConnectRequest>, ctx: CallContext): AsyncGenerator<ConnectResponse> {
    if (links.stopping) throw new ConnectError("server is stopping", Code.Unavailable);
    const it = reqs[Symbol.asyncIterator]();
    const first = await firstRequest(it, ctx.signal, hb);
    const peer = await provenServer(ctx, PEER_HEADER, options.provePeer);
    await options.ready;
    const f0 = first.frames[0]?.frame;
    // Let in on an attach credential rather than the bearer token: only that Attach may follow.
    const credential = ctx.metadata.get(ADMITTED_BY_ATTACH_TOKEN)[0] === "1" ? String(ctx.metadata.get(ATTACH_TOKEN_HEADER)[0]) : undefined;
    if (credential !== undefined && (f0?.case !== "attach" || f0.value.token !== credential)) {
      throw new ConnectError(`an attach credential (${ATTACH_TOKEN_HEADER}) admits only the Attach of its own container, with that token as Attach.token`, Code.PermissionDenied);
    }
    const worker = f0?.case === "attach" || (f0?.case === "hello" && f0.value.role !== "client");
    const refusal = worker ? options.workersRefused?.() : undefined;
    if (refusal) throw refusal;
    let s: WorkerLink;
    if (f0?.case === "hello") {
      s = openHello(f0.value, peer);
    } else if (f0?.case === "attach") {
      s = await openAttach(f0.value, credential !== undefined);
    } else {
      throw new ConnectError(
        `the first frame must be hello or attach, got ${f0?.case ? f0.case : "no frame"}`,
        Code.InvalidArgument,
      );
    }
    for (let i = 1; i < first.frames.length && !s.closed; i++) handleFrame(s, first.frames[i]!);
    void readLoop(it, s, handleFrame, links);
    // A session the server ends (its peer does not read, is declared lost, ...) gets its status
    // without waiting for the stream to take its next batch, which a peer that does not read never does.
    s.onClose((error) => {
      if (error) ctx.end?.(error);
    });
    const onAbort = () => links.lose(s);
    ctx.signal.addEventListener("abort", onAbort);
    try {
      for (;;) {
        const batch = await s.next();
        if (!batch) break;
        if (batch.frames.length === 0) continue;
        // The frames count as unread by the peer until they are written to it.
        yield onWritten<ConnectResponse>({ $typeName: ConnectResponseSchema.typeName, frames: batch.frames }, () => s.written(batch), batch.bytes);
      }
    } finally {
      ctx.signal.removeEventListener("abort", onAbort);
      links.lose(s);
    }
    if (s.closeError) throw s.closeError;
  }

  return { connect };
}
