/**
 * How a standby server holds the session of a host or an attached process: it relays the
 * stream, frame batch for frame batch, to the leader, whose container lifecycle drives it. Every
 * relayed stream of one standby shares one HTTP/2 connection to the leader (one grpc-js
 * channel), and the leader sees the process's own frames: its hello, credential, heartbeats,
 * states and results, so everything a host is promised holds as if it were connected to the
 * leader. When either side ends, so does the other: a relayed host whose leader died reconnects
 * like any host whose server died.
 */
import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError } from "@connectrpc/connect";
import { WorkerService, type ConnectRequest, type ConnectResponse } from "../../gen/k4s/v1/worker_service_pb.js";
import { ATTACH_TOKEN_HEADER } from "../../transport/environment.js";
import { decodeConnectResponse, encodeConnectRequest } from "../../transport/frame-codec.js";
import { grpcChannel } from "../../transport/grpc-channel.js";
import { ADMITTED_BY_ATTACH_TOKEN } from "../auth.js";
import type { CallContext } from "../grpc-adapter.js";
import { PEER_CREDENTIAL_HEADER, RELAYED_BY_HEADER } from "../handlers/worker-service.js";
import type { SessionEntry } from "./session-record.js";
import type { PeerForwarderOptions } from "./peer-forwarder.js";

const CONNECT_PATH = `/${WorkerService.typeName}/${WorkerService.method.connect.name}`;

/** PeerRelayOptions say where the leader is, how to reach it, and who records the sessions held. */
export interface PeerRelayOptions extends PeerForwarderOptions {
  /** This server's peer credential, which proves its relayed-by header to the leader. */
  peerCredential: () => string;
  /** Told of every relayed session the leader welcomed, and of its end: this server holds it. */
  sessions?: {
    opened(entry: SessionEntry): void;
    ended(entry: SessionEntry): void;
  };
}

/** PeerRelay carries worker streams to the leader. */
export interface PeerRelay {
  /** Relays one stream whose first request was already read; yields what the leader answers. */
  relay(first: ConnectRequest, rest: AsyncIterator<ConnectRequest>, ctx: CallContext): AsyncGenerator<ConnectResponse>;
  /** Ends every relayed stream UNAVAILABLE and closes the connection to the leader. */
  stop(): void;
}

/** Creates the relay; the connection to the leader opens with the first stream. */
export function createPeerRelay(options: PeerRelayOptions): PeerRelay {
  let channel: { address: string; client: grpc.Client } | undefined;
  const streams = new Set<grpc.ClientDuplexStream<ConnectRequest, ConnectResponse>>();
  let stopped = false;

  function clientFor(address: string): grpc.Client {
    if (channel?.address === address) return channel.client;
    channel?.client.close();
    const c = grpcChannel(address, options.tls);
    channel = { address, client: new grpc.Client(address, c.credentials, c.options) };
    return channel.client;
  }

  /** The process's own credential goes on: an attach admitted by its attach token shows that token. */
  function metadataOf(ctx: CallContext): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set(RELAYED_BY_HEADER, options.self());
    md.set(PEER_CREDENTIAL_HEADER, options.peerCredential());
    if (ctx.metadata.get(ADMITTED_BY_ATTACH_TOKEN)[0] === "1") md.set(ATTACH_TOKEN_HEADER, String(ctx.metadata.get(ATTACH_TOKEN_HEADER)[0]));
    else if (options.token) md.set("authorization", `Bearer ${options.token}`);
    return md;
  }

  /** Writes what the process sends to the leader, minding the stream's write buffer. */
  async function forward(up: grpc.ClientDuplexStream<ConnectRequest, ConnectResponse>, rest: AsyncIterator<ConnectRequest>) {
    try {
      for (;;) {
        const r = await rest.next();
        if (r.done) break;
        if (!up.write(r.value)) await once(up, "drain");
      }
      up.end();
    } catch {
      up.cancel();
    }
  }

  return {
    async *relay(first, rest, ctx) {
      // Between leaders a host is answered at once: it tries the next server it was given.
      const leader = options.leader();
      if (stopped || !leader || leader === options.self()) throw options.standby();
      const up = clientFor(leader).makeBidiStreamRequest(CONNECT_PATH, encodeConnectRequest, decodeConnectResponse, metadataOf(ctx));
      streams.add(up);
      let status: grpc.StatusObject | undefined;
      up.on("status", (s: grpc.StatusObject) => (status = s));
      const f0 = first.frames[0]?.frame;
      let held: SessionEntry | undefined;
      const onAbort = () => up.cancel();
      ctx.signal.addEventListener("abort", onAbort);
      try {
        up.write(first);
        void forward(up, rest);
        for await (const res of up as AsyncIterable<ConnectResponse>) {
          if (!held) {
            const w = res.frames.find((f) => f.frame.case === "welcome")?.frame;
            if (w?.case === "welcome") {
              held = heldSession(f0, w.value.name, w.value.sessionId);
              options.sessions?.opened(held);
            }
          }
          yield res;
        }
      } catch (err) {
        if (stopped) throw new ConnectError("this server stopped standing by", Code.Unavailable);
        const s = status ?? (err as grpc.StatusObject);
        const code = typeof s.code === "number" && s.code !== grpc.status.OK ? (s.code as number as Code) : Code.Unavailable;
        throw new ConnectError(`${s.details ?? String(err)} (relayed to the leader ${leader})`, code);
      } finally {
        ctx.signal.removeEventListener("abort", onAbort);
        streams.delete(up);
        up.cancel();
        if (held) options.sessions?.ended(held);
      }
      if (stopped) throw new ConnectError("this server stopped standing by", Code.Unavailable);
    },
    stop() {
      stopped = true;
      for (const s of streams) s.cancel();
      channel?.client.close();
      channel = undefined;
    },
  };
}

/** The record of a relayed session, from its first frame: a host's with what it offers the scheduler, or an attached process's. */
function heldSession(first: ConnectRequest["frames"][number]["frame"] | undefined, name: string, sessionId: string): SessionEntry {
  if (first?.case === "attach") return { kind: "attached", name: first.value.container, sessionId };
  const hello = first?.case === "hello" ? first.value : undefined;
  return { kind: "host", name, sessionId, host: { modules: [...(hello?.modules ?? [])].sort(), capacity: hello?.capacity ?? 0, canSpawn: hello?.canSpawn ?? false } };
}
