/**
 * The grpc-js peer's server process: one hop, no worker. Prints nothing; tells the harness its
 * port over IPC and answers {cmd:"count"} with the Send calls received.
 */
import * as grpc from "@grpc/grpc-js";
import { exitWithParent, failStartup, tellParent } from "../lib/processes.js";
import { grpcEchoService } from "./grpc-echo-service.js";

let received = 0;
const EMPTY = Buffer.alloc(0);
const server = new grpc.Server({ "grpc.max_receive_message_length": 16 * 1024 * 1024 });
server.addService(grpcEchoService, {
  echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request),
  send: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
    received++;
    cb(null, EMPTY);
  },
});
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) failStartup(err);
  tellParent({ ev: "ready", address: `127.0.0.1:${port}` });
});
process.on("message", (m: { id: number; cmd: string }) => {
  if (m.cmd === "count") tellParent({ id: m.id, count: received });
});
exitWithParent(() => new Promise<void>((r) => server.tryShutdown(() => r())));
