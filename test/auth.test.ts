/**
 * Unit tests of the token rules in src/server/auth.ts (the end-to-end checks over every RPC are
 * in test/security.test.ts): the bearer comparison, the Connect interceptor and loopback hosts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { bearerMatches, createConnectAuthInterceptor, isLoopback, OPEN_METHOD_PREFIX } from "../src/server/auth.js";

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
