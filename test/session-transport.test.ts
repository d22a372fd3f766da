/**
 * The SDK session's transport (grpc-js client with the hand-written frame codec): TLS with a
 * trusted certificate and servername, the bearer token, and batches split below the message
 * size limits, end to end through a real server and an attached worker.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { createClient } from "../src/client/index.js";
import { attach } from "../src/workers/runtime/attach.js";
import { defineWorker } from "../src/workers/runtime/define-worker.js";
import { eventually, startTestServer } from "./helpers.js";

const echo = defineWorker(async (ctx) => {
  for await (const m of ctx.messages) if (m.expectsReply) m.reply(m.data, { contentType: "application/octet-stream" });
});

function certificate(): { cert: Buffer; key: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), "k4s-session-tls-"));
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=k4s.test",
    "-addext", "subjectAltName=DNS:k4s.test",
    "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
  ], { stdio: "ignore" });
  return { cert: readFileSync(join(dir, "cert.pem")), key: readFileSync(join(dir, "key.pem")) };
}

test("sessions over TLS (servername checked) with a bearer token carry requests; a wrong token, a certificate for another name or an untrusted one is refused", async () => {
  const { cert, key } = certificate();
  const token = "tls-s3cret";
  const server = await startTestServer({ tls: { cert, key }, token });
  // The certificate names k4s.test, not 127.0.0.1: only servername makes it match.
  const tls = { ca: cert, servername: "k4s.test" };
  const client = createClient({ address: server.address, tls, token, reconnect: false });
  // Applied first: an attach that reaches the server before the container exists is refused NOT_FOUND.
  await client.apply("kind: Container\nmetadata: {name: tls-echo}\nspec: {concurrency: 8}\n");
  const worker = attach({ address: server.address, container: "tls-echo", token, tls, worker: echo, reconnect: false });
  try {
    await worker.ready;
    await eventually(async () => (await client.get("Container", "tls-echo"))?.status?.ready === true, 10_000, "tls-echo ready");
    const data = new Uint8Array([1, 2, 3, 250]);
    const reply = await client.request<Uint8Array>("tls-echo", data, { contentType: "application/octet-stream" });
    assert.deepEqual([...reply], [1, 2, 3, 250]);

    const wrongToken = createClient({ address: server.address, tls, token: "nope", reconnect: false });
    try {
      await assert.rejects(wrongToken.send("tls-echo", 1), (e: ConnectError) => e.code === Code.Unauthenticated);
    } finally {
      await wrongToken.close();
    }
    // Without servername the certificate is checked against the address, 127.0.0.1: no match.
    const wrongName = createClient({ address: server.address, tls: { ca: cert }, token, reconnect: false });
    try {
      await assert.rejects(wrongName.send("tls-echo", 1), (e: ConnectError) => e.code === Code.Unavailable);
    } finally {
      await wrongName.close();
    }
    const untrusted = createClient({ address: server.address, tls: { servername: "k4s.test" }, token, reconnect: false });
    try {
      await assert.rejects(untrusted.send("tls-echo", 1), (e: ConnectError) => e.code === Code.Unavailable);
    } finally {
      await untrusted.close();
    }
  } finally {
    await worker.stop(1000);
    await client.close();
    await server.stop();
  }
});

test("calls sent together beyond the server's 16 MiB message limit go in several batches; an oversized payload fails alone", async () => {
  const server = await startTestServer();
  const client = createClient({ address: server.address, reconnect: false });
  // The container first: an attach without reconnecting fails for good when it is not there yet.
  await client.apply("kind: Container\nmetadata: {name: big-echo}\nspec: {concurrency: 32}\n");
  const worker = attach({ address: server.address, container: "big-echo", worker: echo, reconnect: false });
  try {
    await worker.ready;
    await eventually(async () => (await client.get("Container", "big-echo"))?.status?.ready === true, 10_000, "big-echo ready");
    // Twenty 1 MiB requests made in one tick: joined into one ConnectRequest they would pass the
    // server's 16 MiB limit and end the stream; their replies would pass grpc clients' 4 MiB.
    const payloads = Array.from({ length: 20 }, (_, i) => new Uint8Array(1024 * 1024).fill(i + 1));
    const replies = await Promise.all(
      payloads.map((p) => client.request<Uint8Array>("big-echo", p, { contentType: "application/octet-stream", timeoutMs: 20_000 })),
    );
    replies.forEach((r, i) => {
      assert.equal(r.byteLength, 1024 * 1024);
      assert.ok(r.every((b) => b === i + 1), `reply ${i} carries request ${i}'s bytes`);
    });
    const huge = new Uint8Array(17 * 1024 * 1024);
    await assert.rejects(
      client.send("big-echo", huge, { contentType: "application/octet-stream" }),
      (e: ConnectError) => e.code === Code.ResourceExhausted && /exceeds the limit/.test(e.rawMessage),
    );
    assert.deepEqual(await client.send("big-echo", "small"), { container: "big-echo" });
  } finally {
    await worker.stop(1000);
    await client.close();
    await server.stop();
  }
});
