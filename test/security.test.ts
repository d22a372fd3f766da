/**
 * Security: bearer token on every RPC but health (reflection and unknown methods included), TLS, loopback-only
 * default, and the Prometheus endpoint.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient as createRpcClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { ResourceService } from "../src/gen/k4s/v1/resource_service_pb.js";
import { HealthCheckResponse_ServingStatus, Health } from "../src/gen/grpc/health/v1/health_pb.js";
import { createServer } from "../src/server/server.js";
import { startTestServer } from "./helpers.js";

const withToken =
  (token: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };

async function codeOf(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

test("a server with a token refuses every RPC without it, wrong or missing, and serves it with it", async () => {
  const server = await startTestServer({ token: "s3cret" });
  try {
    const baseUrl = `http://${server.address}`;
    const anonymous = createRpcClient(ResourceService, createGrpcTransport({ baseUrl }));
    const wrong = createRpcClient(ResourceService, createGrpcTransport({ baseUrl, interceptors: [withToken("nope")] }));
    const right = createRpcClient(ResourceService, createGrpcTransport({ baseUrl, interceptors: [withToken("s3cret")] }));
    assert.equal(await codeOf(anonymous.list({ kind: "Container" })), Code.Unauthenticated);
    assert.equal(await codeOf(wrong.list({ kind: "Container" })), Code.Unauthenticated);
    assert.equal(await codeOf(right.list({ kind: "Container" })), "ok");
    // The refusal says what to send and which variable the k4s tools read it from.
    await assert.rejects(anonymous.list({ kind: "Container" }), /missing bearer token: send "authorization: Bearer <token>" \(the k4s CLI and SDK read it from K4S_TOKEN or --token\)/);
    await assert.rejects(wrong.list({ kind: "Container" }), /invalid bearer token: .*K4S_TOKEN/);
    // Health answers without a token (probes cannot send one), with one too.
    const health = createRpcClient(Health, createGrpcTransport({ baseUrl }));
    assert.equal((await health.check({})).status, HealthCheckResponse_ServingStatus.SERVING);
    const healthOk = createRpcClient(Health, createGrpcTransport({ baseUrl, interceptors: [withToken("s3cret")] }));
    assert.equal((await healthOk.check({})).status, HealthCheckResponse_ServingStatus.SERVING);
    // A streaming call is refused before its handler runs.
    const watch = anonymous.watch({ kind: "Container" });
    assert.equal(await codeOf((async () => { for await (const _ of watch) break; })()), Code.Unauthenticated);
  } finally {
    await server.stop();
  }
});

/** Calls a method by path with raw bytes; resolves with the status code and message. */
function rawCall(address: string, path: string, metadata: grpc.Metadata, stream = false): Promise<{ code: number; details: string }> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const done = (resolve: (r: { code: number; details: string }) => void) => (err: grpc.ServiceError | null) => {
    client.close();
    resolve({ code: err?.code ?? 0, details: err?.details ?? "" });
  };
  const id = (b: Buffer) => b;
  return new Promise((resolve) => {
    if (!stream) {
      client.makeUnaryRequest(path, id, id, Buffer.alloc(0), metadata, { deadline: Date.now() + 10_000 }, done(resolve));
      return;
    }
    const call = client.makeBidiStreamRequest(path, id, id, metadata, { deadline: Date.now() + 10_000 });
    call.on("data", () => {});
    call.on("error", (err: grpc.ServiceError) => done(resolve)(err));
    call.on("status", (s: grpc.StatusObject) => s.code === 0 && done(resolve)(null));
    call.write(Buffer.alloc(0));
  });
}

test("with a token: reflection and unknown methods answer UNAUTHENTICATED without it; with it, an unknown method is UNIMPLEMENTED", async () => {
  const server = await startTestServer({ token: "s3cret" });
  try {
    const none = new grpc.Metadata();
    const good = new grpc.Metadata();
    good.set("authorization", "Bearer s3cret");
    const reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    for (const [path, stream] of [[reflection, true], ["/k4s.v1.Nope/Nothing", false], ["/no.such.Service/Stream", true], ["/grpc.health.v1.Health/Nope", false]] as const) {
      const refused = await rawCall(server.address, path, none, stream);
      const expected = path.startsWith("/grpc.health.v1.") ? grpc.status.UNIMPLEMENTED : grpc.status.UNAUTHENTICATED;
      assert.equal(grpc.status[refused.code], grpc.status[expected], `${path} without a token: ${refused.details}`);
    }
    assert.equal(grpc.status[(await rawCall(server.address, "/k4s.v1.Nope/Nothing", good)).code], "UNIMPLEMENTED");
    const unknown = await rawCall(server.address, "/no.such.Service/Stream", good, true);
    assert.equal(grpc.status[unknown.code], "UNIMPLEMENTED");
    assert.match(unknown.details, /does not implement the method \/no\.such\.Service\/Stream/);
  } finally {
    await server.stop();
  }
});

test("the server refuses to listen beyond loopback without a token", () => {
  assert.throws(() => createServer({ host: "0.0.0.0", port: 0 }), /refusing to listen on 0\.0\.0\.0 without a token/);
});

test("TLS: a client that trusts the certificate talks to the server; a plaintext client cannot", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-tls-"));
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
    "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
  ], { stdio: "ignore" });
  const cert = readFileSync(join(dir, "cert.pem"));
  const server = await startTestServer({ tls: { cert, key: readFileSync(join(dir, "key.pem")) } });
  try {
    const secure = createRpcClient(
      ResourceService,
      createGrpcTransport({ baseUrl: `https://localhost:${server.port}`, nodeOptions: { ca: cert } }),
    );
    assert.equal((await secure.list({ kind: "Container" })).items.length, 0);
    const plain = createRpcClient(ResourceService, createGrpcTransport({ baseUrl: `http://${server.address}` }));
    assert.notEqual(await codeOf(plain.list({ kind: "Container" })), "ok");
  } finally {
    await server.stop();
  }
});

test("/metrics serves Prometheus text with RPC and store-write counters", async () => {
  const server = await startTestServer({ metricsPort: 0 });
  try {
    const client = createRpcClient(ResourceService, createGrpcTransport({ baseUrl: `http://${server.address}` }));
    await client.apply({ manifest: "kind: Service\nmetadata: {name: s}\nspec: {selector: 'x-*'}\n" });
    await codeOf(client.get({ kind: "Service", name: "missing" }));
    const res = await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /k4s_rpcs_total\{method="ResourceService\/Apply",code="OK"\} 1/);
    assert.match(text, /k4s_rpcs_total\{method="ResourceService\/Get",code="NOT_FOUND"\} 1/);
    assert.match(text, /k4s_store_writes_total [1-9]/);
    assert.match(text, /# TYPE k4s_request_duration_seconds histogram/);
    assert.equal((await fetch(`http://127.0.0.1:${server.metricsPort}/other`)).status, 404);
  } finally {
    await server.stop();
  }
});
