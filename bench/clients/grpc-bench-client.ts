/**
 * The grpc-js peer's load-side client: unary calls on one channel (HTTP/2 multiplexes the calls
 * in flight), Buffer passthrough.
 */
import * as grpc from "@grpc/grpc-js";
import { grpcEchoService } from "../peers/grpc-echo-service.js";
import { bytesPayload, confirmedSender, type BenchClient } from "./bench-client.js";

const id = (b: Buffer) => b;

/** Creates the grpc-js client of the echo server at address. */
export async function createGrpcBenchClient(address: string): Promise<BenchClient> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure(), { "grpc.max_receive_message_length": 16 * 1024 * 1024 });
  await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));
  const unary = (path: string, payload: Buffer) =>
    new Promise<Buffer>((resolve, reject) =>
      client.makeUnaryRequest(path, id, id, payload, (err, res) => (err ? reject(err) : resolve(res!))),
    );
  return {
    system: "grpc",
    hasTwoReplicas: false,
    hasFireAndForget: true,
    payload: (n) => Buffer.from(bytesPayload(n)),
    request: (_target, payload) => unary(grpcEchoService.echo!.path, payload as Buffer),
    // No fire-and-forget in gRPC: a unary Send answered empty is each message's acknowledgement.
    send: confirmedSender((payload) => unary(grpcEchoService.send!.path, payload as Buffer)),
    async close() {
      client.close();
    },
  };
}
