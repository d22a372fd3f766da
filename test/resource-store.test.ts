/**
 * The typed ResourceStore (create-resource-store.ts) on SQLite in memory, fast enough to run once
 * per mutant: the rules every backend keeps (resource-store-contract.ts; store.test.ts runs them
 * on etcd), and more of them one by one: paged listings, batched writes, apply's bounds and
 * watches' filters.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { ServiceSchema } from "../src/gen/k4s/v1/resources_pb.js";
import { createResourceStore } from "../src/server/store/create-resource-store.js";
import { openSqliteStore, type SqliteStoreOptions } from "../src/server/store/sqlite-store.js";
import type { ResourceStore } from "../src/server/store/resource-store.js";
import { sqliteBackend } from "./store-backends.js";
import { container, resourceStoreContract } from "./resource-store-contract.js";
import { expectCode } from "./store-contract.js";

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
  const remaining = [first.remainingItemCount];
  for (let token = first.continueToken; token; ) {
    const page = await rs.list("Container", { limit: 10, continueToken: token });
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
  const size = (await rs.store.get("/k4s/containers/b-00"))!.value.byteLength;
  const first = await rs.list("Container", { maxBytes: 3 * size });
  assert.deepEqual(names(first.items), ["b-00", "b-01", "b-02"]);
  assert.equal(first.remainingItemCount, 3);
  const second = await rs.list("Container", { maxBytes: 3 * size - 1, continueToken: first.continueToken });
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
