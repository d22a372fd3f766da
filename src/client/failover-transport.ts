/**
 * A Connect transport over the servers of one cluster: a call goes to the server that answered
 * last, and one that finds it UNAVAILABLE (gone, stopping, unreachable) is sent to the next
 * server, each tried once. Server streams (watch, log follow) fail over when opened; unary
 * calls whenever they fail UNAVAILABLE, which may send a call that a dying server had already
 * run to another one: apply, scale and delete are safe to repeat (a repeated delete answers
 * NOT_FOUND, a repeated create ALREADY_EXISTS).
 */
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";

/** Creates a transport that fails over among the given ones (one per server). */
export function createFailoverTransport(transports: readonly Transport[]): Transport {
  let current = 0;
  async function attempt<T>(call: (t: Transport) => Promise<T>): Promise<T> {
    let last: unknown;
    for (let i = 0; i < transports.length; i++) {
      const at = (current + i) % transports.length;
      try {
        const res = await call(transports[at]!);
        current = at;
        return res;
      } catch (err) {
        if (!(err instanceof ConnectError && err.code === Code.Unavailable)) throw err;
        last = err;
      }
    }
    throw last;
  }
  return {
    unary: (method, signal, timeoutMs, header, input, contextValues) => attempt((t) => t.unary(method, signal, timeoutMs, header, input, contextValues)),
    async stream(method, signal, timeoutMs, header, input, contextValues) {
      if (method.methodKind !== "server_streaming") return transports[current]!.stream(method, signal, timeoutMs, header, input, contextValues);
      // The one request of a server stream, kept so it can be sent again to the next server.
      const requests: MessageInitShape<DescMessage>[] = [];
      for await (const r of input) requests.push(r as MessageInitShape<DescMessage>);
      return attempt((t) => t.stream(method, signal, timeoutMs, header, createAsyncIterable(requests) as typeof input, contextValues));
    },
  };
}
