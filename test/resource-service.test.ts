/**
 * ResourceService end to end: a real server on port 0 and a real gRPC client (connect-node's
 * gRPC transport). CRUD, conflicts, apply outcomes, cascade delete, watch, and every kind of
 * rejected manifest with proof that nothing of it was applied.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { GetRequestSchema, ResourceService, type WatchResponse } from "../src/gen/k4s/v1/resource_service_pb.js";
import { MessagingService } from "../src/gen/k4s/v1/messaging_service_pb.js";
import { BadRequestSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../src/gen/google/rpc/status_pb.js";
import { fieldViolations } from "../src/api/bad-request.js";
import { ContainerSchema, ReplicaSetSchema, type Container } from "../src/gen/k4s/v1/resources_pb.js";
import { wrap } from "../src/api/kinds.js";
import { addService } from "../src/server/grpc-adapter.js";
import { createResourceService } from "../src/server/handlers/resource-service.js";
import { createResourceStore } from "../src/server/store/create-resource-store.js";
import { openSqliteStore } from "../src/server/store/sqlite-store.js";
import type { K4sServer } from "../src/server/server.js";
import { eventually, startTestServer } from "./helpers.js";

let server: K4sServer;
let client: Client<typeof ResourceService>;

before(async () => {
  server = await startTestServer();
  client = createClient(ResourceService, createGrpcTransport({ baseUrl: `http://${server.address}` }));
});

after(async () => {
  await server.stop();
});

async function expectCode(p: Promise<unknown>, code: Code, re: RegExp): Promise<string> {
  let message = "";
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${String(e)}`);
    assert.equal(Code[e.code], Code[code], `code of "${e.rawMessage}"`);
    assert.match(e.rawMessage, re);
    message = e.rawMessage;
    return true;
  });
  return message;
}

/** Reads a watch stream in the background; `waitFor` resolves once n responses arrived. */
function follow(stream: AsyncIterable<WatchResponse>) {
  const items: WatchResponse[] = [];
  const waiters = new Set<() => void>();
  const done = (async () => {
    for await (const r of stream) {
      items.push(r);
      waiters.forEach((w) => w());
    }
  })().catch((e: unknown) => e);
  return {
    items,
    done,
    waitFor(n: number, timeoutMs = 5000): Promise<WatchResponse[]> {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${n} watch responses, got ${show(items)}`)), timeoutMs);
        const check = () => {
          if (items.length >= n) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve(items.slice());
          }
        };
        waiters.add(check);
        check();
      });
    },
  };
}

const nameOf = (r: WatchResponse) => r.object?.kind.value?.metadata?.name ?? "";
const show = (rs: WatchResponse[]) => rs.map((r) => `${r.type} ${nameOf(r)}`.trim()).join(", ");

const echo = (name: string, labels: Record<string, string> = {}): Container =>
  create(ContainerSchema, { metadata: { name, labels }, spec: { module: "workers", function: "echo", parameters: { prefix: "HI" } } });

test("create, get, list, update, delete through gRPC", async () => {
  const created = (await client.create({ object: wrap(echo("crud-a", { app: "crud" })) })).object!.kind.value as Container;
  assert.equal(created.kind, "Container");
  assert.match(created.metadata!.uid, /^[0-9a-f-]{36}$/);
  assert.equal(created.metadata!.generation, 1n);
  await client.create({ object: wrap(echo("crud-b", { app: "crud" })) });
  await client.create({ object: wrap(echo("crud-c")) });
  await expectCode(client.create({ object: wrap(echo("crud-a")) }), Code.AlreadyExists, /^Container "crud-a" already exists$/);
  await expectCode(client.create({}), Code.InvalidArgument, /object is empty/);
  await expectCode(
    client.create({ object: wrap(create(ContainerSchema, { metadata: { name: "crud-bad" }, spec: { restartPolicy: "Sometimes" } })) }),
    Code.InvalidArgument,
    /^Container "crud-bad": spec\.restartPolicy: must be one of Always, OnFailure, Never, got "Sometimes"$/,
  );

  const got = (await client.get({ kind: "c", name: "crud-a" })).object!.kind.value as Container;
  assert.equal(got.metadata!.uid, created.metadata!.uid);
  assert.deepEqual(got.spec!.parameters, { prefix: "HI" });
  await expectCode(client.get({ kind: "container", name: "crud-zzz" }), Code.NotFound, /^Container "crud-zzz" not found$/);
  await expectCode(client.get({ kind: "pod", name: "x" }), Code.InvalidArgument, /unknown kind "pod"/);

  const list = await client.list({ kind: "containers", nameGlob: "crud-*" });
  assert.deepEqual(
    list.items.map((o) => o.kind.value!.metadata!.name),
    ["crud-a", "crud-b", "crud-c"],
    "sorted by name",
  );
  assert.match(list.resourceVersion, /^\d+$/);
  const labelled = await client.list({ kind: "Container", labels: { app: "crud" } });
  assert.deepEqual(
    labelled.items.map((o) => o.kind.value!.metadata!.name),
    ["crud-a", "crud-b"],
  );
  await expectCode(client.list({ kind: "c", nameGlob: "a/b" }), Code.InvalidArgument, /nameGlob: "a\/b" is not a valid glob/);

  const changed = echo("crud-a", { app: "crud" });
  changed.spec!.function = "processor";
  const updated = (await client.update({ object: wrap(changed) })).object!.kind.value as Container;
  assert.equal(updated.metadata!.generation, 2n);
  assert.equal(updated.spec!.function, "processor");
  assert.equal(updated.metadata!.uid, created.metadata!.uid);

  const deleted = await client.delete({ kind: "c", name: "crud-b" });
  assert.equal(deleted.object!.kind.value!.metadata!.name, "crud-b");
  await expectCode(client.get({ kind: "c", name: "crud-b" }), Code.NotFound, /not found/);
  await expectCode(client.delete({ kind: "c", name: "crud-b" }), Code.NotFound, /^Container "crud-b" not found$/);
});

test("update and delete with a stale resourceVersion are ABORTED", async () => {
  await client.create({ object: wrap(echo("conflict-a")) });
  // The server's controllers write the container's status too, so a read version may go stale
  // at any time: read-modify-write until a conditional update lands, as a client would.
  let v1 = "";
  let second: Container | undefined;
  for (let attempt = 0; !second; attempt++) {
    v1 = (await client.get({ kind: "c", name: "conflict-a" })).object!.kind.value!.metadata!.resourceVersion;
    const next = echo("conflict-a", { v: "2" });
    next.metadata!.resourceVersion = v1;
    try {
      second = (await client.update({ object: wrap(next) })).object!.kind.value as Container;
    } catch (e) {
      if (ConnectError.from(e).code !== Code.Aborted || attempt > 20) throw e;
    }
  }
  assert.notEqual(second.metadata!.resourceVersion, v1);
  const stale = echo("conflict-a", { v: "3" });
  stale.metadata!.resourceVersion = v1;
  await expectCode(
    client.update({ object: wrap(stale) }),
    Code.Aborted,
    new RegExp(`^Container "conflict-a" was modified meanwhile: resourceVersion is \\d+, not ${v1}; read it again and retry$`),
  );
  await expectCode(client.delete({ kind: "c", name: "conflict-a", resourceVersion: v1 }), Code.Aborted, /was modified meanwhile/);
  assert.ok((await client.get({ kind: "c", name: "conflict-a" })).object, "still there after the refused delete");
  await client.delete({ kind: "c", name: "conflict-a" });
  await expectCode(client.get({ kind: "c", name: "conflict-a" }), Code.NotFound, /not found/);
});

test("apply reports created, configured and unchanged; dry run writes nothing", async () => {
  const manifest = (prefix: string, replicas: number) => `
kind: Container
metadata: {name: apply-tmpl}
spec: {module: workers, function: echo, parameters: {prefix: ${prefix}}}
---
kind: Service
metadata: {name: apply-svc}
spec: {selector: "apply-rs-*"}
---
kind: ReplicaSet
metadata: {name: apply-rs}
spec: {replicas: ${replicas}, container: apply-tmpl}
`;
  const dry = await client.apply({ manifest: manifest("A", 0), dryRun: true });
  assert.deepEqual(
    dry.results.map((r) => `${r.kind}/${r.name} ${r.action}`),
    ["Container/apply-tmpl created", "Service/apply-svc created", "ReplicaSet/apply-rs created"],
  );
  await expectCode(client.get({ kind: "svc", name: "apply-svc" }), Code.NotFound, /not found/);

  const first = await client.apply({ manifest: manifest("A", 0) });
  assert.deepEqual(
    first.results.map((r) => r.action),
    ["created", "created", "created"],
  );
  const again = await client.apply({ manifest: manifest("A", 0) });
  assert.deepEqual(
    again.results.map((r) => r.action),
    ["unchanged", "unchanged", "unchanged"],
  );
  const third = await client.apply({ manifest: manifest("B", 0) });
  assert.deepEqual(
    third.results.map((r) => `${r.name} ${r.action}`),
    ["apply-tmpl configured", "apply-svc unchanged", "apply-rs unchanged"],
  );
  const tmpl = third.results[0]!.object!.kind.value as Container;
  assert.equal(tmpl.metadata!.generation, 2n);
  assert.deepEqual(tmpl.spec!.parameters, { prefix: "B" });
  // Typed objects too, alongside a manifest.
  const typed = await client.apply({ objects: [wrap(echo("apply-typed"))] });
  assert.deepEqual(
    typed.results.map((r) => `${r.kind}/${r.name} ${r.action}`),
    ["Container/apply-typed created"],
  );
  await expectCode(client.apply({ manifest: "# nothing\n" }), Code.InvalidArgument, /nothing to apply/);
});

test("deleting a ReplicaSet deletes its replicas in the same write", async () => {
  await client.apply({
    manifest: `
kind: ReplicaSet
metadata: {name: cascade}
spec:
  replicas: 3
  template: {spec: {module: no-such-module, function: f}}
`,
  });
  // The ReplicaSet controller creates the replicas, owned by the ReplicaSet.
  const owned = await eventually(async () => {
    const l = await client.list({ kind: "c", nameGlob: "cascade-*" });
    return l.items.length === 3 ? l.items : undefined;
  }, 10_000, "3 replicas of cascade");
  const rs = (await client.get({ kind: "rs", name: "cascade" })).object!.kind.value!;
  for (const o of owned!) {
    assert.equal(o.kind.value!.metadata!.ownerReference?.uid, rs.metadata!.uid);
  }
  await client.create({ object: wrap(echo("cascade-other")) });
  await client.delete({ kind: "rs", name: "cascade" });
  const left = await client.list({ kind: "c", nameGlob: "cascade*" });
  assert.deepEqual(
    left.items.map((o) => o.kind.value!.metadata!.name),
    ["cascade-other"],
    "replicas went with their ReplicaSet; the unowned container stayed",
  );
});

test("scale sets replicas, validated", async () => {
  await client.create({
    object: wrap(create(ReplicaSetSchema, { metadata: { name: "scale-rs" }, spec: { replicas: 0, template: { spec: { command: ["true"] } } } })),
  });
  const scaled = await client.scale({ name: "scale-rs", replicas: 0 });
  assert.equal(scaled.replicaSet!.spec!.replicas, 0);
  const up = await client.scale({ name: "scale-rs", replicas: 2 });
  assert.equal(up.replicaSet!.spec!.replicas, 2);
  assert.equal(up.replicaSet!.metadata!.generation, 2n);
  await expectCode(client.scale({ name: "scale-rs", replicas: -1 }), Code.InvalidArgument, /^replicas: must be between 0 and 10000, got -1$/);
  await expectCode(client.scale({ name: "scale-none", replicas: 1 }), Code.NotFound, /^ReplicaSet "scale-none" not found$/);
  await client.scale({ name: "scale-rs", replicas: 0 });
  await client.delete({ kind: "rs", name: "scale-rs" });
});

test("watch: initial listing, BOOKMARK, then live changes; from a version; filtered by kind and glob", async () => {
  await client.create({ object: wrap(echo("watch-a")) });
  await client.create({ object: wrap(echo("watch-b")) });
  const ac = new AbortController();
  const w = follow(client.watch({ kind: "c", nameGlob: "watch-*" }, { signal: ac.signal }));
  const initial = await w.waitFor(3);
  assert.equal(show(initial), "ADDED watch-a, ADDED watch-b, BOOKMARK");
  const bookmark = initial[2]!.resourceVersion;
  assert.match(bookmark, /^\d+$/);
  assert.equal(initial[2]!.object, undefined);

  await client.update({ object: wrap(echo("watch-a", { x: "1" })) });
  await client.create({ object: wrap(echo("other-c")) }); // filtered out by the glob
  await client.delete({ kind: "c", name: "watch-b" });
  const live = await w.waitFor(5);
  assert.equal(show(live.slice(3)), "MODIFIED watch-a, DELETED watch-b");
  assert.ok(Number(live[3]!.resourceVersion) > Number(bookmark));

  // From the bookmark: the same changes again, and nothing of the listing.
  const w2 = follow(client.watch({ kind: "container", nameGlob: "watch-*", resourceVersion: bookmark }, { signal: ac.signal }));
  assert.equal(show(await w2.waitFor(2)), "MODIFIED watch-a, DELETED watch-b");

  // Every kind: a Service shows up too.
  const w3 = follow(client.watch({ resourceVersion: live[4]!.resourceVersion, nameGlob: "watch-*" }, { signal: ac.signal }));
  await client.apply({ manifest: "kind: Service\nmetadata: {name: watch-svc}\nspec: {selector: 'watch-*'}\n" });
  const [svc] = await w3.waitFor(1);
  assert.equal(`${svc!.type} ${svc!.object!.kind.case} ${nameOf(svc!)}`, "ADDED service watch-svc");
  ac.abort();
  await expectCode(
    (async () => {
      for await (const _ of client.watch({ resourceVersion: "abc" })) void _;
    })(),
    Code.InvalidArgument,
    /resourceVersion: "abc" is not a resource version/,
  );
});

test("watch from a version older than the kept history is OUT_OF_RANGE", async () => {
  // A server of its own, with a 5-revision history.
  const store = openSqliteStore({ historyLimit: 5 });
  const resources = createResourceStore(store);
  const grpcServer = new grpc.Server();
  addService(grpcServer, ResourceService, createResourceService({ resources }));
  const port = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  try {
    const c = createClient(ResourceService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
    await c.create({ object: wrap(echo("old")) });
    for (let i = 0; i < 10; i++) await c.update({ object: wrap(echo("old", { i: String(i) })) });
    await expectCode(
      (async () => {
        for await (const _ of c.watch({ resourceVersion: "1" })) void _;
      })(),
      Code.OutOfRange,
      /revision 1 is older than the kept history \(compacted up to 6\): relist/,
    );
    // Relisting gives a version to watch from.
    const l = await c.list({ kind: "c" });
    const ac = new AbortController();
    const w = follow(c.watch({ resourceVersion: l.resourceVersion }, { signal: ac.signal }));
    await c.delete({ kind: "c", name: "old" });
    assert.equal(show(await w.waitFor(1)), "DELETED old");
    ac.abort();
  } finally {
    grpcServer.forceShutdown();
    await store.close();
  }
});

/** Applies a manifest that must be rejected, and proves nothing of it was stored. */
async function rejected(manifest: string, re: RegExp, mustNotExist: string[] = ["reject-ok"]): Promise<string> {
  const message = await expectCode(client.apply({ manifest }), Code.InvalidArgument, re);
  for (const name of mustNotExist) {
    await expectCode(client.get({ kind: "c", name }), Code.NotFound, /not found/);
  }
  return message;
}

const OK_DOC = "kind: Container\nmetadata: {name: reject-ok}\nspec: {module: workers, function: echo}\n---\n";

test("apply rejects every kind of bad input, naming document, field and reason, and applies nothing", async () => {
  await rejected(`${OK_DOC}kind: Container\nmetadata: {name: x\n`, /^document 2: invalid YAML: .*line \d+, column \d+/);
  await rejected(`${OK_DOC}kind: Pod\nmetadata: {name: x}\n`, /^document 2: kind: unknown kind string "Pod", expected one of Container, ReplicaSet, Service$/);
  await rejected(
    `${OK_DOC}kind: Container\nmetadata: {name: reject-x}\nspec: {modul: workers}\n`,
    /^document 2 \(Container "reject-x"\): spec\.modul: unknown field "modul" \(did you mean "module"\?\)$/,
  );
  await rejected(
    `${OK_DOC}kind: ReplicaSet\nmetadata: {name: reject-rs}\nspec: {replicas: many, container: reject-ok}\n`,
    /^document 2 \(ReplicaSet "reject-rs"\): spec\.replicas: expected an integer, got string "many"$/,
  );
  await rejected(
    `${OK_DOC}kind: Container\nmetadata: {name: Reject_Me}\n`,
    /^document 2 \(Container "Reject_Me"\): metadata\.name: "Reject_Me" is not a valid name/,
  );
  await rejected(
    `${OK_DOC}kind: ReplicaSet\nmetadata: {name: calc}\nspec: {replicas: -1, container: reject-ok}\n`,
    /^document 2 \(ReplicaSet "calc"\): spec\.replicas: must be between 0 and 10000, got -1$/,
  );
  await rejected(`${OK_DOC}# ${"x".repeat(1024 * 1024)}\n`, /^manifest is \d+ bytes, more than the limit of 1048576 bytes \(1 MiB\)$/);
  await rejected(
    `${OK_DOC}kind: Container\nmetadata: {name: reject-bomb}\nspec:\n  parameters:\n` +
      "    a: &a [x, x, x, x, x, x, x, x, x]\n    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" +
      "    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
    /^document 2: invalid YAML: too many alias expansions \(limit 50\)/,
    ["reject-ok", "reject-bomb"],
  );
  await rejected(`${OK_DOC}kind: Container\nmetadata: {name: reject-ok}\n`, /^document 2 \(Container "reject-ok"\): duplicate of document 1/);
  // Typed objects are validated the same way.
  await expectCode(
    client.apply({ manifest: OK_DOC, objects: [wrap(create(ContainerSchema, { metadata: { name: "reject-typed" }, spec: { concurrency: -5 } }))] }),
    Code.InvalidArgument,
    /^objects\[0\] \(Container "reject-typed"\): spec\.concurrency: must be between 0 and 1000, got -5$/,
  );
  await expectCode(client.get({ kind: "c", name: "reject-ok" }), Code.NotFound, /not found/);
  // And the good document alone goes through.
  const ok = await client.apply({ manifest: OK_DOC });
  assert.deepEqual(
    ok.results.map((r) => r.action),
    ["created"],
  );
});

test("validation failures carry google.rpc.BadRequest field violations at the request's field paths, beside the message", async () => {
  const violations = async (p: Promise<unknown>): Promise<Array<[string, string]>> => {
    try {
      await p;
    } catch (err) {
      assert.equal(ConnectError.from(err).code, Code.InvalidArgument, ConnectError.from(err).rawMessage);
      return fieldViolations(err).map((v) => [v.field, v.description]);
    }
    assert.fail("the call was accepted");
  };
  const badRs = create(ReplicaSetSchema, { metadata: { name: "Bad_Name" }, spec: { replicas: 10_001, container: "t" } });
  assert.deepEqual(await violations(client.apply({ manifest: "kind: ReplicaSet\nmetadata: {name: r}\nspec: {replicas: -1, container: t}\n" })), [
    ["manifest[0].spec.replicas", "must be between 0 and 10000, got -1"],
  ]);
  const typed = await violations(client.apply({ objects: [wrap(create(ContainerSchema, { metadata: { name: "fine" } })), wrap(badRs)] }));
  assert.deepEqual(typed.map(([f]) => f), ["objects[1].replicaSet.metadata.name", "objects[1].replicaSet.spec.replicas"]);
  assert.deepEqual((await violations(client.create({ object: wrap(badRs) }))).map(([f]) => f), ["object.replicaSet.metadata.name", "object.replicaSet.spec.replicas"]);
  assert.deepEqual((await violations(client.update({ object: wrap(badRs) }))).map(([f]) => f), ["object.replicaSet.metadata.name", "object.replicaSet.spec.replicas"]);
  assert.deepEqual(await violations(client.create({})), [["object", "empty: set container, replicaSet or service"]]);
  assert.deepEqual((await violations(client.get({ kind: "Pod", name: "x" }))).map(([f]) => f), ["kind"]);
  assert.deepEqual((await violations(client.get({ kind: "c", name: "Not_Valid" }))).map(([f]) => f), ["name"]);
  assert.deepEqual((await violations(client.list({ kind: "c", labelSelector: "a in (" }))).map(([f]) => f), ["labelSelector"]);
  assert.deepEqual(await violations(client.scale({ name: "r", replicas: -2 })), [["replicas", "must be between 0 and 10000, got -2"]]);
  const messaging = createClient(MessagingService, createGrpcTransport({ baseUrl: `http://${server.address}` }));
  assert.deepEqual((await violations(messaging.send({ target: "pod/x" }))).map(([f]) => f), ["target"]);
  assert.deepEqual((await violations(messaging.request({ target: "x", timeoutMs: -1 }))).map(([f]) => f), ["timeoutMs"]);
  // The message is what it always was.
  await expectCode(client.create({ object: wrap(badRs) }), Code.InvalidArgument, /^ReplicaSet "Bad_Name": metadata\.name: .*; spec\.replicas: must be between 0 and 10000, got 10001$/);
  // On the wire: a grpc-status-details-bin trailer holding a google.rpc.Status with the same code and message.
  const raw = new grpc.Client(server.address, grpc.credentials.createInsecure());
  try {
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      raw.makeUnaryRequest("/k4s.v1.ResourceService/Get", (b: Buffer) => b, (b: Buffer) => b, Buffer.from(toBinary(GetRequestSchema, create(GetRequestSchema, { kind: "Pod", name: "x" }))), (e) => resolve(e!)),
    );
    const status = fromBinary(StatusSchema, err.metadata.get("grpc-status-details-bin")[0] as Buffer);
    assert.equal(status.code, Code.InvalidArgument);
    assert.equal(status.message, err.details);
    assert.equal(status.details[0]?.typeUrl, "type.googleapis.com/google.rpc.BadRequest");
    assert.deepEqual(fromBinary(BadRequestSchema, status.details[0]!.value).fieldViolations.map((v) => v.field), ["kind"]);
  } finally {
    raw.close();
  }
});
