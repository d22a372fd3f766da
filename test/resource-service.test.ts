/**
 * ResourceService end to end, on both store backends (SQLite, and a real etcd): a real server
 * on port 0 and a real gRPC client (connect-node's gRPC transport). CRUD, conflicts, apply
 * outcomes, cascade delete, paged lists, watch (revisions whole, bookmarks, resuming, future
 * and compacted versions), size and count limits, and every kind of rejected manifest with
 * proof that nothing of it was applied.
 */
import { after, before, describe, test } from "node:test";
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
import { ContainerSchema, ReplicaSetSchema, ServiceSchema, type Container } from "../src/gen/k4s/v1/resources_pb.js";
import { wrap } from "../src/api/kinds.js";
import type { K4sServer, ServerOptions } from "../src/server/server.js";
import { startEtcd, type EtcdCluster } from "./etcd.js";
import { eventually, startTestServer } from "./helpers.js";

/** The backends the suite runs on; etcd's server is started once for the whole file. */
const BACKEND_NAMES = ["sqlite", "etcd"] as const;
let etcd: EtcdCluster | undefined;

before(async () => {
  etcd = await startEtcd();
});

after(async () => {
  await etcd?.stop();
});

/** Starts a server on a backend: in-memory SQLite, or a fresh key space... the shared etcd. */
async function serverOn(backend: (typeof BACKEND_NAMES)[number], options: ServerOptions = {}): Promise<K4sServer> {
  return startTestServer({ ...options, ...(backend === "etcd" ? { store: etcd!.storeUrl } : {}) });
}

function clientOf(server: K4sServer, readMaxBytes?: number): Client<typeof ResourceService> {
  return createClient(ResourceService, createGrpcTransport({ baseUrl: `http://${server.address}`, ...(readMaxBytes ? { readMaxBytes } : {}) }));
}

/**
 * Runs fn against a server of its own on a backend (with a fresh etcd for etcd: these tests
 * compact its history), stopped afterwards. `etcdOptions` apply to the etcd server only.
 */
async function withOwnServer(
  backend: (typeof BACKEND_NAMES)[number],
  options: ServerOptions,
  etcdOptions: ServerOptions,
  fn: (client: Client<typeof ResourceService>, server: K4sServer) => Promise<void>,
): Promise<void> {
  const own = backend === "etcd" ? await startEtcd() : undefined;
  const s = await startTestServer({ ...options, ...(own ? { store: own.storeUrl, ...etcdOptions } : {}) });
  try {
    await fn(clientOf(s), s);
  } finally {
    await s.stop();
    await own?.stop();
  }
}

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

/** Reads a watch stream in the background; `waitFor` resolves once n responses (or one that matches) arrived. */
function follow(stream: AsyncIterable<WatchResponse>) {
  const items: WatchResponse[] = [];
  const waiters = new Set<() => void>();
  const done = (async () => {
    for await (const r of stream) {
      items.push(r);
      waiters.forEach((w) => w());
    }
  })().catch((e: unknown) => e);
  const until = (ok: () => boolean, what: string, timeoutMs: number) =>
    new Promise<WatchResponse[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}, got ${show(items)}`)), timeoutMs);
      const check = () => {
        if (ok()) {
          clearTimeout(timer);
          waiters.delete(check);
          resolve(items.slice());
        }
      };
      waiters.add(check);
      check();
    });
  return {
    items,
    done,
    waitFor: (n: number, timeoutMs = 10_000) => until(() => items.length >= n, `${n} watch responses`, timeoutMs),
    waitUntil: (pred: (r: WatchResponse) => boolean, what: string, timeoutMs = 10_000) => until(() => items.some(pred), what, timeoutMs),
  };
}

/** One response as text: its events, then `@rv` when it is a resume point (`@-` when not). */
const showOne = (r: WatchResponse) =>
  `${r.events.map((e) => `${e.type} ${e.object?.kind.value?.metadata?.name ?? ""}`).join(",") || "BOOKMARK"}@${r.resourceVersion ? "rv" : "-"}`;
const show = (rs: WatchResponse[]) => rs.map(showOne).join(" | ");
/**
 * The responses without the controllers' status writes (they come at any time): a MODIFIED event
 * stays only when it changes the object's generation or labels since the last version seen (in
 * `before`, then in `rs`). Emptied responses are dropped.
 */
function specChanges(rs: WatchResponse[], before: WatchResponse[] = []): WatchResponse[] {
  const seen = new Map<string, string>();
  const out: WatchResponse[] = [];
  for (const [i, r] of [...before, ...rs].entries()) {
    const events = r.events.filter((e) => {
      const meta = e.object?.kind.value?.metadata;
      const shape = `${meta?.generation}/${JSON.stringify(meta?.labels ?? {})}`;
      const keep = e.type !== "MODIFIED" || seen.get(meta?.name ?? "") !== shape;
      seen.set(meta?.name ?? "", shape);
      return keep;
    });
    if (i >= before.length && (events.length > 0 || r.events.length === 0)) out.push({ ...r, events });
  }
  return out;
}
const isBookmark = (r: WatchResponse) => r.events.length === 0 && r.resourceVersion !== "";

const echo = (name: string, labels: Record<string, string> = {}): Container =>
  create(ContainerSchema, { metadata: { name, labels }, spec: { module: "workers", function: "echo", parameters: { prefix: "HI" } } });

/** Drains a watch that must fail, returning its error. */
async function watchError(client: Client<typeof ResourceService>, req: Parameters<Client<typeof ResourceService>["watch"]>[0]): Promise<unknown> {
  try {
    for await (const _ of client.watch(req)) void _;
  } catch (e) {
    return e;
  }
  return undefined;
}

for (const backend of BACKEND_NAMES) {
  describe(`ResourceService on ${backend}`, () => {
    let server: K4sServer;
    let client: Client<typeof ResourceService>;

    before(async () => {
      server = await serverOn(backend);
      client = clientOf(server);
    });

    after(async () => {
      await server.stop();
    });

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

    test("watch: initial listing ended by a BOOKMARK, then live changes; from a version; filtered by kind and glob", async () => {
      await client.create({ object: wrap(echo("watch-a")) });
      await client.create({ object: wrap(echo("watch-b")) });
      const ac = new AbortController();
      const w = follow(client.watch({ kind: "c", nameGlob: "watch-*" }, { signal: ac.signal }));
      const initial = await w.waitFor(2);
      assert.equal(show(initial), "ADDED watch-a,ADDED watch-b@- | BOOKMARK@rv", "the listing is no resume point until its bookmark");
      const bookmark = initial[1]!.resourceVersion;
      assert.match(bookmark, /^\d+$/);

      await client.update({ object: wrap(echo("watch-a", { x: "1" })) });
      await client.create({ object: wrap(echo("other-c")) }); // filtered out by the glob
      await client.delete({ kind: "c", name: "watch-b" });
      const live = await w.waitUntil((r) => r.events.some((e) => e.type === "DELETED"), "the delete");
      const changes = specChanges(live.slice(2), initial).filter((r) => r.events.length > 0);
      assert.equal(show(changes), "MODIFIED watch-a@rv | DELETED watch-b@rv");
      assert.ok(Number(changes[0]!.resourceVersion) > Number(bookmark));
      assert.equal(changes[1]!.events[0]!.object!.kind.value!.metadata!.resourceVersion, changes[1]!.resourceVersion, "a DELETED object carries the delete's revision");

      // From the bookmark: the same changes again, and nothing of the listing.
      const w2 = follow(client.watch({ kind: "container", nameGlob: "watch-*", resourceVersion: bookmark }, { signal: ac.signal }));
      await w2.waitUntil((r) => r.events.some((e) => e.type === "DELETED"), "the delete again");
      assert.equal(show(specChanges(w2.items, initial).filter((r) => r.events.length > 0)), "MODIFIED watch-a@rv | DELETED watch-b@rv");

      // Every kind: a Service shows up too.
      const w3 = follow(client.watch({ resourceVersion: changes[1]!.resourceVersion, nameGlob: "watch-*" }, { signal: ac.signal }));
      await client.apply({ manifest: "kind: Service\nmetadata: {name: watch-svc}\nspec: {selector: 'watch-*'}\n" });
      const [svc] = (await w3.waitUntil((r) => r.events.length > 0, "the service")).filter((r) => r.events.length > 0);
      assert.equal(`${svc!.events[0]!.type} ${svc!.events[0]!.object!.kind.case} ${svc!.events[0]!.object!.kind.value!.metadata!.name}`, "ADDED service watch-svc");
      ac.abort();
      await expectCode(
        (async () => {
          for await (const _ of client.watch({ resourceVersion: "abc" })) void _;
        })(),
        Code.InvalidArgument,
        /resourceVersion: "abc" is not a resource version/,
      );
    });

    test("watch: a resourceVersion from the future is refused at once", async () => {
      const { resourceVersion } = await client.list({ kind: "c" });
      const future = String(Number(resourceVersion) + 1000);
      const err = await watchError(client, { resourceVersion: future });
      assert.ok(err instanceof ConnectError, String(err));
      assert.equal(Code[err.code], "OutOfRange");
      assert.match(err.rawMessage, new RegExp(`revision ${future} is newer than the store's revision \\d+`));
    });

    test("watch: a revision's events come in one response; cut at any response and resumed, nothing is lost", async () => {
      const { resourceVersion: from } = await client.list({ kind: "c", nameGlob: "rev-*" });
      // One Apply, one revision: five small objects, then three of ~900 KiB (more than one response holds).
      const small = Array.from({ length: 5 }, (_, i) => wrap(echo(`rev-s${i}`)));
      await client.apply({ objects: small });
      const big = Array.from({ length: 3 }, (_, i) => {
        const c = echo(`rev-b${i}`);
        c.spec!.parameters = { blob: "x".repeat(900 * 1024) };
        return wrap(c);
      });
      await client.apply({ objects: big });
      const ac = new AbortController();
      const w = follow(client.watch({ kind: "c", nameGlob: "rev-*", resourceVersion: from }, { signal: ac.signal }));
      const got = await w.waitUntil((r) => r.events.some((e) => e.object?.kind.value?.metadata?.name === "rev-b2") && r.resourceVersion !== "", "the big revision");
      // The two applies' responses (the server also writes the containers' status meanwhile).
      const applied = (r: WatchResponse) => r.events.some((e) => e.type === "ADDED");
      const withEvents = got.filter(applied);
      assert.equal(withEvents[0]!.events.length, 5, "the five objects of one apply in one response");
      assert.notEqual(withEvents[0]!.resourceVersion, "");
      const bigParts = withEvents.slice(1);
      assert.ok(bigParts.length >= 2, `the 2.6 MiB revision was split: ${show(bigParts)}`);
      assert.ok(bigParts.slice(0, -1).every((r) => r.resourceVersion === ""), "only the last part is a resume point");
      assert.equal(bigParts.flatMap((r) => r.events).length, 3);
      ac.abort();

      // Cut after each response in turn; resume from the last resource_version received: the
      // events seen before the cut plus those after it cover every change.
      const all = withEvents.flatMap((r) => r.events.map((e) => e.object!.kind.value!.metadata!.name));
      for (let cut = 1; cut <= withEvents.length; cut++) {
        const seen = withEvents.slice(0, cut);
        const resumeAt = [...seen].reverse().find((r) => r.resourceVersion !== "")?.resourceVersion ?? from;
        const ac2 = new AbortController();
        const again = follow(client.watch({ kind: "c", nameGlob: "rev-*", resourceVersion: resumeAt }, { signal: ac2.signal }));
        if (resumeAt !== withEvents[withEvents.length - 1]!.resourceVersion) {
          await again.waitUntil((r) => r.resourceVersion === withEvents[withEvents.length - 1]!.resourceVersion, `the rest after cut ${cut}`);
        }
        ac2.abort();
        const names = new Set([...seen, ...again.items].flatMap((r) => r.events.map((e) => e.object!.kind.value!.metadata!.name)));
        assert.deepEqual([...names].sort(), [...all].sort(), `cut after response ${cut}`);
      }
    });

    test("list pages: limit + continue_token at one version, remaining_item_count, bad and negative input", async () => {
      await client.apply({ objects: Array.from({ length: 30 }, (_, i) => wrap(echo(`page-${String(i).padStart(2, "0")}`, { group: i % 2 ? "odd" : "even" }))) });
      const first = await client.list({ kind: "c", nameGlob: "page-*", limit: 10 });
      assert.deepEqual(
        first.items.map((o) => o.kind.value!.metadata!.name),
        Array.from({ length: 10 }, (_, i) => `page-${String(i).padStart(2, "0")}`),
      );
      assert.notEqual(first.continueToken, "");
      assert.equal(first.remainingItemCount, 0n, "not known with a name filter");
      // Changes between pages do not show: every page is read at the first page's version.
      await client.delete({ kind: "c", name: "page-15" });
      await client.create({ object: wrap(echo("page-15a")) });
      const names: string[] = first.items.map((o) => o.kind.value!.metadata!.name);
      for (let token = first.continueToken; token; ) {
        const page = await client.list({ kind: "c", nameGlob: "page-*", limit: 10, continueToken: token });
        assert.equal(page.resourceVersion, first.resourceVersion);
        names.push(...page.items.map((o) => o.kind.value!.metadata!.name));
        token = page.continueToken;
      }
      assert.deepEqual(
        names,
        Array.from({ length: 30 }, (_, i) => `page-${String(i).padStart(2, "0")}`),
      );
      // A label filter pages over the matching objects only.
      const odd = await client.list({ kind: "c", labels: { group: "odd" }, limit: 4 });
      assert.equal(odd.items.length, 4);
      assert.ok(odd.items.every((o) => o.kind.value!.metadata!.labels.group === "odd"));
      // Without filters the server estimates what is left.
      const unfiltered = await client.list({ kind: "c", limit: 5 });
      let total = 0;
      for (let token = ""; ; ) {
        const page = await client.list({ kind: "c", continueToken: token });
        total += page.items.length;
        token = page.continueToken;
        if (!token) break;
      }
      assert.equal(Number(unfiltered.remainingItemCount), total - 5);
      await expectCode(client.list({ kind: "c", limit: -1 }), Code.InvalidArgument, /^limit: must be 0 \(the server's default page of 500\) or more, got -1$/);
      await expectCode(client.list({ kind: "c", continueToken: "garbage" }), Code.InvalidArgument, /continueToken: not a continue token/);
      await expectCode(client.list({ kind: "svc", continueToken: first.continueToken }), Code.InvalidArgument, /continues a listing of another kind, not Service/);
    });

    test("apply: an object bigger than 1 MiB as stored is INVALID_ARGUMENT naming it and its size; too many objects too", async () => {
      const huge = echo("too-big");
      huge.spec!.parameters = { blob: "x".repeat(2 * 1024 * 1024) };
      await expectCode(client.apply({ objects: [wrap(echo("too-big-ok")), wrap(huge)] }), Code.InvalidArgument, /^objects\[1\] \(Container "too-big"\): is 2\.00 MiB \(\d+ bytes\) when stored, more than the 1\.00 MiB an object may hold/);
      await expectCode(client.create({ object: wrap(huge) }), Code.InvalidArgument, /^Container "too-big": is 2\.00 MiB/);
      // 12 MiB of typed parameters (under the 16 MiB message limit): refused the same way.
      const huger = echo("too-big-12");
      huger.spec!.parameters = { blob: "x".repeat(12 * 1024 * 1024) };
      await expectCode(client.apply({ objects: [wrap(huger)] }), Code.InvalidArgument, /^objects\[0\] \(Container "too-big-12"\): is 12\.\d\d MiB \(\d+ bytes\) when stored, more than the 1\.00 MiB an object may hold/);
      // 0.9 MiB of manifest whose aliases expand to ~44 MiB.
      const anchor = "y".repeat(900 * 1024);
      const aliases = Array.from({ length: 48 }, (_, i) => `    k${i}: *big`).join("\n");
      const manifest = `kind: Container\nmetadata: {name: alias-big}\nspec:\n  module: workers\n  function: echo\n  parameters:\n    big: &big ${anchor}\n${aliases}\n`;
      await expectCode(client.apply({ manifest }), Code.InvalidArgument, /^document 1 \(Container "alias-big"\): is 4\d\.\d\d MiB/);
      await expectCode(client.get({ kind: "c", name: "too-big-ok" }), Code.NotFound, /not found/);
      await expectCode(client.get({ kind: "c", name: "alias-big" }), Code.NotFound, /not found/);
      const many = Array.from({ length: 10_001 }, (_, i) => wrap(create(ContainerSchema, { metadata: { name: `many-${i}` } })));
      await expectCode(client.apply({ objects: many }), Code.InvalidArgument, /^apply of 10001 typed objects: more than the 10000 one apply may hold/);
    });

    test("a quiet filtered watch survives a compaction window without relisting, thanks to bookmarks", async () => {
      // A short history and frequent bookmarks: SQLite keeps 20 revisions, the etcd store compacts
      // every 200 ms to at most 20 revisions back.
      await withOwnServer(backend, { historyLimit: 20, watchBookmarkIntervalMs: 100 }, { compactIntervalMs: 200 }, async (c) => {
        await c.create({ object: wrap(echo("quiet-1", { app: "quiet" })) });
        // The server writes the new container's status (Pending, no host); then it is quiet.
        await eventually(async () => ((await c.get({ kind: "c", name: "quiet-1" })).object!.kind.value as Container).status?.message !== "", 10_000, "quiet-1's status");
        const start = (await c.list({ kind: "c", labels: { app: "quiet" } })).resourceVersion;
        const ac = new AbortController();
        const w = follow(c.watch({ kind: "c", labels: { app: "quiet" }, resourceVersion: start }, { signal: ac.signal }));
        // 100 changes the watch does not select, far more than the history keeps.
        await c.create({ object: wrap(echo("loud", { app: "loud" })) });
        for (let i = 0; i < 100; i++) await c.update({ object: wrap(echo("loud", { app: "loud", i: String(i) })) });
        const head = (await c.list({ kind: "c", limit: 1 })).resourceVersion;
        await w.waitUntil((r) => isBookmark(r) && Number(r.resourceVersion) >= Number(head), `a bookmark at ${head}`);
        assert.ok(w.items.every((r) => r.events.length === 0), "nothing selected changed");
        ac.abort();
        // The start version is compacted away now: without the bookmarks this watch would relist.
        await eventually(async () => {
          const e = await watchError(c, { kind: "c", labels: { app: "quiet" }, resourceVersion: start });
          return e instanceof ConnectError && e.code === Code.OutOfRange;
        }, 15_000, `version ${start} compacted`);
        const last = [...w.items].reverse().find(isBookmark)!.resourceVersion;
        const ac2 = new AbortController();
        const resumed = follow(c.watch({ kind: "c", labels: { app: "quiet" }, resourceVersion: last }, { signal: ac2.signal }));
        await c.update({ object: wrap(echo("quiet-1", { app: "quiet", n: "2" })) });
        const got = await resumed.waitUntil((r) => r.events.length > 0, "the quiet change");
        assert.equal(show(got.filter((r) => r.events.length > 0)), "MODIFIED quiet-1@rv");
        ac2.abort();
        const ended = await resumed.done;
        assert.ok(ended === undefined || (ended instanceof ConnectError && ended.code === Code.Canceled), `ended by our cancel only: ${String(ended)}`);
      });
    });

    test("a continue token whose version was compacted is OUT_OF_RANGE: continue token expired", async () => {
      await withOwnServer(backend, { historyLimit: 5 }, { compactIntervalMs: 100 }, async (c) => {
        await c.apply({ objects: Array.from({ length: 4 }, (_, i) => wrap(echo(`exp-${i}`))) });
        const first = await c.list({ kind: "c", limit: 2 });
        for (let i = 0; i < 20; i++) await c.update({ object: wrap(echo("exp-0", { i: String(i) })) });
        await eventually(async () => {
          try {
            await c.list({ kind: "c", limit: 2, continueToken: first.continueToken });
            return false;
          } catch (e) {
            assert.ok(e instanceof ConnectError);
            assert.equal(Code[e.code], "OutOfRange");
            assert.match(e.rawMessage, new RegExp(`^continue token expired: its listing was read at revision ${first.resourceVersion}, which is no longer kept .*; start a new list without continueToken$`));
            return true;
          }
        }, 15_000, "the token to expire");
      });
    });

    test("20,000 Containers listed page by page through the gRPC API with a 4 MiB receive limit", async () => {
      // History long enough for the status writes of 20,000 new containers (one revision each)
      // not to expire the listing's continue token while it is read (etcd: no compaction round).
      await withOwnServer(backend, { historyLimit: 100_000 }, { compactIntervalMs: 600_000 }, async (writer, s) => {
        const params = { note: "p".repeat(120) };
        for (let batch = 0; batch < 2; batch++) {
          const objects = Array.from({ length: 10_000 }, (_, i) => {
            const c = echo(`bulk-${String(batch * 10_000 + i).padStart(5, "0")}`);
            c.spec!.parameters = params;
            return wrap(c);
          });
          await writer.apply({ objects });
        }
        // What other languages' generated clients and grpcurl accept by default.
        const reader = clientOf(s, 4 * 1024 * 1024);
        let token = "";
        let pages = 0;
        let bytes = 0;
        const names: string[] = [];
        do {
          const page = await reader.list({ kind: "c", nameGlob: "bulk-*", continueToken: token });
          pages++;
          bytes += page.items.reduce((n, o) => n + JSON.stringify((o.kind.value as Container).spec?.parameters ?? {}).length + 100, 0);
          names.push(...page.items.map((o) => o.kind.value!.metadata!.name));
          token = page.continueToken;
        } while (token);
        assert.equal(names.length, 20_000);
        assert.equal(new Set(names).size, 20_000);
        assert.deepEqual(names, [...names].sort());
        assert.equal(pages, 40, "the default page holds 500 objects");
        assert.ok(bytes > 4 * 1024 * 1024, `the whole listing (~${(bytes / 1048576).toFixed(1)} MiB) would not fit one 4 MiB response`);
        // A limit above what fits still gets pages under the byte cap.
        const wide = await reader.list({ kind: "c", nameGlob: "bulk-*", limit: 20_000 });
        assert.ok(wide.items.length < 20_000 && wide.continueToken !== "", `one page of ${wide.items.length}`);
      });
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
  });
}

test("a watch that falls behind the kept history while its client does not read fails that stream with OUT_OF_RANGE; the server stays up", async () => {
  // The stream's handler reads the store watch one item ahead while it waits for the client to
  // take the previous one. Here the client stops reading while more than the store buffers for a
  // live watcher (16 MiB) is written and the history (4 revisions) moves past it: the item read
  // ahead then fails while the handler waits to write the one before. That failure must end this
  // stream only, not the server process with an unhandled rejection.
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on("unhandledRejection", onUnhandled);
  const server = await startTestServer({ historyLimit: 4 });
  const ac = new AbortController();
  try {
    const client = clientOf(server);
    const big = "x".repeat(60 * 1024);
    const svc = (name: string, annotations: Record<string, string>) => wrap(create(ServiceSchema, { metadata: { name, annotations }, spec: { selector: "app=none" } }));
    const names = Array.from({ length: 8 }, (_, round) => Array.from({ length: 20 }, (_, i) => `behind-${round}-${i}`));
    // 160 small Services, each with its status written: from here on, changes of their
    // annotations alone are written as they are (no status write in between).
    for (const round of names) await client.apply({ objects: round.map((n) => svc(n, { note: "small" })) });
    await eventually(async () => {
      const { items } = await client.list({ kind: "svc" });
      return items.length === 160 && items.every((o) => o.kind.case === "service" && o.kind.value.status?.observedGeneration === 1n);
    }, 30_000, "every Service's status written");
    const from = (await client.list({ kind: "svc", limit: 1 })).resourceVersion;
    const watch = client.watch({ kind: "svc", resourceVersion: from }, { signal: ac.signal })[Symbol.asyncIterator]();
    // The watch is live once it delivered a change; after that the client reads nothing.
    await client.apply({ objects: [svc("behind-0-0", { note: "live" })] });
    const first = await watch.next();
    assert.equal(first.done, false);
    assert.equal(first.value.events.length, 1);
    // 8 applies that give the 20 Services of each ~180 KiB of annotations (one revision each,
    // ~3.5 MiB: more than one response, so writing one waits for the client; ~28 MiB in all),
    // then small changes: far more than the 4 revisions the history keeps.
    for (const round of names) await client.apply({ objects: round.map((n) => svc(n, { a: big, b: big, c: big })) });
    for (let i = 0; i < 10; i++) await client.apply({ objects: [svc("behind-0-0", { note: `small ${i}` })] });
    // Only now does the client read again: it gets what the server had taken before falling
    // behind, then the stream's end.
    let events = 0;
    const end = await (async () => {
      for (;;) {
        const r = await watch.next();
        if (r.done) return undefined;
        events += r.value.events.length;
      }
    })().catch((e: unknown) => e);
    assert.ok(end instanceof ConnectError, `the stream ended with ${String(end)} after ${events} events`);
    assert.equal(Code[end.code], "OutOfRange", end.rawMessage);
    assert.match(end.rawMessage, /is older than the kept history/);
    assert.ok(events < 160, `the stream delivered ${events} events although it fell behind`);
    assert.deepEqual(unhandled, [], "a rejection was left unhandled (it would end the server process)");
    // The server still serves.
    assert.equal((await client.get({ kind: "svc", name: "behind-7-19" })).object?.kind.case, "service");
  } finally {
    ac.abort();
    await server.stop();
    process.off("unhandledRejection", onUnhandled);
  }
});
