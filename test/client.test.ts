/**
 * The client SDK against a real server on a loopback port: resource CRUD, watch, error codes,
 * logs and events, and send/request through one pipelined session to a real worker host process.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ContainerSchema,
  ReplicaSetSchema,
  createClient,
  type Container,
  type K4sClient,
  type ReplicaSet,
  type Service,
  type WatchEvent,
} from "../src/client/index.js";
import type { K4sServer } from "../src/server/server.js";
import { eventually, spawnK4s, startTestServer, type Proc } from "./helpers.js";

let server: K4sServer;
let client: K4sClient;

before(async () => {
  server = await startTestServer();
  client = createClient({ address: server.address });
});

after(async () => {
  await client.close();
  await server.stop();
});

async function codeOf(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (err) {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    return err.code;
  }
}

const manifest = (prefix: string) => `
kind: Container
metadata: {name: ${prefix}-tpl, labels: {app: ${prefix}}}
spec: {module: workers, function: echo_worker, parameters: {prefix: ${prefix.toUpperCase()}}}
---
kind: ReplicaSet
metadata: {name: ${prefix}-rs}
spec: {replicas: 2, container: ${prefix}-tpl}
---
kind: Service
metadata: {name: ${prefix}-svc}
spec: {selector: "${prefix}-rs-*"}
`;

test("apply creates, then reports unchanged and configured; get and list return typed objects", async () => {
  const first = await client.apply(manifest("ap"));
  assert.deepEqual(
    first.map((r) => `${r.kind}/${r.name} ${r.action}`),
    ["Container/ap-tpl created", "ReplicaSet/ap-rs created", "Service/ap-svc created"],
  );
  assert.equal(first[0]!.object?.$typeName, "k4s.v1.Container");

  const again = await client.apply(manifest("ap"));
  assert.deepEqual(again.map((r) => r.action), ["unchanged", "unchanged", "unchanged"]);
  const changed = await client.apply(manifest("ap").replace("replicas: 2", "replicas: 3"));
  assert.deepEqual(changed.map((r) => r.action), ["unchanged", "configured", "unchanged"]);

  const dry = await client.apply(manifest("ap").replace("replicas: 2", "replicas: 5"), { dryRun: true });
  assert.equal(dry[1]!.action, "configured");
  const rs: ReplicaSet = await client.get("ReplicaSet", "ap-rs");
  assert.equal(rs.spec?.replicas, 3, "a dry run wrote nothing");

  const svc: Service = await client.get("Service", "ap-svc");
  assert.equal(svc.spec?.selector, "ap-rs-*");
  assert.ok(svc.metadata?.uid);

  const labelled = await client.list("containers", { labels: { app: "ap" } });
  assert.ok(labelled.items.some((c) => c.metadata?.name === "ap-tpl"));
  for (const c of labelled.items) assert.equal(c.metadata?.labels.app, "ap");
  assert.match(labelled.resourceVersion, /^\d+$/);
  assert.deepEqual((await client.list("Container", { labels: { app: "nobody" } })).items, []);
  const byGlob = await client.list("svc", { nameGlob: "ap-*" });
  assert.deepEqual(byGlob.items.map((s) => s.metadata?.name), ["ap-svc"]);
});

test("apply takes typed objects too, and create/update/delete work on messages", async () => {
  const c = create(ContainerSchema, {
    metadata: { name: "typed-one", labels: { tier: "a" } },
    spec: { module: "workers", function: "echo_worker" },
  });
  const [applied] = await client.apply([c]);
  assert.equal(applied!.action, "created");

  const made = await client.create(
    create(ContainerSchema, { metadata: { name: "typed-two" }, spec: { module: "workers", function: "echo_worker" } }),
  );
  assert.equal(Number(made.metadata?.generation), 1);
  assert.equal(made.kind, "Container");

  const updated = await client.update(
    create(ContainerSchema, { metadata: { name: "typed-two", labels: { tier: "b" } }, spec: made.spec }),
  );
  assert.equal(updated.metadata?.labels.tier, "b");
  assert.notEqual(updated.metadata?.resourceVersion, made.metadata?.resourceVersion);

  const deleted = await client.delete("c", "typed-one");
  assert.equal(deleted.metadata?.name, "typed-one");
  await eventually(async () => (await codeOf(client.get("Container", "typed-one"))) === Code.NotFound, 5000, "typed-one gone");
});

test("errors carry the server's codes: NOT_FOUND, ALREADY_EXISTS, ABORTED, INVALID_ARGUMENT", async () => {
  assert.equal(await codeOf(client.get("Container", "no-such")), Code.NotFound);
  assert.equal(await codeOf(client.delete("svc", "no-such")), Code.NotFound);
  assert.equal(await codeOf(client.scale("no-such", 2)), Code.NotFound);
  assert.equal(await codeOf(client.get("gadget", "x")), Code.InvalidArgument);
  assert.equal(await codeOf(client.scale("x", -1)), Code.InvalidArgument);
  assert.equal(await codeOf(client.apply("kind: Container\nmetadata: {name: Bad_Name}\n")), Code.InvalidArgument);

  const c = create(ContainerSchema, { metadata: { name: "err-one" }, spec: { module: "workers", function: "echo_worker" } });
  const stored = await client.create(c);
  assert.equal(await codeOf(client.create(c)), Code.AlreadyExists);
  // A write conditioned on an old resourceVersion loses to the write in between.
  const v1 = stored.metadata!.resourceVersion;
  await client.update(create(ContainerSchema, { metadata: { name: "err-one", labels: { a: "1" } }, spec: stored.spec }));
  const stale: Container = create(ContainerSchema, {
    metadata: { name: "err-one", labels: { a: "2" }, resourceVersion: v1 },
    spec: stored.spec,
  });
  assert.equal(await codeOf(client.update(stale)), Code.Aborted);
  await assert.rejects(client.get("Container", "no-such"), (err) => {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    assert.equal(err.code, Code.NotFound);
    assert.match(err.rawMessage, /no-such/, "the message names the object");
    return true;
  });
});

test("watch from a list's resourceVersion streams each change, and ends quietly on abort", async () => {
  const start = await client.list("ReplicaSet", { nameGlob: "w-*" });
  const controller = new AbortController();
  const seen: WatchEvent[] = [];
  const done = (async () => {
    for await (const ev of client.watch({ kind: "rs", nameGlob: "w-*", resourceVersion: start.resourceVersion, signal: controller.signal })) {
      seen.push(ev);
    }
  })();
  await client.apply("kind: ReplicaSet\nmetadata: {name: w-rs}\nspec: {replicas: 0, template: {spec: {module: workers, function: echo_worker}}}\n");
  await client.scale("w-rs", 0);
  await client.update(
    create(ReplicaSetSchema, {
      metadata: { name: "w-rs", labels: { x: "y" } },
      spec: { replicas: 0, template: { spec: { module: "workers", function: "echo_worker" } } },
    }),
  );
  await client.delete("rs", "w-rs");
  await eventually(() => seen.some((e) => e.type === "DELETED"), 5000, "DELETED event");
  controller.abort();
  await done; // must not throw
  assert.equal(seen[0]!.type, "ADDED");
  assert.equal(seen[0]!.object.$typeName, "k4s.v1.ReplicaSet");
  assert.ok(seen.some((e) => e.type === "MODIFIED" && e.object.metadata?.labels.x === "y"));
  for (const e of seen) assert.equal(e.object.metadata?.name, "w-rs");
  const versions = seen.map((e) => Number(e.resourceVersion));
  assert.deepEqual(versions, [...versions].sort((a, b) => a - b), "versions only grow");
});

test("watch without a version first lists current objects as ADDED", async () => {
  await client.apply("kind: Service\nmetadata: {name: wl-svc}\nspec: {selector: 'nothing-*'}\n");
  let first: WatchEvent | undefined;
  for await (const ev of client.watch({ kind: "Service", nameGlob: "wl-*" })) {
    first = ev;
    break; // leaving the loop ends the stream
  }
  assert.equal(first?.type, "ADDED", "the watch's first event lists the existing Service");
  assert.equal(first.object.metadata?.name, "wl-svc");
});

test("list reads every page transparently; with a limit it reads one page and its continueToken", async () => {
  await client.apply(Array.from({ length: 1203 }, (_, i) => create(ContainerSchema, { metadata: { name: `pg-${String(i).padStart(4, "0")}` }, spec: { module: "none", function: "f" } })));
  const all = await client.list("Container", { nameGlob: "pg-*" });
  assert.equal(all.items.length, 1203, "three pages of the server's 500, as one listing");
  assert.deepEqual(
    all.items.map((c) => c.metadata!.name),
    Array.from({ length: 1203 }, (_, i) => `pg-${String(i).padStart(4, "0")}`),
  );
  assert.equal(all.continueToken, undefined);
  const first = await client.list("Container", { nameGlob: "pg-*", limit: 1000 });
  assert.equal(first.items.length, 1000);
  assert.ok(first.continueToken);
  const rest = await client.list("Container", { nameGlob: "pg-*", limit: 1000, continueToken: first.continueToken });
  assert.equal(rest.items.length, 203);
  assert.equal(rest.continueToken, undefined);
  assert.equal(rest.resourceVersion, first.resourceVersion);
  const unfiltered = await client.list("Container", { limit: 3 });
  assert.ok((unfiltered.remainingItemCount ?? 0) >= 1200, `remaining ${unfiltered.remainingItemCount}`);
});

test("watch: the stream's resourceVersion resumes without loss when cut inside a revision", async () => {
  const { resourceVersion: from } = await client.list("Container", { nameGlob: "cut-*" });
  // One apply: one revision, five objects.
  await client.apply(Array.from({ length: 5 }, (_, i) => create(ContainerSchema, { metadata: { name: `cut-${i}` }, spec: { module: "none", function: "f" } })));
  const ac = new AbortController();
  const stream = client.watch({ kind: "Container", nameGlob: "cut-*", resourceVersion: from, signal: ac.signal });
  assert.equal(stream.resourceVersion, from);
  const seen: string[] = [];
  for await (const ev of stream) {
    seen.push(ev.object.metadata!.name);
    // Cut after two of the five: the resume point has not moved past the revision.
    if (seen.length === 2) break;
  }
  assert.equal(stream.resourceVersion, from, "not past a revision only partly consumed");
  const again = client.watch({ kind: "Container", nameGlob: "cut-*", resourceVersion: stream.resourceVersion, signal: ac.signal });
  const rest: string[] = [];
  for await (const ev of again) {
    rest.push(ev.object.metadata!.name);
    if (rest.length === 5) break;
  }
  assert.deepEqual(new Set([...seen, ...rest]), new Set(["cut-0", "cut-1", "cut-2", "cut-3", "cut-4"]), "every event of the revision");
  // Once a revision is consumed whole and the next event asked for, the point moves past it.
  const third = client.watch({ kind: "Container", nameGlob: "cut-*", resourceVersion: from, signal: ac.signal });
  const it = third[Symbol.asyncIterator]();
  for (let i = 0; i < 5; i++) await it.next();
  const next = it.next();
  await eventually(() => third.resourceVersion !== from, 5000, "the resume point past the revision");
  assert.ok(Number(third.resourceVersion) > Number(from));
  ac.abort();
  await next.catch(() => undefined);
});

test("events are streamed; logs of a missing container are NOT_FOUND", async () => {
  server.events.record({ reason: "Testing", kind: "Container", name: "ev-one", message: "hello from the test" });
  const events = [];
  for await (const e of client.events({ kind: "c", name: "ev-one" })) events.push(e);
  assert.deepEqual(events.map((e) => e.reason), ["Testing"]);
  assert.equal(await codeOf((async () => { for await (const _ of client.logs("nope")) break; })()), Code.NotFound);
});

test("send and request reach a real worker host through one session; worker errors keep their code", async () => {
  const host: Proc = spawnK4s(["worker", "--server", server.address, "--name", "client-test-host"]);
  try {
    await client.apply(
      "kind: Container\nmetadata: {name: sr-echo}\nspec: {module: workers, function: echo_worker, parameters: {prefix: SR}}\n" +
        "---\nkind: Container\nmetadata: {name: sr-calc}\nspec: {module: workers, function: calculator_worker}\n",
    );
    assert.equal(await client.request<string>("container/sr-echo", "hi", { timeoutMs: 10_000 }), "SR: hi");
    const sums = await Promise.all(
      Array.from({ length: 50 }, (_, i) => client.request<number>("sr-calc", { operation: "sum", operands: [i, 1] })),
    );
    assert.deepEqual(sums, Array.from({ length: 50 }, (_, i) => i + 1));
    const receipt = await client.send("sr-echo", "fire");
    assert.equal(receipt.container, "sr-echo");
    await eventually(async () => {
      const lines = [];
      for await (const l of client.logs("sr-echo")) lines.push(l.text);
      return lines.includes("SR: fire");
    }, 10_000, "the sent message in the echo container's log");

    assert.equal(await codeOf(client.request("sr-calc", { operation: "modulo", operands: [1] })), Code.InvalidArgument);
    assert.equal(await codeOf(client.request("container/nowhere", 1)), Code.NotFound);
    assert.equal(await codeOf(client.send("nowhere", 1)), Code.NotFound);

    // Every message above went over the session: not one unary MessagingService call.
    const metrics = await server.metrics.registry.metrics();
    assert.doesNotMatch(metrics, /MessagingService\//);
  } finally {
    await host.kill();
  }
});

test("a closed client refuses new messages", async () => {
  const c = createClient({ address: server.address });
  await c.close();
  assert.equal(await codeOf(c.send("x", 1)), Code.FailedPrecondition);
});
