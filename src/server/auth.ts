/**
 * Bearer-token authentication for every RPC of the server, as a grpc-js server interceptor so
 * that it also guards the services not added through the adapter (reflection). Health checks are
 * the one exception: load balancers and orchestrator probes cannot send a token, and the answer
 * (SERVING or not) reveals nothing a TCP connect would not.
 */
import { timingSafeEqual } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { ATTACH_TOKEN_HEADER } from "../transport/environment.js";


/** The methods anyone may call without a token: the standard gRPC health service. */
export const OPEN_METHOD_PREFIX = "/grpc.health.v1.Health/";

/**
 * Set by the interceptor (never taken from the caller) on a WorkerService.Connect call it let in
 * on an attach credential instead of the bearer token.
 */
export const ADMITTED_BY_ATTACH_TOKEN = "k4s-admitted-by-attach-token";

/** The one method an attach credential admits. */
const WORKER_CONNECT_PATH = "/k4s.v1.WorkerService/Connect";

/**
 * What a refused caller is told to set: the variable the k4s CLI, the SDKs and the processes a
 * worker host spawns all read the bearer token from, and the header any other client sends.
 */
const HINT = 'send "authorization: Bearer <token>" (the k4s CLI and SDK read it from K4S_TOKEN or --token)';
const MISSING_TOKEN = `missing bearer token: ${HINT}`;
const INVALID_TOKEN = `invalid bearer token: ${HINT}`;

/** Tells whether an `authorization` header value carries the expected bearer token. */
export function bearerMatches(header: unknown, token: string): boolean {
  if (typeof header !== "string" || !header.startsWith("Bearer ")) return false;
  const given = Buffer.from(header.slice("Bearer ".length));
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * Creates an interceptor that refuses, with UNAUTHENTICATED, every call but a health check whose
 * metadata lacks `authorization: Bearer <token>`. The refusal happens before the handler runs.
 * A WorkerService.Connect call with an attach credential instead is let in marked
 * ADMITTED_BY_ATTACH_TOKEN; the worker service then accepts only the Attach it is for.
 */
export function createAuthInterceptor(token: string): grpc.ServerInterceptor {
  return (method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, mdNext) {
            const header = metadata.get("authorization")[0];
            metadata.remove(ADMITTED_BY_ATTACH_TOKEN);
            if (method.path.startsWith(OPEN_METHOD_PREFIX) || bearerMatches(header, token)) {
              mdNext(metadata);
            } else if (header === undefined && method.path === WORKER_CONNECT_PATH && metadata.get(ATTACH_TOKEN_HEADER)[0]) {
              metadata.set(ADMITTED_BY_ATTACH_TOKEN, "1");
              mdNext(metadata);
            } else {
              call.sendStatus({
                code: grpc.status.UNAUTHENTICATED,
                details: header === undefined ? MISSING_TOKEN : INVALID_TOKEN,
              });
            }
          },
        });
      },
    });
}

/**
 * Makes `server` answer a method it does not serve only after its interceptors let the call
 * through, so an unauthenticated caller learns UNAUTHENTICATED, not which methods exist.
 * grpc-js itself answers UNIMPLEMENTED for such a path before any interceptor runs; this hands
 * it a catch-all handler instead (through grpc-js's handler lookup, the one place that decides),
 * which answers UNIMPLEMENTED naming the method.
 */
export function guardUnknownMethods(server: grpc.Server): void {
  const lookup = server as unknown as { _retrieveHandler(path: string): unknown };
  const retrieve = lookup._retrieveHandler;
  if (typeof retrieve !== "function") throw new Error("this grpc-js version has no handler lookup to guard");
  const passthrough = (value: Buffer) => value;
  lookup._retrieveHandler = function (this: unknown, path: string) {
    return (
      retrieve.call(this, path) ?? {
        type: "bidi",
        path,
        serialize: passthrough,
        deserialize: passthrough,
        func: (stream: grpc.ServerDuplexStream<Buffer, Buffer>) => {
          stream.on("data", () => {});
          stream.emit("error", { code: grpc.status.UNIMPLEMENTED, details: `the server does not implement the method ${path}` });
        },
      }
    );
  };
}

/**
 * Creates the connect-es interceptor that refuses, with UNAUTHENTICATED, every Connect call
 * lacking `authorization: Bearer <token>`: the same rule as the gRPC port's interceptor.
 */
export function createConnectAuthInterceptor(token: string): Interceptor {
  return (next) => async (req) => {
    const header = req.header.get("authorization");
    if (!bearerMatches(header ?? undefined, token)) {
      throw new ConnectError(header === null ? MISSING_TOKEN : INVALID_TOKEN, Code.Unauthenticated);
    }
    return next(req);
  };
}

/** Tells whether a listen address is a loopback one (safe to serve without a token). */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host === "[::1]" || /^127\./.test(host);
}
