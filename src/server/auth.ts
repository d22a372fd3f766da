/**
 * Bearer-token authentication for every RPC of the server, as a grpc-js server interceptor so
 * that it also guards the services not added through the adapter (reflection, health).
 */
import { timingSafeEqual } from "node:crypto";
import * as grpc from "@grpc/grpc-js";

/** Tells whether an `authorization` header value carries the expected bearer token. */
export function bearerMatches(header: unknown, token: string): boolean {
  if (typeof header !== "string" || !header.startsWith("Bearer ")) return false;
  const given = Buffer.from(header.slice("Bearer ".length));
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * Creates an interceptor that refuses, with UNAUTHENTICATED, every call whose metadata lacks
 * `authorization: Bearer <token>`. The refusal happens before the handler runs.
 */
export function createAuthInterceptor(token: string): grpc.ServerInterceptor {
  return (_method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, mdNext) {
            const header = metadata.get("authorization")[0];
            if (bearerMatches(header, token)) {
              mdNext(metadata);
            } else {
              call.sendStatus({
                code: grpc.status.UNAUTHENTICATED,
                details: header === undefined ? "missing bearer token: set --token or K4S_TOKEN" : "invalid bearer token",
              });
            }
          },
        });
      },
    });
}

/** Tells whether a listen address is a loopback one (safe to serve without a token). */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host === "[::1]" || /^127\./.test(host);
}
