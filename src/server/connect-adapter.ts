/**
 * A bridge from the server's service implementations to a connect-es router, so that the
 * handlers the gRPC port serves also answer the Connect protocol (the web dashboard's
 * transport) with no second implementation.
 */
import * as grpc from "@grpc/grpc-js";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { ConnectError, createContextKey, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { responseMessage, type AdapterOptions, type CallContext, type ServiceHandlers } from "./grpc-adapter.js";

/** Context key of the client's address, set by the HTTP server that hosts the router. */
export const peerKey = createContextKey<string>("", { description: "client address" });

/** The CallContext of a Connect call: the same shape the gRPC adapter hands to handlers. */
function contextOf(hctx: HandlerContext): CallContext {
  const metadata = new grpc.Metadata();
  hctx.requestHeader.forEach((value, key) => {
    // Binary (-bin) headers would need decoding and no handler reads them.
    if (!key.endsWith("-bin")) metadata.add(key, value);
  });
  const timeout = hctx.timeoutMs();
  return {
    signal: hctx.signal,
    metadata,
    peer: hctx.values.get(peerKey),
    deadline: timeout === undefined ? undefined : Date.now() + timeout,
  };
}

/**
 * Registers the handlers of a service written for the gRPC adapter on a connect-es router.
 * Internal-error and call-end reports of the adapter options apply as they do on the gRPC port.
 */
export function addConnectService<S extends DescService>(
  router: ConnectRouter,
  service: S,
  impl: ServiceHandlers<S>,
  options: AdapterOptions = {},
): void {
  const ended = options.onCallEnd ?? (() => {});
  const methods: Record<string, unknown> = {};
  for (const m of service.methods) {
    const fn = (impl as Record<string, (...a: unknown[]) => unknown>)[m.localName];
    if (!fn) throw new Error(`no handler for ${service.typeName}.${m.name}`);
    const fail = (err: unknown): ConnectError => {
      if (!(err instanceof ConnectError)) options.onInternalError?.(m as DescMethod, err);
      const e = ConnectError.from(err);
      ended(m, e.code);
      return e;
    };
    const streamed = m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming";
    methods[m.localName] = streamed
      ? async function* (req: unknown, hctx: HandlerContext) {
          try {
            for await (const res of fn.call(impl, req, contextOf(hctx)) as AsyncIterable<unknown>) yield responseMessage(res);
            ended(m, 0);
          } catch (err) {
            throw fail(err);
          }
        }
      : async (req: unknown, hctx: HandlerContext) => {
          try {
            const res = responseMessage(await fn.call(impl, req, contextOf(hctx)));
            ended(m, 0);
            return res;
          } catch (err) {
            throw fail(err);
          }
        };
  }
  router.service(service, methods as never);
}
