/**
 * The connection a session's WorkerService.Connect stream runs on, behind one small interface
 * with two implementations of the same gRPC wire protocol:
 *
 * - "lean" (the default, lean-channel.ts): the stream spoken directly over node:http2, its
 *   frames written as the codec lays them out (no copy of a large payload, no promise per
 *   message) and read without re-assembling a message that arrived in one piece;
 * - "grpc-js" (grpc-channel.ts): @grpc/grpc-js's client call.
 *
 * Both send the same headers, bytes and trailers to the same endpoint, so the server and other
 * gRPC clients cannot tell them apart. `K4S_WORKER_TRANSPORT=grpc-js` (or SessionOptions.transport)
 * selects grpc-js; so does an HTTP proxy in the environment (grpc_proxy, https_proxy or
 * http_proxy), which only grpc-js's client goes through.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { ConnectRequest, ConnectResponse } from "../gen/k4s/v1/worker_service_pb.js";

/** What the stream reports: each message received, then its one final status. */
export interface StreamListener {
  message(res: ConnectResponse): void;
  /** The gRPC status the stream ended with (0: OK), once; nothing is reported after it. */
  status(code: number, details: string): void;
}

/** One open WorkerService.Connect stream. */
export interface FrameStream {
  /** Sends a ConnectRequest (ignored once the stream ended). */
  write(req: Pick<ConnectRequest, "frames">): void;
  /** Half-closes: no more requests; the server's answers still arrive. */
  end(): void;
  /** Ends the stream now; its status is CANCELLED unless it had one already. */
  cancel(): void;
}

/** A connection to one server on which streams are opened. */
export interface StreamChannel {
  /** Opens the method's stream with these headers (lower-case names). */
  open(path: string, headers: Readonly<Record<string, string>>, listener: StreamListener): FrameStream;
  /** Closes the connection (after its stream was ended or cancelled). */
  close(): void;
}

/** The transports a session's stream can run on. */
export type WorkerTransport = "lean" | "grpc-js";

/** The environment variable that selects the transport of every session of a process. */
export const WORKER_TRANSPORT_ENV = "K4S_WORKER_TRANSPORT";

const PROXY_ENV = ["grpc_proxy", "https_proxy", "http_proxy"];

/**
 * The transport to use: the one asked for, else K4S_WORKER_TRANSPORT's, else "lean"; "grpc-js"
 * whenever an HTTP proxy is configured. Any other value is INVALID_ARGUMENT naming it.
 */
export function workerTransport(asked: WorkerTransport | undefined, env: NodeJS.ProcessEnv = process.env): WorkerTransport {
  const given = asked ?? (env[WORKER_TRANSPORT_ENV] || "lean");
  if (given !== "lean" && given !== "grpc-js") {
    const where = asked === undefined ? `${WORKER_TRANSPORT_ENV}=` : "transport ";
    throw new ConnectError(`invalid worker transport ${where}"${given}": give "lean" or "grpc-js"`, Code.InvalidArgument);
  }
  if (given === "lean" && PROXY_ENV.some((name) => env[name])) return "grpc-js";
  return given;
}
