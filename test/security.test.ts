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
import { once } from "node:events";
import type { DescMethod } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { ResourceService } from "../src/gen/k4s/v1/resource_service_pb.js";
import { MessagingService } from "../src/gen/k4s/v1/messaging_service_pb.js";
import { WorkerService } from "../src/gen/k4s/v1/worker_service_pb.js";
import { LogService } from "../src/gen/k4s/v1/log_service_pb.js";
import { StatsService } from "../src/gen/k4s/v1/stats_service_pb.js";
import { InfoService } from "../src/gen/k4s/v1/info_service_pb.js";
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

/** The services the server may serve, by full name, with the kind of each method. */
const KNOWN_SERVICES = new Map<string, Map<string, DescMethod["methodKind"]>>([
  ...[ResourceService, MessagingService, WorkerService, LogService, StatsService, InfoService, Health].map(
    (s) => [s.typeName, new Map(s.methods.map((m) => [m.name, m.methodKind]))] as const,
  ),
  // Reflection answers about the other services; it does not list itself.
  ["grpc.reflection.v1.ServerReflection", new Map([["ServerReflectionInfo", "bidi_streaming" as const]])],
  ["grpc.reflection.v1alpha.ServerReflection", new Map([["ServerReflectionInfo", "bidi_streaming" as const]])],
]);

/** The names of the services the server lists through reflection (ListServices, raw bytes). */
async function listedServices(address: string, metadata: grpc.Metadata): Promise<string[]> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const id = (b: Buffer) => b;
  const call = client.makeBidiStreamRequest("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", id, id, metadata, {
    deadline: Date.now() + 30_000,
  });
  call.on("error", () => {}); // the cancel below (a refusal rejects the once() below)
  try {
    // ServerReflectionRequest { list_services (7): "" }
    call.write(Buffer.from([0x3a, 0x00]));
    const [response] = (await once(call, "data")) as [Buffer];
    // ServerReflectionResponse { list_services_response (6): { service (1): { name (1) } } }
    const names: string[] = [];
    const fields = (bytes: Uint8Array, each: (no: number, r: BinaryReader) => void) => {
      const r = new BinaryReader(bytes);
      while (r.pos < r.len) {
        const [no, wireType] = r.tag();
        if (wireType === WireType.LengthDelimited) each(no, r);
        else r.skip(wireType);
      }
    };
    fields(response, (no, r) => (no === 6 ? fields(r.bytes(), (n, l) => (n === 1 ? fields(l.bytes(), (m, sr) => (m === 1 ? names.push(sr.string()) : sr.bytes())) : l.bytes())) : r.bytes()));
    return names;
  } finally {
    call.cancel();
    client.close();
  }
}

/** The metadata of a call: an authorization header, or none. */
function authorization(header?: string): grpc.Metadata {
  const m = new grpc.Metadata();
  if (header !== undefined) m.set("authorization", header);
  return m;
}

test("a server with a token refuses every RPC of every service (listed by reflection, methods from their descriptors) without it, wrong or missing, and serves it with it; health is the one exception", async () => {
  const server = await startTestServer({ token: "s3cret" });
  try {
    const listed = await listedServices(server.address, authorization("Bearer s3cret"));
    assert.ok(listed.length >= 6, `reflection lists ${listed.join(", ")}`);
    const unknown = listed.filter((name) => !KNOWN_SERVICES.has(name));
    assert.deepEqual(unknown, [], "a service the server serves has no descriptor in this test: add it to KNOWN_SERVICES");
    const services = new Set([...listed, "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]);
    const calls: Promise<void>[] = [];
    for (const service of services) {
      for (const [method, kind] of KNOWN_SERVICES.get(service)!) {
        const path = `/${service}/${method}`;
        const open = service === Health.typeName;
        for (const header of [undefined, "Bearer nope", "s3cret", "Bearer s3cret"]) {
          calls.push(
            rawCall(server.address, path, authorization(header), kind).then((r) => {
              const what = `${path} with ${header === undefined ? "no authorization" : `authorization "${header}"`}: ${grpc.status[r.code]} ${r.details}`;
              if (header === "Bearer s3cret" || open) {
                assert.ok(r.code !== grpc.status.UNAUTHENTICATED && r.code !== grpc.status.UNIMPLEMENTED, what);
              } else {
                assert.equal(grpc.status[r.code], "UNAUTHENTICATED", what);
                assert.match(r.details, header === undefined ? /^missing bearer token: send "authorization: Bearer <token>"/ : /^invalid bearer token: .*K4S_TOKEN/, what);
              }
            }),
          );
        }
      }
    }
    await Promise.all(calls);
    assert.ok(calls.length >= 4 * 20, `${calls.length} calls made`);

    // Through the SDK's transport too: the refusal says what to send and where the k4s tools read it.
    const baseUrl = `http://${server.address}`;
    const anonymous = createRpcClient(ResourceService, createGrpcTransport({ baseUrl }));
    const wrong = createRpcClient(ResourceService, createGrpcTransport({ baseUrl, interceptors: [withToken("nope")] }));
    const right = createRpcClient(ResourceService, createGrpcTransport({ baseUrl, interceptors: [withToken("s3cret")] }));
    assert.equal(await codeOf(right.list({ kind: "Container" })), "ok");
    await assert.rejects(anonymous.list({ kind: "Container" }), /missing bearer token: send "authorization: Bearer <token>" \(the k4s CLI and SDK read it from K4S_TOKEN or --token\)/);
    await assert.rejects(wrong.list({ kind: "Container" }), /invalid bearer token: .*K4S_TOKEN/);
    const health = createRpcClient(Health, createGrpcTransport({ baseUrl }));
    assert.equal((await health.check({})).status, HealthCheckResponse_ServingStatus.SERVING);
    const watch = anonymous.watch({ kind: "Container" });
    assert.equal(await codeOf((async () => { for await (const _ of watch) break; })()), Code.Unauthenticated);
  } finally {
    await server.stop();
  }
});

/**
 * Calls a method by path with one empty message, as a call of the given kind; resolves with the
 * status code and message (a stream still open at its deadline ends DEADLINE_EXCEEDED).
 */
function rawCall(
  address: string,
  path: string,
  metadata: grpc.Metadata,
  kind: DescMethod["methodKind"] | boolean = "unary",
): Promise<{ code: number; details: string }> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const id = (b: Buffer) => b;
  const options = { deadline: Date.now() + 10_000 };
  const streamKind = kind === true ? "bidi_streaming" : kind === false ? "unary" : kind;
  return new Promise((resolve) => {
    const done = (err: grpc.ServiceError | null) => {
      client.close();
      resolve({ code: err?.code ?? 0, details: err?.details ?? "" });
    };
    if (streamKind === "unary") {
      client.makeUnaryRequest(path, id, id, Buffer.alloc(0), metadata, options, done);
      return;
    }
    if (streamKind === "client_streaming") {
      const call = client.makeClientStreamRequest(path, id, id, metadata, options, done);
      call.write(Buffer.alloc(0));
      call.end();
      return;
    }
    const call =
      streamKind === "server_streaming"
        ? client.makeServerStreamRequest(path, id, id, Buffer.alloc(0), metadata, options)
        : client.makeBidiStreamRequest(path, id, id, metadata, options);
    call.on("data", () => {});
    call.on("error", (err: grpc.ServiceError) => done(err));
    call.on("status", (s: grpc.StatusObject) => s.code === 0 && done(null));
    if (streamKind === "bidi_streaming") (call as grpc.ClientDuplexStream<Buffer, Buffer>).write(Buffer.alloc(0));
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
