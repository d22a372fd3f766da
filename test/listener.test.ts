/**
 * The server's TCP listener (src/server/listener.ts) with a real grpc-js server and real sockets:
 * a shutdown ends every connection it holds, including one that arrived as grpc-js shut down.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { listen } from "../src/server/listener.js";

/** The HTTP/2 client preface and an empty SETTINGS frame: what a gRPC client sends first. */
const PREFACE = Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    // Read (and drop) what the server sends, so the socket sees the server's end and closes.
    const s = connect(port, "127.0.0.1", () => resolve(s.resume()));
    s.once("error", reject);
  });
}

function closed(s: Socket): Promise<void> {
  return new Promise((resolve) => (s.destroyed ? resolve() : s.once("close", () => resolve())));
}

test("close() ends a connection that arrived after grpc-js began its shutdown (a stop used to wait for it for good)", async () => {
  const server = new grpc.Server();
  // Long enough that the silence check cannot be what ends the connection in this test.
  const listener = await listen(server, grpc.ServerCredentials.createInsecure(), { host: "127.0.0.1", port: 0, maxConnections: 100, silentSocketMs: 600_000 });
  server.forceShutdown();
  // A client reconnecting while the server stops: accepted by the port, never served by grpc-js.
  const late = await open(listener.port);
  late.on("error", () => {});
  late.write(PREFACE);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(late.destroyed, false, "the late connection is open before close()");
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([listener.close().then(() => "closed"), new Promise((r) => (timer = setTimeout(() => r("still waiting after 10 s"), 10_000)))]);
  clearTimeout(timer);
  assert.equal(outcome, "closed");
  await closed(late);
});

test("stopAccepting() refuses new connections at once and keeps the open ones until close()", async () => {
  const server = new grpc.Server();
  const listener = await listen(server, grpc.ServerCredentials.createInsecure(), { host: "127.0.0.1", port: 0, maxConnections: 100, silentSocketMs: 600_000 });
  const held = await open(listener.port);
  held.on("error", () => {});
  held.write(PREFACE);
  await new Promise((r) => setTimeout(r, 50));
  listener.stopAccepting();
  await assert.rejects(open(listener.port), /ECONNREFUSED/);
  assert.equal(held.destroyed, false, "an open connection stays until close()");
  assert.equal(listener.connections(), 1);
  server.forceShutdown();
  await listener.close();
  await closed(held);
  assert.equal(listener.connections(), 0);
});
