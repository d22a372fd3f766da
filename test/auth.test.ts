/**
 * Unit tests of the token rules in src/server/auth.ts (the end-to-end checks over every RPC are
 * in test/security.test.ts): the bearer comparison, the Connect interceptor and loopback hosts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import {
  ADMITTED_BY_ATTACH_TOKEN,
  bearerMatches,
  createAuthInterceptor,
  createConnectAuthInterceptor,
  guardUnknownMethods,
  isLoopback,
  OPEN_METHOD_PREFIX,
} from "../src/server/auth.js";
import { ATTACH_TOKEN_HEADER } from "../src/transport/environment.js";

test("bearerMatches takes exactly 'Bearer <token>' and nothing else", () => {
  assert.equal(bearerMatches("Bearer s3cret", "s3cret"), true);
  for (const header of ["Bearer s3cre", "Bearer s3crett", "Bearer S3cret", "bearer s3cret", "Bearers3cret", "Basic s3cret", "s3cret", "Bearer  s3cret", " Bearer s3cret", "Bearer ", "", undefined, null, 42, ["Bearer s3cret"]]) {
    assert.equal(bearerMatches(header, "s3cret"), false, `header ${JSON.stringify(header)}`);
  }
  // The same length but different bytes, and a multi-byte token.
  assert.equal(bearerMatches("Bearer s3creu", "s3cret"), false);
  assert.equal(bearerMatches("Bearer tökén", "tökén"), true);
  assert.equal(bearerMatches("Bearer tokén", "tökén"), false);
});

test("the Connect interceptor refuses a missing or wrong token UNAUTHENTICATED, saying which, and passes the right one", async () => {
  const interceptor = createConnectAuthInterceptor("s3cret");
  let reached = 0;
  const next = async () => {
    reached++;
    return "answer" as never;
  };
  const call = (authorization?: string) => {
    const header = new Headers();
    if (authorization !== undefined) header.set("authorization", authorization);
    return interceptor(next)({ header } as never);
  };
  assert.equal(await call("Bearer s3cret"), "answer");
  assert.equal(reached, 1);
  for (const [authorization, message] of [
    [undefined, /^\[unauthenticated\] missing bearer token: send "authorization: Bearer <token>" \(the k4s CLI and SDK read it from K4S_TOKEN or --token\)$/],
    ["Bearer nope", /^\[unauthenticated\] invalid bearer token: send "authorization: Bearer <token>"/],
    ["", /^\[unauthenticated\] invalid bearer token/],
  ] as const) {
    await assert.rejects(call(authorization), (err) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.Unauthenticated);
      assert.match(err.message, message);
      return true;
    });
  }
  assert.equal(reached, 1, "a refused call never reaches the handler");
});

test("only the health service is open, and only loopback hosts count as loopback", () => {
  assert.equal(OPEN_METHOD_PREFIX, "/grpc.health.v1.Health/");
  for (const host of ["localhost", "::1", "[::1]", "127.0.0.1", "127.1.2.3"]) assert.equal(isLoopback(host), true, host);
  for (const host of ["0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "1127.0.0.1", "localhost.example", "example.com", ""]) assert.equal(isLoopback(host), false, host);
});

test("the gRPC interceptor: the token, health without it, an attach credential only for WorkerService.Connect, unknown methods after authentication", async () => {
  const server = new grpc.Server({ interceptors: [createAuthInterceptor("s3cret")] });
  guardUnknownMethods(server);
  const id = (b: Buffer) => b;
  // Each handler answers with the admission mark it saw, so a test sees what the interceptor set.
  const mark = (md: grpc.Metadata) => Buffer.from(String(md.get(ADMITTED_BY_ATTACH_TOKEN)[0] ?? "none"));
  const unary: grpc.handleUnaryCall<Buffer, Buffer> = (call, cb) => cb(null, mark(call.metadata));
  server.register("/t.Svc/Unary", unary, id, id, "unary");
  server.register("/grpc.health.v1.Health/Check", unary, id, id, "unary");
  server.register(
    "/k4s.v1.WorkerService/Connect",
    ((call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.write(mark(call.metadata));
      call.end();
    }) as grpc.handleBidiStreamingCall<Buffer, Buffer>,
    id,
    id,
    "bidi",
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const md = (headers: Record<string, string>) => {
    const m = new grpc.Metadata();
    for (const [k, v] of Object.entries(headers)) m.set(k, v);
    return m;
  };
  const unaryCall = (path: string, headers: Record<string, string>) =>
    new Promise<string>((resolve) =>
      client.makeUnaryRequest(path, id, id, Buffer.alloc(0), md(headers), (err, res) =>
        resolve(err ? `${grpc.status[err.code]}: ${err.details}` : `OK ${res!.toString()}`),
      ),
    );
  const connect = (headers: Record<string, string>) =>
    new Promise<string>((resolve) => {
      const call = client.makeBidiStreamRequest("/k4s.v1.WorkerService/Connect", id, id, md(headers));
      let got = "";
      call.on("data", (d: Buffer) => (got = `OK ${d.toString()}`));
      call.on("error", (err: grpc.ServiceError) => resolve(`${grpc.status[err.code]}: ${err.details}`));
      call.on("status", (st: grpc.StatusObject) => st.code === grpc.status.OK && resolve(got));
      call.end();
    });
  try {
    const bearer = "Bearer s3cret";
    assert.equal(await unaryCall("/t.Svc/Unary", { authorization: bearer }), "OK none");
    assert.match(await unaryCall("/t.Svc/Unary", {}), /^UNAUTHENTICATED: missing bearer token: send "authorization: Bearer <token>"/);
    assert.match(await unaryCall("/t.Svc/Unary", { authorization: "Bearer nope" }), /^UNAUTHENTICATED: invalid bearer token/);
    // A caller cannot set the admission mark itself.
    assert.equal(await unaryCall("/t.Svc/Unary", { authorization: bearer, [ADMITTED_BY_ATTACH_TOKEN]: "1" }), "OK none");
    assert.equal(await unaryCall("/grpc.health.v1.Health/Check", {}), "OK none");
    // An attach credential admits WorkerService.Connect only, marked; never another method.
    assert.equal(await connect({ [ATTACH_TOKEN_HEADER]: "cred" }), "OK 1");
    assert.equal(await connect({ [ATTACH_TOKEN_HEADER]: "cred", [ADMITTED_BY_ATTACH_TOKEN]: "yes" }), "OK 1");
    assert.equal(await connect({ authorization: bearer, [ADMITTED_BY_ATTACH_TOKEN]: "1" }), "OK none");
    assert.match(await connect({}), /^UNAUTHENTICATED: missing bearer token/);
    assert.match(await connect({ authorization: "Bearer nope", [ATTACH_TOKEN_HEADER]: "cred" }), /^UNAUTHENTICATED: invalid bearer token/);
    assert.match(await unaryCall("/t.Svc/Unary", { [ATTACH_TOKEN_HEADER]: "cred" }), /^UNAUTHENTICATED: missing bearer token/);
    // Unknown methods: UNAUTHENTICATED without the token, UNIMPLEMENTED naming the method with it.
    assert.match(await unaryCall("/t.Svc/Nope", {}), /^UNAUTHENTICATED/);
    assert.equal(await unaryCall("/t.Svc/Nope", { authorization: bearer }), "UNIMPLEMENTED: the server does not implement the method /t.Svc/Nope");
  } finally {
    client.close();
    server.forceShutdown();
  }
});
