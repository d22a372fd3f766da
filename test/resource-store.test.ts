/**
 * The typed ResourceStore (create-resource-store.ts) on SQLite in memory, fast enough to run once
 * per mutant: the rules every backend keeps (resource-store-contract.ts; store.test.ts runs them
 * on etcd), and more of them one by one: paged listings, batched writes, apply's bounds and
 * watches' filters.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create, fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { ContainerSchema, ReplicaSetSchema, ServiceSchema, type Container } from "../src/gen/k4s/v1/resources_pb.js";
import { createResourceStore, MAX_APPLY_OBJECTS, MAX_OBJECT_BYTES } from "../src/server/store/create-resource-store.js";
import { openSqliteStore, type SqliteStoreOptions } from "../src/server/store/sqlite-store.js";
import type { ListResult, ObjectBatch, ResourceStore } from "../src/server/store/resource-store.js";
import type { Store } from "../src/server/store/store.js";
import { sqliteBackend } from "./sqlite-backend.js";
import { container, resourceStoreContract } from "./resource-store-contract.js";
import { expectCode } from "./store-contract.js";
import { matchesGlob } from "../src/api/selector.js";
import { parseLabelSelector } from "../src/api/label-selector.js";

resourceStoreContract(sqliteBackend);

/** A test on a fresh typed store over SQLite in memory. */
function rsTest(name: string, fn: (rs: ResourceStore) => Promise<void>, options: SqliteStoreOptions = {}) {
  test(name, async () => {
    const store = openSqliteStore(options);
    try {
      await fn(createResourceStore(store));
    } finally {
      await store.close();
    }
  });
}

const names = (items: { metadata?: { name: string } }[]) => items.map((o) => o.metadata!.name);
const padded = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(2, "0")}`);

rsTest("list pages by count at the first page's revision, with what remains; filters page over matches only", async (rs) => {
  await rs.createAll(padded("page", 30).map((name, i) => container(name, { metadata: { name, labels: { group: i % 2 ? "odd" : "even" } } })));
  await rs.create(container("solo"));
  await rs.create(create(ServiceSchema, { metadata: { name: "page-svc" }, spec: { selector: "page-*" } }));
  const first = await rs.list("Container", { limit: 10 });
  assert.deepEqual(names(first.items), padded("page", 10));
  assert.equal(first.remainingItemCount, 21, "the 20 other pages and solo");
  assert.ok(first.continueToken);
  // Changes between pages do not show: every page is read at the first page's revision.
  await rs.delete("Container", "page-15");
  await rs.create(container("page-15a"));
  const seen = names(first.items);
  const remaining: (number | undefined)[] = [first.remainingItemCount];
  for (let token: string | undefined = first.continueToken; token; ) {
    const page: ListResult<"Container"> = await rs.list("Container", { limit: 10, continueToken: token });
    assert.equal(page.revision, first.revision);
    seen.push(...names(page.items));
    remaining.push(page.remainingItemCount);
    token = page.continueToken;
  }
  assert.deepEqual(seen, [...padded("page", 30), "solo"]);
  assert.deepEqual(remaining, [21, 11, 1, undefined], "the last page has no continuation");
  // A page that ends exactly at the last object has no continuation either.
  const exact = await rs.list("Container", { limit: 32 });
  assert.equal(exact.items.length, 31);
  assert.equal(exact.continueToken, undefined);
  const all = await rs.list("Container", { limit: 31 });
  assert.deepEqual([all.items.length, all.continueToken, all.remainingItemCount], [31, undefined, undefined]);

  // A name glob reads only the names it can match, and says nothing of what remains.
  const glob = await rs.list("Container", { nameGlob: "page-1*", limit: 4 });
  assert.deepEqual(names(glob.items), ["page-10", "page-11", "page-12", "page-13"]);
  assert.equal(glob.remainingItemCount, undefined);
  const rest = await rs.list("Container", { nameGlob: "page-1*", continueToken: glob.continueToken });
  assert.deepEqual(names(rest.items), ["page-14", "page-15a", "page-16", "page-17", "page-18", "page-19"]);
  assert.deepEqual(names((await rs.list("Container", { nameGlob: "*-0[12]" })).items), ["page-01", "page-02"]);
  const odd = await rs.list("Container", { labels: { group: "odd" }, limit: 4 });
  assert.deepEqual(names(odd.items), ["page-01", "page-03", "page-05", "page-07"]);
  assert.equal(odd.remainingItemCount, undefined);
  const oddRest = await rs.list("Container", { labels: { group: "odd" }, continueToken: odd.continueToken });
  assert.deepEqual(names(oddRest.items), ["page-09", "page-11", "page-13", "page-17", "page-19", "page-21", "page-23", "page-25", "page-27", "page-29"]);
  assert.equal(oddRest.continueToken, undefined);
  assert.deepEqual(names((await rs.list("Service")).items), ["page-svc"], "a kind's listing holds only that kind");
});

rsTest("list pages by stored bytes: a page ends before the object that would pass the bound, and holds at least one", async (rs) => {
  await rs.createAll(padded("b", 6).map((name) => container(name, { metadata: { name }, spec: { module: "workers", function: "echo", parameters: { blob: "x".repeat(1000) } } })));
  // Each object's stored size (they differ by a byte or so: the creation time's encoding).
  const size = (await rs.store.range("/k4s/containers/")).kvs.map((kv) => kv.value.byteLength);
  const first = await rs.list("Container", { maxBytes: size[0]! + size[1]! + size[2]! });
  assert.deepEqual(names(first.items), ["b-00", "b-01", "b-02"]);
  assert.equal(first.remainingItemCount, 3);
  const second = await rs.list("Container", { maxBytes: size[3]! + size[4]! + size[5]! - 1, continueToken: first.continueToken });
  assert.deepEqual(names(second.items), ["b-03", "b-04"]);
  const one = await rs.list("Container", { maxBytes: 1, continueToken: second.continueToken });
  assert.deepEqual(names(one.items), ["b-05"], "at least one object, however small the bound");
  assert.equal(one.continueToken, undefined);
});

rsTest("a continue token is refused when it is not one, is of another kind, or its revision is no longer kept", async (rs) => {
  await rs.createAll(padded("t", 5).map((name) => container(name)));
  const first = await rs.list("Container", { limit: 2 });
  await expectCode(rs.list("Container", { continueToken: "garbage" }), Code.InvalidArgument, /^continueToken: not a continue token from a List of this server$/);
  const forge = (t: unknown) => Buffer.from(JSON.stringify(t)).toString("base64url");
  for (const bad of [{ v: 2, rv: 1, key: "/k4s/containers/t-00" }, { v: 1, rv: "1", key: "/k4s/containers/t-00" }, { v: 1, rv: 1.5, key: "/k4s/containers/t-00" }, { v: 1, rv: -1, key: "/k4s/containers/t-00" }, { v: 1, rv: 1 }]) {
    await expectCode(rs.list("Container", { continueToken: forge(bad) }), Code.InvalidArgument, /^continueToken: not a continue token/);
  }
  assert.equal((await rs.list("Container", { continueToken: forge({ v: 1, rv: 0, key: "/k4s/containers/t-02" }) })).items.length, 2, "revision 0 reads the current one");
  await expectCode(rs.list("Service", { continueToken: first.continueToken }), Code.InvalidArgument, /^continueToken: the token continues a listing of another kind, not Service$/);
  // The history keeps 5 revisions: the first page's can be read until 6 more writes.
  for (let i = 0; i < 5; i++) await rs.create(container(`later-${i}`));
  assert.equal((await rs.list("Container", { continueToken: first.continueToken })).items.length, 3);
  await rs.create(container("later-5"));
  await assert.rejects(rs.list("Container", { continueToken: first.continueToken }), (e: { code?: Code; rawMessage?: string }) => {
    assert.equal(e.code, Code.OutOfRange);
    assert.match(e.rawMessage!, new RegExp(`^continue token expired: its listing was read at revision ${first.revision}, which is no longer kept \\(.+\\); start a new list without continueToken$`));
    return true;
  });
  // A read at a revision ahead of the store is no expired token: its own error.
  await expectCode(rs.list("Container", { continueToken: forge({ v: 1, rv: 999, key: "/k4s/containers/t-00" }) }), Code.OutOfRange, /newer than the store's revision/);
}, { historyLimit: 5 });

rsTest("createAll: each object created or refused on its own, in order, one revision per 128", async (rs) => {
  await rs.create(container("taken"));
  const base = await rs.revision();
  const inputs = [container("n-0"), container("taken"), container("n-0"), create(ServiceSchema, { metadata: { name: "Bad_Name" } }), ...padded("m", 130).map((name) => container(name))];
  const results = await rs.createAll(inputs);
  assert.equal(results.length, inputs.length);
  assert.equal(results[0]!.object!.metadata!.name, "n-0");
  assert.equal(results[1]!.error?.code, Code.AlreadyExists);
  assert.match(results[1]!.error!.rawMessage, /^Container "taken" already exists$/);
  assert.equal(results[2]!.error?.code, Code.AlreadyExists, "the same name twice in one call");
  assert.equal(results[3]!.error?.code, Code.InvalidArgument);
  assert.match(results[3]!.error!.rawMessage, /metadata\.name/);
  assert.deepEqual(
    results.slice(4).map((r) => r.object?.metadata?.name),
    padded("m", 130),
  );
  // 131 objects to write: 128, then 3 (the one already there was refused by the first try).
  assert.equal(await rs.revision(), base + 2);
  assert.deepEqual([...new Set(results.filter((r) => r.object).map((r) => r.object!.metadata!.resourceVersion))], [String(base + 1), String(base + 2)]);
  const stored = (await rs.get("Container", "m-00"))!;
  assert.equal(stored.metadata!.uid, results[4]!.object!.metadata!.uid);
  assert.equal(stored.metadata!.generation, 1n);
});

rsTest("updateStatuses: one transaction for a chunk; a missing object, a mutate that throws or writes nothing; the caller's known copy used at its version", async (rs) => {
  await rs.createAll(["a", "b", "c", "d"].map((name) => container(name)));
  const known = (await rs.get("Container", "d"))!;
  const base = await rs.revision();
  let gotKnown: unknown;
  const results = await rs.updateStatuses("Container", [
    { name: "a", mutate: (c) => ({ ...c.status!, phase: "Running", host: "h" }) },
    { name: "gone", mutate: (c) => ({ ...c.status!, phase: "Running" }) },
    {
      name: "b",
      mutate: () => {
        throw new Error("no status for b");
      },
    },
    { name: "c", mutate: () => undefined },
    {
      name: "d",
      known,
      mutate: (c) => {
        gotKnown = c;
        return { ...c.status!, phase: "Pending" };
      },
    },
  ]);
  assert.equal(await rs.revision(), base + 1, "one transaction");
  assert.equal(results[0]!.object!.status!.phase, "Running");
  assert.equal(results[0]!.object!.metadata!.resourceVersion, String(base + 1));
  assert.deepEqual(results[1], { object: undefined });
  assert.match(results[2]!.error!.rawMessage, /no status for b/);
  assert.equal(results[3]!.object!.metadata!.resourceVersion, String(base), "c unchanged");
  assert.equal(gotKnown, known, "mutate gets the known copy itself");
  assert.equal(known.status!.phase, "", "the known copy is not changed");
  assert.equal(results[4]!.object!.status!.phase, "Pending");
  assert.equal((await rs.get("Container", "a"))!.status!.host, "h");
  assert.equal((await rs.get("Container", "d"))!.status!.phase, "Pending");
  assert.equal((await rs.get("Container", "b"))!.status!.phase, "");
  // A known copy of another version is not used.
  const stale = await rs.updateStatuses("Container", [{ name: "d", known, mutate: (c) => ({ ...c.status!, phase: c.status!.phase + "!" }) }]);
  assert.equal(stale[0]!.object!.status!.phase, "Pending!");
});

rsTest("a status batch whose objects keep changing under it goes one by one, and each lands", async (rs) => {
  await rs.createAll(["a", "b"].map((name) => container(name)));
  const b = (await rs.store.get("/k4s/containers/b"))!;
  let calls = 0;
  const results = await rs.updateStatuses("Container", [
    {
      name: "a",
      mutate: (c) => {
        // The first tries write b again meanwhile (queued before the batch's own transaction,
        // whose guard on b then fails).
        if (calls++ < 3) void rs.store.txn([], [{ type: "put", key: b.key, value: b.value }]);
        return { ...c.status!, phase: "Running", host: "h" };
      },
    },
    { name: "b", mutate: (c) => ({ ...c.status!, phase: "Failed" }) },
  ]);
  assert.deepEqual(
    results.map((r) => r.object?.status?.phase),
    ["Running", "Failed"],
  );
  assert.ok(calls > 3, "a was written on its own after the batch failed");
  assert.equal((await rs.get("Container", "a"))!.status!.phase, "Running");
  assert.equal((await rs.get("Container", "b"))!.status!.phase, "Failed");
});

rsTest("apply: templates are written before their users; an owner is kept unless the input names one; hundreds of objects of a kind read at once", async (rs) => {
  const set = create(ReplicaSetSchema, { metadata: { name: "calc" }, spec: { replicas: 2, container: "tmpl" } });
  const svc = create(ServiceSchema, { metadata: { name: "calc" }, spec: { selector: "calc-*" } });
  const from = await rs.revision();
  await rs.apply([svc, set, container("tmpl")]);
  const ac = new AbortController();
  for await (const batch of rs.watch({ fromRevision: from }, ac.signal)) {
    assert.deepEqual(
      batch.events.map((e) => e.object.kind),
      ["Container", "ReplicaSet", "Service"],
      "in one batch, the template first",
    );
    break;
  }
  ac.abort();
  const owner = { kind: "ReplicaSet", name: "calc", uid: "u-1" };
  await rs.create(container("calc-0", { metadata: { name: "calc-0", ownerReference: owner } }));
  let out = await rs.apply([container("calc-0", { metadata: { name: "calc-0", labels: { v: "2" } } })]);
  assert.equal(out[0]!.action, "configured");
  assert.equal(out[0]!.object.metadata!.ownerReference?.uid, "u-1", "an input without an owner keeps the stored one");
  out = await rs.apply([container("calc-0", { metadata: { name: "calc-0", labels: { v: "2" }, ownerReference: { ...owner, uid: "u-2" } } })]);
  assert.equal(out[0]!.action, "configured");
  assert.equal((await rs.get("Container", "calc-0"))!.metadata!.ownerReference?.uid, "u-2");

  // 300 Containers (read with one range) and a Service (read alone), applied again with changes.
  const many = padded("x", 300).map((name) => container(name));
  out = await rs.apply([...many, create(ServiceSchema, { metadata: { name: "one" }, spec: { selector: "x-*" } })]);
  assert.ok(out.every((o) => o.action === "created"));
  const rev = await rs.revision();
  out = await rs.apply([...many.slice(0, 299), container("x-299", { metadata: { name: "x-299", labels: { v: "2" } } }), container("x-300"), create(ServiceSchema, { metadata: { name: "one" }, spec: { selector: "x-*" } })]);
  assert.deepEqual(
    [...new Set(out.map((o, i) => `${i < 299 ? "first 299" : o.object.metadata!.name}: ${o.action}`))],
    ["first 299: unchanged", "x-299: configured", "x-300: created", "one: unchanged"],
  );
  assert.equal(await rs.revision(), rev + 1);
  assert.equal(out[300]!.object.metadata!.resourceVersion, String(rev + 1));
  assert.equal(out[0]!.object.metadata!.resourceVersion, String(rev), "an unchanged object keeps its version");
});

rsTest("an object too big when stored and an apply of too many objects are INVALID_ARGUMENT, naming them", async (rs) => {
  const huge = container("huge", { metadata: { name: "huge" }, spec: { module: "workers", function: "echo", parameters: { blob: "x".repeat(MAX_OBJECT_BYTES) } } });
  await expectCode(rs.create(huge), Code.InvalidArgument, /^Container "huge": is 1\.00 MiB \(\d+ bytes\) when stored, more than the 1\.00 MiB an object may hold/);
  await expectCode(rs.apply([container("ok"), huge], { labels: ["doc 1", "doc 2"] }), Code.InvalidArgument, /^doc 2: is 1\.00 MiB/);
  await expectCode(rs.apply([container("ok"), container("Bad_Name")], { labels: ["doc 1", "doc 2"] }), Code.InvalidArgument, /^doc 2: metadata\.name/);
  // An object of exactly the bound is stored. Its size is found from the refusal of a bigger
  // one; the creation time's encoded size varies by a byte, so it is tried until it is exact.
  const fits = (blob: number) => container("fits", { metadata: { name: "fits" }, spec: { module: "workers", function: "echo", parameters: { blob: "x".repeat(blob) } } });
  let exact = false;
  for (let i = 0; i < 20 && !exact; i++) {
    const over = await rs.create(fits(MAX_OBJECT_BYTES)).then(
      () => assert.fail("stored"),
      (e: Error) => Number(/\((\d+) bytes\)/.exec(e.message)![1]),
    );
    try {
      await rs.create(fits(MAX_OBJECT_BYTES - (over - MAX_OBJECT_BYTES)));
      exact = (await rs.store.get("/k4s/containers/fits"))!.value.byteLength === MAX_OBJECT_BYTES;
      await rs.delete("Container", "fits");
    } catch (e) {
      assert.doesNotMatch(String(e), new RegExp(`\\(${MAX_OBJECT_BYTES} bytes\\)`), "an object of exactly the bound refused");
    }
  }
  assert.ok(exact, "no object of exactly the bound was tried");
  const same = container("same");
  const tooMany = Array.from({ length: MAX_APPLY_OBJECTS + 1 }, () => same);
  await expectCode(rs.apply(tooMany), Code.InvalidArgument, new RegExp(`^apply of ${MAX_APPLY_OBJECTS + 1} objects: more than the ${MAX_APPLY_OBJECTS} one apply may hold`));
  assert.deepEqual(names((await rs.list("Container")).items), []);
});

rsTest("delete: a Container on a host is removed at once when it is pending or finished, marked while it runs", async (rs) => {
  const phases = ["Pending", "Succeeded", "Failed", "Running", "Starting", ""];
  await rs.createAll(phases.map((_, i) => container(`c-${i}`)));
  for (const [i, phase] of phases.entries()) await rs.updateStatus("Container", `c-${i}`, (c) => ({ ...c.status!, host: "h", phase }));
  await rs.create(container("unbound"));
  const results = await rs.deleteAll("Container", [...phases.map((_, i) => ({ name: `c-${i}` })), { name: "unbound" }]);
  assert.ok(results.every((r) => r.object));
  assert.deepEqual(names((await rs.list("Container")).items), ["c-3", "c-4", "c-5"]);
  for (const name of ["c-3", "c-4", "c-5"]) {
    const c = (await rs.get("Container", name))!;
    assert.ok(c.metadata!.deletionTimestamp, name);
    assert.deepEqual([c.status!.phase, c.status!.ready], ["Terminating", false]);
  }
  // A Service is removed whatever it holds; a ReplicaSet through deleteAll takes its Containers.
  await rs.create(create(ServiceSchema, { metadata: { name: "s" }, spec: { selector: "*" } }));
  const set = await rs.create(create(ReplicaSetSchema, { metadata: { name: "r" }, spec: { replicas: 1, container: "unbound" } }));
  await rs.create(container("r-0", { metadata: { name: "r-0", ownerReference: { kind: "ReplicaSet", name: "r", uid: set.metadata!.uid } } }));
  await rs.deleteAll("Service", [{ name: "s" }]);
  const gone = await rs.deleteAll("ReplicaSet", [{ name: "r" }, { name: "nope" }]);
  assert.equal(gone[1]!.error?.code, Code.NotFound);
  assert.deepEqual([(await rs.list("Service")).items.length, (await rs.list("ReplicaSet")).items.length], [0, 0]);
  assert.equal(await rs.get("Container", "r-0"), undefined);
});

rsTest("watch: by name glob, of every kind, only object keys, and not from a revision ahead of the store", async (rs) => {
  const base = await rs.revision();
  await rs.store.txn([], [{ type: "put", key: "/k4s/not-a-kind/x", value: new Uint8Array([1]) }, { type: "put", key: "/k4s/loose", value: new Uint8Array([1]) }]);
  await rs.create(container("web-1"));
  await rs.create(container("db-1"));
  await rs.create(create(ServiceSchema, { metadata: { name: "web" }, spec: { selector: "web-*" } }));
  const head = await rs.revision();
  const seen = async (options: Parameters<ResourceStore["watch"]>[0]) => {
    const ac = new AbortController();
    const out: string[] = [];
    for await (const b of rs.watch(options, ac.signal)) {
      out.push(...b.events.map((e) => `${e.type} ${e.object.kind} ${e.object.metadata!.name}`));
      if (b.revision >= head) break;
    }
    ac.abort();
    return out;
  };
  assert.deepEqual(await seen({ fromRevision: base }), ["ADDED Container web-1", "ADDED Container db-1", "ADDED Service web"]);
  assert.deepEqual(await seen({ fromRevision: base, nameGlob: "web*" }), ["ADDED Container web-1", "ADDED Service web"]);
  assert.deepEqual(await seen({ fromRevision: base, kind: "Service" }), ["ADDED Service web"]);
  assert.deepEqual(await seen({ nameGlob: "web-*" }), ["ADDED Container web-1"], "the listing filters by name too");
  assert.deepEqual(names((await rs.list("Container", { nameGlob: "*" })).items), ["db-1", "web-1"]);
  await expectCode(
    (async () => {
      for await (const _ of rs.watch({ fromRevision: head + 1 }, new AbortController().signal)) void _;
    })(),
    Code.OutOfRange,
    /newer than the store's revision/,
  );
});

rsTest("a name glob lists exactly the names it matches, whatever pattern characters it holds and wherever", async (rs) => {
  const all = [...padded("page", 25), "page-x", "page-xy", "pagey", "solo", "s?lo"];
  await rs.createAll(all.filter((n) => n !== "s?lo").map((name) => container(name)));
  const globs = ["page-1*", "page-?5", "page-[12]0", "page-{03,17}", "page-!(0*)", "page-+(x|y)", "page-@(x|xy)", "*-0[12]", "page-1\\5", "page(-x|y)", "page-x", "pag", "s*", ""];
  for (const glob of globs) {
    const listed = names((await rs.list("Container", { nameGlob: glob })).items);
    const expected = names((await rs.list("Container")).items).filter((n) => glob === "" || matchesGlob(n, glob));
    assert.deepEqual(listed, expected, `nameGlob ${JSON.stringify(glob)}`);
  }
});

rsTest("filtered listings: a label selector pages over its matches; a chunk of the range with no match is read past", async (rs) => {
  await rs.createAll(padded("f", 300).map((name, i) => container(name, { metadata: { name, labels: { tier: i === 99 || i === 3 ? "gold" : "plain" } } })));
  await rs.store.txn([], [{ type: "put", key: "/k4s/containers-not-a-kind", value: new Uint8Array([1]) }]);
  const gold = await rs.list("Container", { labelSelector: parseLabelSelector("tier=gold"), limit: 1 });
  assert.deepEqual(names(gold.items), ["f-03"]);
  assert.equal(gold.remainingItemCount, undefined, "not known with a label selector");
  const next = await rs.list("Container", { labelSelector: parseLabelSelector("tier=gold"), limit: 1, continueToken: gold.continueToken });
  assert.deepEqual(names(next.items), ["f-99"], "past 256 names without a match (f-99 is the last name)");
  assert.deepEqual(names((await rs.list("Container", { nameGlob: "*-99", limit: 1 })).items), ["f-99"], "a glob with no literal head, likewise");
  assert.deepEqual(names((await rs.list("Container", { labels: { tier: "gold" } })).items), ["f-03", "f-99"]);
  const notPlain = await rs.list("Container", { labelSelector: parseLabelSelector("tier!=plain"), maxBytes: 1 });
  assert.deepEqual(names(notPlain.items), ["f-03"]);
  // Every kind's objects, with a key under the prefix that is no object: a watch's listing.
  const ac = new AbortController();
  for await (const b of rs.watch({ labels: { tier: "gold" } }, ac.signal)) {
    assert.deepEqual(
      b.events.map((e) => e.object.metadata!.name),
      ["f-03", "f-99"],
    );
    const stored = await Promise.all(["f-03", "f-99"].map(async (n) => (await rs.store.get(`/k4s/containers/${n}`))!.value.byteLength));
    assert.deepEqual(
      b.events.map((e) => e.size),
      stored,
      "each object's stored size",
    );
    break;
  }
  ac.abort();
});

rsTest("a byte-bounded listing reads past its first 500 keys, says what remains, and a closed store's listing is UNAVAILABLE", async (rs) => {
  await rs.createAll(padded("k", 600).map((name) => container(name)));
  const all = await rs.list("Container", { maxBytes: 1e9 });
  assert.equal(all.items.length, 600);
  assert.equal(all.continueToken, undefined);
  const size = (await rs.store.range("/k4s/containers/")).kvs.map((kv) => kv.value.byteLength);
  for (const n of [300, 550]) {
    const part = await rs.list("Container", { maxBytes: size.slice(0, n).reduce((a, b) => a + b, 0) });
    assert.equal(part.items.length, n);
    assert.equal(part.remainingItemCount, 600 - n);
  }
  const token = (await rs.list("Container", { limit: 1 })).continueToken;
  await rs.store.close();
  await expectCode(rs.list("Container"), Code.Unavailable, /store is closed/);
  await expectCode(rs.list("Container", { continueToken: token }), Code.Unavailable, /store is closed/);
});

/**
 * The store with another writer racing the typed layer: before each transaction of the layer,
 * `meanwhile` may write (through the store underneath, so its write lands first and the
 * layer's guards see it), and `after` once it is answered. `txns` counts the layer's transactions.
 */
function raced(store: Store, meanwhile: () => Promise<unknown> | undefined, after?: () => Promise<unknown>): { rs: ResourceStore; txns: () => number } {
  let txns = 0;
  const racing: Store = {
    revision: () => store.revision(),
    get: (key) => store.get(key),
    range: (prefix, options) => store.range(prefix, options),
    async txn(compares, ops) {
      txns++;
      await meanwhile();
      try {
        return await store.txn(compares, ops);
      } finally {
        await after?.();
      }
    },
    watch: (prefix, from, signal) => store.watch(prefix, from, signal),
    compactRevision: () => store.compactRevision(),
    close: () => store.close(),
  };
  return { rs: createResourceStore(racing), txns: () => txns };
}

/** A ResourceStore call whose next `n` transactions each have `write` land just before them. */
function racing(rs: ResourceStore) {
  let left = 0;
  let write: () => Promise<unknown> = async () => undefined;
  const r = raced(rs.store, () => (left-- > 0 ? write() : undefined));
  return Object.assign(r, {
    race(n: number, w: () => Promise<unknown>) {
      left = n;
      write = w;
    },
  });
}

const running = (c: { status?: object }) => ({ ...(c.status as object), host: "h", phase: "Running" }) as never;

rsTest("update: checked before anything is read or written; a write raced by another is retried on the new version, or with a resourceVersion fails ABORTED naming it; one that keeps losing gives up ABORTED", async (rs) => {
  await rs.create(container("u", { metadata: { name: "u", labels: { a: "1" } } }));
  const rev = await rs.revision();
  const bad = (name: string) => create(ContainerSchema, { metadata: { name }, spec: { module: "workers", function: "echo", concurrency: 5000 } });
  await expectCode(rs.update(bad("u")), Code.InvalidArgument, /spec\.concurrency: must be between 0 and 1000/);
  await expectCode(rs.update(bad("missing")), Code.InvalidArgument, /spec\.concurrency/);
  assert.equal(await rs.revision(), rev, "nothing written");

  const r = racing(rs);
  r.race(1, () => rs.updateStatus("Container", "u", running));
  const out = await r.rs.update(container("u", { metadata: { name: "u", labels: { a: "2" } } }));
  assert.deepEqual([out.metadata!.labels.a, out.status!.phase], ["2", "Running"], "retried on the version written meanwhile, its status kept");
  assert.equal(out.metadata!.resourceVersion, String(await rs.revision()));
  assert.equal(r.txns(), 2);
  assert.deepEqual((await rs.get("Container", "u"))!.metadata!.labels, { a: "2" });

  const at = out.metadata!.resourceVersion;
  r.race(1, () => rs.update(container("u", { metadata: { name: "u", labels: { a: "other" } } })));
  await expectCode(
    r.rs.update(container("u", { metadata: { name: "u", resourceVersion: at, labels: { a: "3" } } })),
    Code.Aborted,
    new RegExp(`^Container "u" was modified meanwhile: resourceVersion is ${Number(at) + 1}, not ${at}; read it again and retry$`),
  );
  const now = (await rs.get("Container", "u"))!.metadata!.resourceVersion;
  const gone = () => rs.store.txn([], [{ type: "delete", key: "/k4s/containers/u" }]);
  r.race(1, gone);
  await expectCode(
    r.rs.update(container("u", { metadata: { name: "u", resourceVersion: now, labels: { a: "3" } } })),
    Code.Aborted,
    new RegExp(`^Container "u" was deleted meanwhile \\(expected resourceVersion ${now}\\)$`),
  );
  await rs.create(container("u"));
  r.race(1, gone);
  await expectCode(r.rs.update(container("u", { metadata: { name: "u", labels: { a: "3" } } })), Code.NotFound, /^Container "u" not found$/);

  let n = 0;
  await rs.create(container("u"));
  r.race(Infinity, () => rs.update(container("u", { metadata: { name: "u", labels: { n: String(n++) } } })));
  const before = r.txns();
  await expectCode(r.rs.update(container("u", { metadata: { name: "u", labels: { a: "4" } } })), Code.Aborted, /^Container "u" kept changing during the write; retry$/);
  assert.ok(r.txns() - before > 10, "retried before giving up");
  assert.equal((await rs.get("Container", "u"))!.metadata!.labels.a, undefined);
});

rsTest("delete: a marked result carries its new version; a raced delete is retried (a Container that started running meanwhile is marked, not removed), with a resourceVersion fails ABORTED; one that keeps losing gives up", async (rs) => {
  await rs.createAll(["run", "idle", "gone"].map((name) => container(name)));
  await rs.updateStatus("Container", "run", running);
  const marked = await rs.delete("Container", "run");
  assert.equal((marked as Container).status!.phase, "Terminating");
  assert.ok(marked.metadata!.deletionTimestamp);
  assert.equal(marked.metadata!.resourceVersion, (await rs.get("Container", "run"))!.metadata!.resourceVersion);
  assert.equal(marked.metadata!.resourceVersion, String(await rs.revision()));

  const r = racing(rs);
  r.race(1, () => rs.updateStatus("Container", "idle", running));
  const idle = await r.rs.delete("Container", "idle");
  assert.equal((idle as Container).status!.phase, "Terminating", "started running before the write: marked");
  assert.ok((await rs.get("Container", "idle"))!.metadata!.deletionTimestamp);

  const at = (await rs.get("Container", "gone"))!.metadata!.resourceVersion;
  r.race(1, () => rs.update(container("gone", { metadata: { name: "gone", labels: { x: "1" } } })));
  const refused = r.rs.delete("Container", "gone", { resourceVersion: at });
  await assert.rejects(refused);
  const then = (await rs.get("Container", "gone"))!.metadata!.resourceVersion;
  await expectCode(refused, Code.Aborted, new RegExp(`^Container "gone" was modified meanwhile: resourceVersion is ${then}, not ${at}`));
  r.race(Infinity, () => rs.update(container("gone", { metadata: { name: "gone", labels: { x: String(Math.random()) } } })));
  await expectCode(r.rs.delete("Container", "gone"), Code.Aborted, /^Container "gone" kept changing during the write; retry$/);
  assert.ok(await rs.get("Container", "gone"));
});

rsTest("ReplicaSet delete: only Containers owned by that ReplicaSet go, a marked one is not written again, and an owned Container written meanwhile retries the whole delete (also with a resourceVersion)", async (rs) => {
  const set = await rs.create(create(ReplicaSetSchema, { metadata: { name: "r" }, spec: { replicas: 3, container: "tmpl" } }));
  const uid = set.metadata!.uid;
  const owned = (name: string, kind = "ReplicaSet") => container(name, { metadata: { name, ownerReference: { kind, name: "r", uid } } });
  await rs.createAll([owned("r-0"), owned("r-1"), owned("r-2"), owned("not-r", "Service")]);
  await rs.updateStatus("Container", "r-1", running);
  const markedBefore = await rs.delete("Container", "r-1");
  const r = racing(rs);
  r.race(1, () => rs.updateStatus("Container", "r-2", running));
  await r.rs.delete("ReplicaSet", "r", { resourceVersion: set.metadata!.resourceVersion });
  assert.equal(r.txns(), 2, "retried once");
  assert.deepEqual(names((await rs.list("Container")).items), ["not-r", "r-1", "r-2"]);
  assert.equal((await rs.get("Container", "r-1"))!.metadata!.resourceVersion, markedBefore.metadata!.resourceVersion, "a marked one is left as it was");
  assert.equal((await rs.get("Container", "r-2"))!.status!.phase, "Terminating", "running when the delete landed: marked");
  assert.equal(await rs.get("ReplicaSet", "r"), undefined);
});

rsTest("deleteAll: a name given twice is deleted once (the other NOT_FOUND); a chunk raced by another write is retried on what it finds", async (rs) => {
  await rs.createAll(["a", "b", "c"].map((name) => container(name)));
  const twice = await rs.deleteAll("Container", [{ name: "a" }, { name: "a" }]);
  assert.deepEqual(twice.map((t) => (t.object ? "deleted" : t.error?.code)).sort(), [Code.NotFound, "deleted"].sort());
  const r = racing(rs);
  r.race(1, () => rs.updateStatus("Container", "c", running));
  const out = await r.rs.deleteAll("Container", [{ name: "b" }, { name: "c" }]);
  assert.deepEqual(out.map((o) => (o.object as Container | undefined)?.status?.phase), ["", "Terminating"]);
  assert.deepEqual(names((await rs.list("Container")).items), ["c"]);
  assert.ok((await rs.get("Container", "c"))!.metadata!.deletionTimestamp);
});

rsTest("apply: an apply that changes nothing writes nothing; an object created meanwhile is configured, not replaced; one that keeps losing gives up ABORTED; an unnamed object is named by its place", async (rs) => {
  await rs.apply([container("a"), container("b")]);
  const rev = await rs.revision();
  const same = await rs.apply([container("a"), container("b")]);
  assert.deepEqual(same.map((o) => o.action), ["unchanged", "unchanged"]);
  assert.equal(await rs.revision(), rev);

  const r = racing(rs);
  let theirs: string | undefined;
  r.race(1, async () => (theirs = (await rs.create(container("c", { metadata: { name: "c", labels: { by: "them" } } }))).metadata!.uid));
  const out = await r.rs.apply([container("a"), container("c")]);
  assert.deepEqual(out.map((o) => o.action), ["unchanged", "configured"]);
  const c = (await rs.get("Container", "c"))!;
  assert.deepEqual([c.metadata!.uid, c.metadata!.generation, c.metadata!.labels], [theirs, 1n, {}]);
  assert.equal(out[1]!.object.metadata!.resourceVersion, c.metadata!.resourceVersion);

  let n = 0;
  r.race(Infinity, () => rs.update(container("a", { metadata: { name: "a", labels: { n: String(n++) } } })));
  await expectCode(r.rs.apply([container("a"), container("d")]), Code.Aborted, /^apply: the objects kept changing during the write; retry$/);
  assert.equal(await rs.get("Container", "d"), undefined);

  await expectCode(rs.apply([container("e"), create(ContainerSchema, { spec: { module: "workers", function: "echo" } })]), Code.InvalidArgument, /^object 2 \(Container\): metadata\.name/);
});

const hex = (b: Uint8Array | undefined) => b && Buffer.from(b).toString("hex");

/** The batches of a watch up to (and including) the first that reaches revision `until`. */
async function watchUntil(rs: ResourceStore, options: Parameters<ResourceStore["watch"]>[0], until: number): Promise<ObjectBatch[]> {
  const ac = new AbortController();
  const out: ObjectBatch[] = [];
  for await (const b of rs.watch(options, ac.signal)) {
    out.push(b);
    if (b.revision >= until) break;
  }
  ac.abort();
  return out;
}

rsTest("watch: its listing's events carry each object's version, stored size and bytes; a watch from the store's revision follows; every event's size and bytes are the stored ones", async (rs) => {
  await rs.createAll([container("a"), container("b", { metadata: { name: "b", labels: { app: "x" } } })]);
  await rs.update(container("b", { metadata: { name: "b", labels: { app: "y" } } }));
  const head = await rs.revision();
  const stored = async (name: string) => (await rs.store.get(`/k4s/containers/${name}`))!;
  const [listing] = await watchUntil(rs, { kind: "Container" }, 0);
  assert.equal(listing!.listing, true);
  assert.equal(listing!.revision, head);
  assert.deepEqual(
    listing!.events.map((e) => [e.type, e.object.metadata!.name, e.revision, e.size, hex(e.value), e.previous]),
    [
      ["ADDED", "a", head - 1, (await stored("a")).value.byteLength, hex((await stored("a")).value), undefined],
      ["ADDED", "b", head, (await stored("b")).value.byteLength, hex((await stored("b")).value), undefined],
    ],
  );
  const following = rs.watch({ kind: "Container", fromRevision: head }, new AbortController().signal)[Symbol.asyncIterator]();
  const first = following.next();
  await rs.update(container("a", { metadata: { name: "a", labels: { v: "2" } } }));
  const batch = (await first).value as ObjectBatch;
  assert.equal(batch.listing, undefined, "no listing when resumed");
  assert.deepEqual(batch.events.map((e) => [e.type, e.object.metadata!.name, e.revision]), [["MODIFIED", "a", head + 1]]);
  const a = await stored("a");
  assert.deepEqual([batch.events[0]!.size, hex(batch.events[0]!.value)], [a.value.byteLength, hex(a.value)]);
  await following.return?.(undefined);
  await rs.store.txn([], [{ type: "delete", key: a.key }]);
  const [deleted] = (await watchUntil(rs, { kind: "Container", fromRevision: head + 1 }, head + 2)).flatMap((b) => b.events);
  assert.deepEqual([deleted!.type, deleted!.revision, deleted!.size, hex(deleted!.value)], ["DELETED", head + 2, a.value.byteLength, hex(a.value)]);
  assert.equal(deleted!.previous!.metadata!.resourceVersion, String(head + 1));
});

rsTest("watch: a delete or a change of an object the selector never matched is not delivered, by labels or by a selector", async (rs) => {
  const from = await rs.revision();
  await rs.createAll([container("in", { metadata: { name: "in", labels: { app: "a" } } }), container("out", { metadata: { name: "out", labels: { app: "b" } } })]);
  await rs.update(container("out", { metadata: { name: "out", labels: { app: "c" } } }));
  await rs.delete("Container", "out");
  await rs.delete("Container", "in");
  const head = await rs.revision();
  const seen = (bs: ObjectBatch[]) => bs.flatMap((b) => b.events.map((e) => `${e.type} ${e.object.metadata!.name}`));
  const one = await watchUntil(rs, { fromRevision: from, labels: { app: "a" } }, head);
  assert.deepEqual(seen(one), ["ADDED in", "DELETED in"]);
  const two = await watchUntil(rs, { fromRevision: from, labelSelector: parseLabelSelector("app=a") }, head);
  assert.deepEqual(seen(two), ["ADDED in", "DELETED in"]);
  const [added, deleted] = one.flatMap((b) => b.events);
  assert.equal(deleted!.previous, added!.object, "the deleted object's previous version is the one delivered");
});

rsTest("watch: from a revision older than the kept history is OUT_OF_RANGE", async (rs) => {
  const from = await rs.revision();
  for (let i = 0; i < 5; i++) await rs.create(container(`c-${i}`));
  await expectCode(
    (async () => {
      for await (const _ of rs.watch({ fromRevision: from }, new AbortController().signal)) void _;
    })(),
    Code.OutOfRange,
    /older than the kept history/,
  );
}, { historyLimit: 2 });

rsTest("updateStatus: undefined for a missing object; a write raced by another runs mutate again on the new version; one that keeps losing gives up ABORTED; mutate's copy is its own", async (rs) => {
  assert.equal(await rs.updateStatus("Container", "nope", running), undefined);
  await rs.create(container("s"));
  const r = racing(rs);
  r.race(1, () => rs.updateStatus("Container", "s", (c) => ({ ...c.status!, restarts: c.status!.restarts + 1 })));
  let calls = 0;
  const out = await r.rs.updateStatus("Container", "s", (c) => {
    calls++;
    c.status!.restarts += 10;
    return c.status;
  });
  assert.equal(calls, 2);
  assert.equal(out!.status!.restarts, 11, "the raced write kept, mutate run on it");
  assert.equal((await rs.get("Container", "s"))!.status!.restarts, 11);
  assert.equal(out!.metadata!.resourceVersion, String(await rs.revision()));
  r.race(Infinity, () => rs.updateStatus("Container", "s", (c) => ({ ...c.status!, restarts: c.status!.restarts + 1 })));
  await expectCode(r.rs.updateStatus("Container", "s", running), Code.Aborted, /^Container "s" kept changing during the write; retry$/);
  assert.notEqual((await rs.get("Container", "s"))!.status!.phase, "Running");
});

rsTest("updateStatuses: a name given twice gets both updates, one after the other; a mutate that changes its copy in place and returns undefined leaves the result as stored", async (rs) => {
  await rs.createAll([container("a"), container("b")]);
  const bump = (c: Container) => ({ ...c.status!, restarts: c.status!.restarts + 1 });
  const out = await rs.updateStatuses("Container", [
    { name: "a", mutate: bump },
    { name: "a", mutate: bump },
    {
      name: "b",
      mutate: (c) => {
        c.status!.phase = "Changed";
        return undefined;
      },
    },
  ]);
  assert.equal((await rs.get("Container", "a"))!.status!.restarts, 2);
  assert.deepEqual(out.map((o) => o.object!.status!.restarts).sort(), [1, 2, 0].sort());
  assert.equal(out[2]!.object!.status!.phase, "", "the result is the stored object");
});

rsTest("finalize and finalizeAll: a marked Container raced by another write is removed once it is read again; an unmarked one, even re-created meanwhile, stays; a name given twice is removed once", async (rs) => {
  const marked = async (name: string) => {
    await rs.create(container(name));
    await rs.updateStatus("Container", name, running);
    await rs.delete("Container", name);
  };
  for (const name of ["m-0", "m-1", "m-2"]) await marked(name);
  const r = racing(rs);
  r.race(1, () => rs.updateStatus("Container", "m-0", (c) => ({ ...c.status!, restarts: 7 })));
  await r.rs.finalize("m-0");
  assert.equal(await rs.get("Container", "m-0"), undefined);
  r.race(1, () => rs.updateStatus("Container", "m-1", (c) => ({ ...c.status!, restarts: 7 })));
  assert.deepEqual(await r.rs.finalizeAll(["m-1", "m-1", "m-2"]), [undefined, undefined, undefined]);
  assert.deepEqual(names((await rs.list("Container")).items), []);
  // Removed and created again before the finalize's write: the new one is not marked and stays.
  await marked("m-3");
  r.race(1, async () => {
    await rs.store.txn([], [{ type: "delete", key: "/k4s/containers/m-3" }]);
    await rs.create(container("m-3"));
  });
  await r.rs.finalize("m-3");
  assert.ok(await rs.get("Container", "m-3"));
  r.race(Infinity, () => rs.update(container("m-3", { metadata: { name: "m-3", labels: { n: String(Math.random()) } } })));
  await rs.updateStatus("Container", "m-3", running);
  await rs.delete("Container", "m-3");
  await expectCode(r.rs.finalize("m-3"), Code.Aborted, /^Container "m-3" kept changing during the write; retry$/);
});

rsTest("update with the current resourceVersion lands; an ownerReference is set and removed by update; delete resolves to the object as last stored; a delete with a resourceVersion of an object removed meanwhile fails ABORTED", async (rs) => {
  const c = await rs.create(container("o"));
  const owner = { kind: "ReplicaSet", name: "r", uid: "u-1" };
  const owned = await rs.update(container("o", { metadata: { name: "o", resourceVersion: c.metadata!.resourceVersion, ownerReference: owner } }));
  assert.equal(owned.metadata!.ownerReference?.uid, "u-1");
  assert.equal((await rs.get("Container", "o"))!.metadata!.ownerReference?.uid, "u-1");
  const free = await rs.update(container("o"));
  assert.equal(free.metadata!.ownerReference, undefined, "update replaces the owner too");
  assert.equal((await rs.get("Container", "o"))!.metadata!.ownerReference, undefined);
  const deleted = await rs.delete("Container", "o");
  assert.equal(deleted.metadata!.resourceVersion, free.metadata!.resourceVersion, "as last stored");

  await rs.create(container("p"));
  const at = (await rs.get("Container", "p"))!.metadata!.resourceVersion;
  const r = racing(rs);
  r.race(1, () => rs.store.txn([], [{ type: "delete", key: "/k4s/containers/p" }]));
  await expectCode(r.rs.delete("Container", "p", { resourceVersion: at }), Code.Aborted, new RegExp(`^Container "p" was deleted meanwhile \\(expected resourceVersion ${at}\\)$`));
});

rsTest("a cascade follows ReplicaSet owners only: a Service owned by a ReplicaSet stays, a Container naming a Service's uid as its ReplicaSet stays when the Service goes", async (rs) => {
  const set = await rs.create(create(ReplicaSetSchema, { metadata: { name: "r" }, spec: { replicas: 1, container: "tmpl" } }));
  const svc = await rs.create(create(ServiceSchema, { metadata: { name: "s", ownerReference: { kind: "ReplicaSet", name: "r", uid: set.metadata!.uid } }, spec: { selector: "r-*" } }));
  await rs.create(container("claims", { metadata: { name: "claims", ownerReference: { kind: "ReplicaSet", name: "s", uid: svc.metadata!.uid } } }));
  await rs.delete("ReplicaSet", "r");
  assert.ok(await rs.get("Service", "s"));
  await rs.delete("Service", "s");
  assert.ok(await rs.get("Container", "claims"));
});

rsTest("an apply with several bad objects names each, separated", async (rs) => {
  await expectCode(
    rs.apply([container("Bad_1"), container("ok"), container("Bad_2")]),
    Code.InvalidArgument,
    /^object 1 \(Container "Bad_1"\): metadata\.name: .+; object 3 \(Container "Bad_2"\): metadata\.name: /,
  );
});

rsTest("status writes: mutate's in-place change it returns is written; one it makes but answers undefined for, or an undefined answer on a set status, writes nothing and leaves the result as stored", async (rs) => {
  await rs.createAll(["a", "b", "c"].map((name) => container(name)));
  await rs.updateStatuses("Container", ["a", "b", "c"].map((name) => ({ name, mutate: running })));
  const rev = await rs.revision();
  const out = await rs.updateStatuses("Container", [
    {
      name: "a",
      mutate: (c) => {
        c.status!.restarts = 5;
        return c.status;
      },
    },
    {
      name: "b",
      mutate: (c) => {
        c.status!.phase = "Changed";
        return undefined;
      },
    },
    { name: "c", mutate: () => undefined },
  ]);
  assert.equal(await rs.revision(), rev + 1);
  assert.equal((await rs.get("Container", "a"))!.status!.restarts, 5);
  assert.deepEqual(
    out.map((o) => [o.object!.status!.phase, o.object!.metadata!.resourceVersion]),
    [["Running", String(rev + 1)], ["Running", String(rev)], ["Running", String(rev)]],
  );
  assert.deepEqual([(await rs.get("Container", "b"))!.status!.phase, (await rs.get("Container", "c"))!.status!.phase], ["Running", "Running"]);
  const kept = await rs.updateStatus("Container", "c", () => undefined);
  assert.deepEqual([kept!.status!.phase, kept!.metadata!.resourceVersion], ["Running", String(rev)]);
  assert.equal(await rs.revision(), rev + 1);
});

rsTest("finalize of a missing Container resolves; finalizeAll of a marked one that keeps changing gives up ABORTED for it", async (rs) => {
  await rs.finalize("nope");
  await rs.create(container("m"));
  await rs.updateStatus("Container", "m", running);
  await rs.delete("Container", "m");
  const r = racing(rs);
  r.race(Infinity, () => rs.update(container("m", { metadata: { name: "m", labels: { n: String(Math.random()) } } })));
  const [err] = await r.rs.finalizeAll(["m"]);
  assert.equal(err?.code, Code.Aborted);
  assert.match(err!.rawMessage, /^Container "m" kept changing during the write; retry$/);
  assert.ok(await rs.get("Container", "m"));
});

rsTest("what is stored: no resourceVersion in the stored bytes; create clears what the server sets; an annotation change is written without a new generation", async (rs) => {
  const input = container("s", { metadata: { name: "s", resourceVersion: "77", generation: 9n, uid: "mine", deletionTimestamp: { seconds: 1n } } });
  const c = await rs.create(input);
  assert.deepEqual([c.metadata!.uid === "mine", c.metadata!.generation, c.metadata!.deletionTimestamp], [false, 1n, undefined]);
  assert.equal(input.metadata!.resourceVersion, "77", "the input is not changed");
  const stored = async () => fromBinary(ContainerSchema, (await rs.store.get("/k4s/containers/s"))!.value);
  assert.equal((await stored()).metadata!.resourceVersion, "");
  const annotated = await rs.update(container("s", { metadata: { name: "s", annotations: { note: "x" } } }));
  assert.deepEqual([annotated.metadata!.annotations, annotated.metadata!.generation], [{ note: "x" }, 1n]);
  assert.deepEqual((await stored()).metadata!.annotations, { note: "x" });
  await rs.updateStatus("Container", "s", running);
  await rs.apply([container("s", { metadata: { name: "s", labels: { v: "2" } } })]);
  const known = (await rs.get("Container", "s"))!;
  await rs.updateStatuses("Container", [{ name: "s", known, mutate: (k) => ({ ...k.status!, restarts: 3 }) }]);
  const last = await stored();
  assert.deepEqual([last.metadata!.resourceVersion, last.status!.restarts, last.metadata!.labels], ["", 3, { v: "2" }]);
});

rsTest("a status that makes its object too big when stored is refused naming it, from a known copy or not, and the batch's other updates are written", async (rs) => {
  await rs.createAll([container("k"), container("d"), container("ok")]);
  const known = (await rs.get("Container", "k"))!;
  const rev = await rs.revision();
  const huge = (c: Container) => ({ ...c.status!, message: "x".repeat(MAX_OBJECT_BYTES) });
  const out = await rs.updateStatuses("Container", [
    { name: "k", known, mutate: huge },
    { name: "d", mutate: huge },
    { name: "ok", mutate: running },
  ]);
  for (const [i, name] of ["k", "d"].entries()) {
    assert.equal(out[i]!.error?.code, Code.InvalidArgument, name);
    assert.match(out[i]!.error!.rawMessage, new RegExp(`^Container "${name}": is 1\\.00 MiB \\(\\d+ bytes\\) when stored, more than the 1\\.00 MiB an object may hold`));
  }
  assert.equal(out[2]!.object!.status!.phase, "Running");
  assert.equal(await rs.revision(), rev + 1);
  assert.equal((await rs.get("Container", "ok"))!.status!.phase, "Running");
  await expectCode(rs.updateStatus("Container", "d", huge), Code.InvalidArgument, /^Container "d": is 1\.00 MiB/);
  assert.equal(await rs.revision(), rev + 1);
  assert.equal((await rs.get("Container", "k"))!.status!.message, "");
});

rsTest("a dry-run apply shows a configured object as it would be, at its stored version, and writes nothing", async (rs) => {
  const created = await rs.create(container("dry"));
  const rev = await rs.revision();
  const [out] = await rs.apply([container("dry", { metadata: { name: "dry", labels: { tier: "web" } } })], { dryRun: true });
  assert.equal(out!.action, "configured");
  assert.deepEqual(out!.object.metadata!.labels, { tier: "web" });
  assert.equal(out!.object.metadata!.resourceVersion, created.metadata!.resourceVersion, "the version it was read at");
  assert.equal(await rs.revision(), rev, "nothing written");
  assert.deepEqual((await rs.get("Container", "dry"))!.metadata!.labels, {});
});

rsTest("an object applied again with an equal owner (another copy of it) is unchanged and not written", async (rs) => {
  const owner = () => ({ kind: "ReplicaSet", name: "calc", uid: "u-1" });
  await rs.create(container("calc-0", { metadata: { name: "calc-0", ownerReference: owner() } }));
  const rev = await rs.revision();
  const [out] = await rs.apply([container("calc-0", { metadata: { name: "calc-0", ownerReference: owner() } })]);
  assert.equal(out!.action, "unchanged");
  assert.equal(await rs.revision(), rev, "nothing written");
});

rsTest("a status write from a known copy that makes the object exactly 1 MiB is stored; a byte more is refused naming the object", async (rs) => {
  await rs.create(container("edge"));
  const write = async (len: number) => {
    const known = (await rs.get("Container", "edge"))!;
    const [r] = await rs.updateStatuses("Container", [{ name: "edge", known, mutate: (c) => ({ ...c.status!, message: "x".repeat(len) }) }]);
    return r!;
  };
  const tooBig = /^Container "edge": is 1\.00 MiB \((\d+) bytes\) when stored, more than the 1\.00 MiB an object may hold/;
  const over = await write(MAX_OBJECT_BYTES);
  const size = Number(tooBig.exec(over.error!.rawMessage)![1]);
  // The message's and the status's lengths take three varint bytes at any length near the bound.
  const exact = MAX_OBJECT_BYTES - (size - MAX_OBJECT_BYTES);
  const stored = await write(exact);
  assert.equal(stored.error, undefined, "an object of exactly the bound refused");
  assert.equal((await rs.store.get("/k4s/containers/edge"))!.value.byteLength, MAX_OBJECT_BYTES);
  const byteMore = await write(exact + 1);
  assert.match(byteMore.error!.rawMessage, tooBig);
  assert.equal(byteMore.error!.code, Code.InvalidArgument);
  assert.match(byteMore.error!.rawMessage, new RegExp(`\\(${MAX_OBJECT_BYTES + 1} bytes\\)`));
});

rsTest("createAll: a chunk whose transactions keep failing while none of its names is there gives up ABORTED after 50 retries, storing nothing", async (rs) => {
  // Another writer creates a key just before each of the layer's transactions (so its guard
  // fails) and removes it just after (so the re-read finds none of the chunk's names there).
  const s = rs.store;
  const flicker = "/k4s/containers/flicker";
  const { rs: flickering, txns } = raced(
    s,
    () => s.txn([], [{ type: "put", key: flicker, value: new Uint8Array([1]) }]),
    () => s.txn([], [{ type: "delete", key: flicker }]),
  );
  const results = await flickering.createAll([container("flicker"), container("steady")]);
  assert.deepEqual(
    results.map((r) => [r.error?.code, r.error?.rawMessage]),
    [
      [Code.Aborted, 'Container "flicker" kept changing during the write; retry'],
      [Code.Aborted, 'Container "steady" kept changing during the write; retry'],
    ],
  );
  assert.equal(txns(), 51, "the first try and 50 retries");
  assert.equal((await rs.list("Container")).items.length, 0, "nothing stored");
});
