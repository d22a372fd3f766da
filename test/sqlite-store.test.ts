/**
 * The SQLite store through its interface, in memory (or in a temporary file where reopening
 * matters), fast enough to run once per mutant: the Store contract every backend keeps
 * (store-contract.ts), and what SQLite adds: its history window bounded by revisions and by
 * bytes, watchers that fall behind their buffer (by events or bytes) and catch up from history
 * in pages, group commit, and closing.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { getEventListeners } from "node:events";
import { Code, ConnectError } from "@connectrpc/connect";
import { openSqliteStore, type SqliteStore, type SqliteStoreOptions } from "../src/server/store/sqlite-store.js";
import type { Store, StoreEvent, WatchBatch } from "../src/server/store/store.js";
import { sqliteBackend } from "./store-backends.js";
import { collect, dec, eventsOf, expectCode, fmt, put, storeContract } from "./store-contract.js";

storeContract(sqliteBackend);

/** A test on a fresh SQLite store in memory, closed at its end whatever happened; `ac` (for its watches) is aborted first. */
function storeTest(name: string, options: SqliteStoreOptions, fn: (s: SqliteStore, ac: AbortController) => Promise<void>) {
  test(name, async () => {
    const s = openSqliteStore(options);
    const ac = new AbortController();
    try {
      await fn(s, ac);
    } finally {
      ac.abort();
      await s.close();
    }
  });
}

storeTest("sqlite: a slow watcher does not block writers and catches up from history", { watchBufferLimit: 3, historyLimit: 1000 }, async (s, ac) => {
  const it = eventsOf(s.watch("/", 0, ac.signal))[Symbol.asyncIterator]();
  const first = it.next(); // registers the watcher, which then waits
  await s.txn([], [put("/k", "0")]);
  assert.equal((await first).value![0]!.kv.modRevision, 1);
  // 50 writes while the consumer reads nothing: far more than its 3-event buffer.
  for (let i = 1; i <= 50; i++) await s.txn([], [put("/k", String(i))]);
  const revs: number[] = [];
  while (revs.length < 50) revs.push((await it.next()).value![0]!.kv.modRevision);
  assert.deepEqual(
    revs,
    Array.from({ length: 50 }, (_, i) => i + 2),
    "every revision once, in order",
  );
  const live = it.next();
  await s.txn([], [put("/k", "live")]);
  assert.equal((await live).value![0]!.kv.modRevision, 52, "back to live delivery");
  await it.return?.(undefined);
});

storeTest("sqlite: a watcher that falls behind the kept history gets OUT_OF_RANGE", { watchBufferLimit: 2, historyLimit: 5 }, async (s, ac) => {
  const it = eventsOf(s.watch("/", 0, ac.signal))[Symbol.asyncIterator]();
  const first = it.next();
  await s.txn([], [put("/k", "0")]);
  await first;
  for (let i = 1; i <= 20; i++) await s.txn([], [put("/k", String(i))]);
  await expectCode(it.next(), Code.OutOfRange, /older than the kept history/);
});

/** Reads a watch until it has delivered revision `upTo`: every batch, progress ones included. */
async function watchUpTo(s: Store, prefix: string, from: number, upTo: number): Promise<WatchBatch[]> {
  const ac = new AbortController();
  const got: WatchBatch[] = [];
  for await (const b of s.watch(prefix, from, ac.signal)) {
    got.push(b);
    if (b.revision >= upTo) break;
  }
  ac.abort();
  return got;
}

const value = (n: number, fill = "v") => fill.repeat(n);

storeTest("sqlite: history is bounded by bytes: the oldest revisions go first, the newest stays even alone over the bound", { historyBytes: 100 }, async (s) => {
  // One key "/k" (2 bytes): a revision holds its key, its value and the value before it.
  await s.txn([], [put("/k", value(30))]); // rev 1: 2 + 30 = 32 bytes
  await s.txn([], [put("/k", value(30))]); // rev 2: 2 + 30 + 30 = 62 (94 in all)
  assert.equal(await s.compactRevision(), 0, "94 bytes fit in 100");
  await s.txn([], [put("/k", value(30))]); // rev 3: 62 (156 in all): revisions 1 and 2 go
  assert.equal(await s.compactRevision(), 2);
  await s.txn([], [put("/k", value(500))]); // rev 4: 532, over the bound alone: kept, 3 goes
  assert.equal(await s.compactRevision(), 3);
  await expectCode(s.range("/", { revision: 2 }), Code.OutOfRange, /revision 2 is older than the kept history \(compacted up to 3\)/);
  const kept = await watchUpTo(s, "/", 3, 4);
  assert.deepEqual(kept.map((b) => fmt(b.events)), ["put /k@4"]);
  assert.equal(kept[0]!.events[0]!.kv.value.byteLength, 500);
  assert.equal(kept[0]!.events[0]!.prevKv!.value.byteLength, 30);
  // A delete holds its key and the value it removed.
  await s.txn([], [{ type: "delete", key: "/k" }]); // rev 5: 2 + 500 (1034 in all): 4 goes
  assert.equal(await s.compactRevision(), 4);
  await s.txn([], [put("/a", "")]); // rev 6: 2 bytes (504 in all): 5 goes
  assert.equal(await s.compactRevision(), 5);
  await s.txn([], [put("/b", "")]); // rev 7: 2 more (4 bytes in all)
  assert.equal(await s.compactRevision(), 5);
  await s.txn([], [put("/c", value(94))]); // rev 8: 96 (100 in all: exactly the bound, kept)
  assert.equal(await s.compactRevision(), 5);
});

storeTest("sqlite: history is bounded by revisions, and by both bounds at once", { historyLimit: 3, historyBytes: 1000 }, async (s) => {
  for (let i = 1; i <= 3; i++) await s.txn([], [put(`/k${i}`, "x")]);
  assert.equal(await s.compactRevision(), 0, "3 revisions kept");
  await s.txn([], [put("/k4", "x")]);
  assert.equal(await s.compactRevision(), 1, "the 4th pushes the 1st out");
  // 3 revisions of 400 bytes: 1,200 bytes pass the 1,000 bound before the 3-revision one.
  for (let i = 5; i <= 7; i++) await s.txn([], [put(`/n${i}`, value(400))]);
  assert.equal(await s.compactRevision(), 5, "bytes bound: revisions 6 and 7 stay (806 bytes)");
  await s.txn([], [put("/n8", "x")]);
  assert.equal(await s.compactRevision(), 5, "revisions 6, 7, 8 (812 bytes) fit both bounds");
  await s.txn([], [put("/n9", "x")]);
  assert.equal(await s.compactRevision(), 6, "the revision bound again");
});

test("sqlite: a reopened store keeps its revision, its compaction and the sizes of its kept history", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-sqlite-unit-"));
  const path = join(dir, "k4s.db");
  try {
    let s = openSqliteStore({ path, historyBytes: 200 });
    for (let i = 1; i <= 3; i++) await s.txn([], [put(`/k${i}`, value(58))]); // 3 x 61 bytes = 183
    await s.txn([], [put("/big", value(300))]); // 304: 1, 2 and 3 go
    await s.txn([], [put("/k9", value(58))]); // 61 (365): 4 goes
    assert.equal(await s.compactRevision(), 4);
    await s.close();
    s = openSqliteStore({ path, historyBytes: 200 });
    assert.equal(await s.revision(), 5);
    assert.equal(await s.compactRevision(), 4);
    assert.equal(dec((await s.get("/big"))!.value), value(300));
    // The kept revision 5 (61 bytes) was counted from the file: 61 + 61 + 61 = 183 fit in 200,
    // a fourth 61 does not.
    await s.txn([], [put("/m1", value(58))]);
    await s.txn([], [put("/m2", value(58))]);
    assert.equal(await s.compactRevision(), 4);
    await s.txn([], [put("/m3", value(58))]);
    assert.equal(await s.compactRevision(), 5);
    const replay = await watchUpTo(s, "/", 5, 8);
    assert.deepEqual(replay.map((b) => fmt(b.events)), ["put /m1@6", "put /m2@7", "put /m3@8"]);
    await s.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

storeTest("sqlite: a watcher past its buffer's bytes catches up from history, every revision once and in order", { watchBufferBytes: 100, historyLimit: 1000 }, async (s, ac) => {
  const it = eventsOf(s.watch("/", 0, ac.signal))[Symbol.asyncIterator]();
  const first = it.next();
  await s.txn([], [put("/k", "0")]);
  assert.equal((await first).value![0]!.kv.modRevision, 1);
  // 20 writes of 40-byte values while nothing reads: far past 100 bytes, few events.
  for (let i = 2; i <= 21; i++) await s.txn([], [put("/k", value(40, String(i % 10)))]);
  const revs: number[] = [];
  while (revs.length < 20) {
    const b = (await it.next()).value!;
    assert.equal(dec(b[0]!.kv.value), value(40, String(b[0]!.kv.modRevision % 10)));
    revs.push(b[0]!.kv.modRevision);
  }
  assert.deepEqual(revs, Array.from({ length: 20 }, (_, i) => i + 2));
  const live = it.next();
  await s.txn([], [put("/k", "live")]);
  assert.equal((await live).value![0]!.kv.modRevision, 22);
});

storeTest("sqlite: a watcher within its buffer gets live batches as they were written", { watchBufferLimit: 3, watchBufferBytes: 36, historyLimit: 2 }, async (s, ac) => {
  // Exactly at its bounds: 3 events and 3 x 12 bytes waiting are kept in memory, not dropped.
  const it = s.watch("/", 0, ac.signal)[Symbol.asyncIterator]();
  const first = it.next();
  await s.txn([], [put("/k", value(10))]); // 2 + 10 = 12 bytes
  assert.equal((await first).value!.revision, 1);
  await s.txn([], [put("/x", value(10))]); // 12 (no value before)
  await s.txn([], [put("/y", value(10))]); // 12
  await s.txn([], [put("/z", value(10))]); // 12: 3 events, 36 bytes waiting
  // The history keeps only 2 revisions now: a watcher that had been dropped to it would get OUT_OF_RANGE.
  assert.equal(await s.compactRevision(), 2);
  const got: string[] = [];
  for (let i = 0; i < 3; i++) got.push(fmt((await it.next()).value!.events));
  assert.deepEqual(got, ["put /x@2", "put /y@3", "put /z@4"]);
});

storeTest("sqlite: a watcher reading history in pages gets every revision's events together, over more than a page", { historyLimit: 10_000 }, async (s) => {
  // 300 revisions (more than a 256-revision page), then 3 of 3 x 700 KiB (more than a 4 MiB
  // page with the values before them).
  for (let i = 1; i <= 300; i++) await s.txn([], [put(`/p/${i}`, "x")]);
  const big = value(700 * 1024);
  for (let i = 1; i <= 3; i++) await s.txn([], [put("/b/1", big), put("/b/2", big), put("/b/3", big)]);
  await s.txn([], [put("/other", "x")]); // 304: nothing under /b/ or /p/
  const p = await watchUpTo(s, "/p/", 0, 304);
  const withEvents = p.filter((b) => b.events.length > 0);
  assert.deepEqual(withEvents.map((b) => fmt(b.events)), Array.from({ length: 300 }, (_, i) => `put /p/${i + 1}@${i + 1}`));
  assert.equal(p[p.length - 1]!.revision, 304, "progress up to the head");
  // One batch per revision, in order: no revision reported twice (a page's end is not reported
  // again as progress when its last batch is at it).
  const revisions = p.map((b) => b.revision);
  assert.deepEqual(revisions, [...new Set(revisions)].sort((a, b) => a - b));
  // From 0: a first page of 256 revisions with nothing under /b/ (the watch must move past it).
  const b = (await watchUpTo(s, "/b/", 0, 304)).filter((x) => x.events.length > 0);
  assert.deepEqual(b.map((x) => fmt(x.events)), Array.from({ length: 3 }, (_, i) => `put /b/1@${301 + i},put /b/2@${301 + i},put /b/3@${301 + i}`));
  assert.ok(b.every((x) => x.events.every((e) => e.kv.value.byteLength === big.length && (x.revision === 301 || e.prevKv?.value.byteLength === big.length))));
});

storeTest("sqlite: a watch of a prefix with nothing in history reports progress to the head, then follows", {}, async (s, ac) => {
  for (let i = 1; i <= 5; i++) await s.txn([], [put(`/loud/${i}`, "x")]);
  const w = collect(s.watch("/quiet/", 2, ac.signal));
  const progress = await w.waitFor(1);
  assert.deepEqual(progress.map((b) => [b.revision, b.events.length]), [[5, 0]]);
  await s.txn([], [put("/quiet/a", "x")]);
  const got = await w.waitFor(2);
  assert.equal(fmt(got[1]!.events), "put /quiet/a@6");
});

storeTest("sqlite: transactions queued together commit as one group, each with its own revision and guard", {}, async (s) => {
  await s.txn([], [put("/g", "0")]);
  // 600 at once: more than one group commit of 256; every other one guards on a stale revision.
  const results = await Promise.all(Array.from({ length: 600 }, (_, i) => s.txn(i % 2 === 0 ? [] : [{ key: "/g", modRevision: 99_999 }], [put(`/t/${i}`, String(i))])));
  assert.deepEqual(results.map((r) => r.succeeded), Array.from({ length: 600 }, (_, i) => i % 2 === 0));
  const revs = results.filter((r) => r.succeeded).map((r) => r.revision);
  assert.deepEqual(revs, Array.from({ length: 300 }, (_, i) => i + 2), "one revision each, in order");
  assert.equal((await s.range("/t/")).kvs.length, 300);
  assert.equal(await s.revision(), 301);
  // A guard on every key of a txn: all must hold.
  const g = (await s.get("/g"))!.modRevision;
  const t0 = (await s.get("/t/0"))!.modRevision;
  assert.equal((await s.txn([{ key: "/g", modRevision: g }, { key: "/t/0", modRevision: t0 + 1 }], [put("/g", "no")])).succeeded, false);
  assert.equal((await s.txn([{ key: "/g", modRevision: g }, { key: "/t/0", modRevision: t0 }], [put("/g", "yes")])).succeeded, true);
  assert.equal(dec((await s.get("/g"))!.value), "yes");
});

storeTest("sqlite: range at an older revision shows deleted keys as they were and hides keys created since", {}, async (s) => {
  await s.txn([], [put("/r/a", "a1"), put("/r/b", "b1"), put("/r/c", "c1")]); // 1
  await s.txn([], [{ type: "delete", key: "/r/b" }, put("/r/a", "a2"), put("/r/d", "d1")]); // 2
  await s.txn([], [put("/r/a", "a3")]); // 3
  const at1 = await s.range("/r/", { revision: 1 });
  assert.deepEqual(at1.kvs.map((k) => `${k.key}=${dec(k.value)}@${k.modRevision}/${k.createRevision}/v${k.version}`), ["/r/a=a1@1/1/v1", "/r/b=b1@1/1/v1", "/r/c=c1@1/1/v1"]);
  const page = await s.range("/r/", { revision: 1, limit: 1, after: "/r/a" });
  assert.deepEqual([page.kvs.map((k) => k.key), page.more, page.remaining], [["/r/b"], true, 1]);
  const now = await s.range("/r/", { revision: 0, limit: 0 });
  assert.deepEqual(now.kvs.map((k) => `${k.key}=${dec(k.value)}`), ["/r/a=a3", "/r/c=c1", "/r/d=d1"]);
  assert.deepEqual([now.revision, now.more, now.remaining], [3, false, 0]);
  await expectCode(s.range("/r/", { revision: 4 }), Code.OutOfRange, /revision 4 is newer than the store's revision 3/);
  const exact = await s.range("/r/", { limit: 3 });
  assert.deepEqual([exact.kvs.length, exact.more, exact.remaining], [3, false, 0], "a page holding the last key says there is no more");
});

test("sqlite: closing the store fails what waits on it with UNAVAILABLE: queued writes and open watches", async () => {
  const s = openSqliteStore();
  await s.txn([], [put("/k", "1")]);
  const ac = new AbortController();
  const it = s.watch("/", 1, ac.signal)[Symbol.asyncIterator]();
  const waiting = it.next();
  const queued = s.txn([], [put("/k", "2")]);
  await s.close();
  await s.close(); // twice is fine
  await expectCode(queued, Code.Unavailable, /store is closed/);
  await expectCode(waiting, Code.Unavailable, /store is closed/);
  await expectCode(s.txn([], [put("/k", "3")]), Code.Unavailable, /store is closed/);
  await expectCode(s.range("/"), Code.Unavailable, /store is closed/);
  await expectCode(s.compactRevision(), Code.Unavailable, /store is closed/);
  await expectCode(s.revision(), Code.Unavailable, /store is closed/);
  await expectCode(async () => {
    for await (const _ of s.watch("/", 0, ac.signal)) void _;
  }, Code.Unavailable, /store is closed/);
});

test("sqlite: a watcher dropped to history right behind the compaction gets OUT_OF_RANGE; one at the compaction catches up", async () => {
  for (const writes of [5, 6]) {
    // Keeps 5 revisions; a buffer of one event: the second write waiting drops the watcher to history.
    const s = openSqliteStore({ watchBufferLimit: 1, historyLimit: 5 });
    const ac = new AbortController();
    try {
      const it = eventsOf(s.watch("/", 0, ac.signal))[Symbol.asyncIterator]();
      const first = it.next();
      await s.txn([], [put("/k", "1")]);
      await first; // delivered up to revision 1
      for (let i = 2; i <= writes + 1; i++) await s.txn([], [put("/k", String(i))]);
      const compacted = await s.compactRevision();
      assert.equal(compacted, writes + 1 - 5);
      if (compacted > 1) {
        // Revision 2 is gone from the history: the watcher cannot get it.
        await expectCode(it.next(), Code.OutOfRange, /revision 1 is older than the kept history \(compacted up to 2\)/);
      } else {
        const revs: number[] = [];
        while (revs.length < writes) revs.push((await it.next()).value![0]!.kv.modRevision);
        assert.deepEqual(revs, Array.from({ length: writes }, (_, i) => i + 2));
      }
    } finally {
      ac.abort();
      await s.close();
    }
  }
});

storeTest("sqlite: a watcher past its buffer's bytes is dropped to history: behind the kept history it gets OUT_OF_RANGE", { watchBufferLimit: 10_000, watchBufferBytes: 100, historyLimit: 5 }, async (s, ac) => {
  // Far more events than it may buffer by count; a few 40-byte values pass its 100 bytes.
  const it = eventsOf(s.watch("/", 0, ac.signal))[Symbol.asyncIterator]();
  const first = it.next();
  await s.txn([], [put("/k", "0")]);
  await first;
  for (let i = 1; i <= 20; i++) await s.txn([], [put("/k", value(40))]);
  await expectCode(it.next(), Code.OutOfRange, /older than the kept history/);
});

storeTest("sqlite: a watch catching up from history stops at its signal's abort, in the middle of a page", {}, async (s) => {
  for (let i = 1; i <= 5; i++) await s.txn([], [put(`/h/${i}`, "x")]);
  const ac = new AbortController();
  const it = s.watch("/h/", 0, ac.signal)[Symbol.asyncIterator]();
  // One page holds the 5 revisions; the consumer takes the first, then cancels.
  const first = await it.next();
  assert.equal(first.done, false);
  assert.equal(fmt(first.value!.events), "put /h/1@1");
  ac.abort();
  const next = await it.next();
  assert.equal(next.done, true, `a batch after the abort: ${next.value ? fmt(next.value.events) : ""}`);
});

test("sqlite: a store file in use cannot be opened again (as by a second process): UNAVAILABLE, naming it", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-sqlite-unit-"));
  try {
    const s = openSqliteStore({ path: join(dir, "k4s.db") });
    await s.txn([], [put("/k", "v")]);
    assert.throws(
      () => openSqliteStore({ path: join(dir, "k4s.db") }),
      (e: unknown) => e instanceof ConnectError && e.code === Code.Unavailable && e.rawMessage === `store ${join(dir, "k4s.db")} is in use by another process`,
    );
    await s.close();
    const again = openSqliteStore({ path: join(dir, "k4s.db") });
    assert.equal(dec((await again.get("/k"))!.value), "v");
    await again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("sqlite: a store file written before freed space was given back is converted once, its data kept", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-sqlite-unit-"));
  const path = join(dir, "k4s.db");
  try {
    let s = openSqliteStore({ path });
    await s.txn([], [put("/k", "v")]);
    await s.close();
    // As such a file was: no incremental auto-vacuum.
    let db = new Database(path);
    db.pragma("auto_vacuum = NONE");
    db.exec("VACUUM");
    assert.equal(db.pragma("auto_vacuum", { simple: true }), 0);
    db.close();
    s = openSqliteStore({ path });
    assert.equal(dec((await s.get("/k"))!.value), "v");
    assert.equal(await s.revision(), 1);
    await s.close();
    db = new Database(path, { readonly: true });
    assert.equal(db.pragma("auto_vacuum", { simple: true }), 2, "incremental");
    assert.equal(db.pragma("journal_mode", { simple: true }), "wal");
    db.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

storeTest("sqlite: a watch replaying history gives each event as it was given live: type, value, revisions, version, previous value", {}, async (s, ac) => {
  const live = collect(eventsOf(s.watch("/", 0, ac.signal)));
  await s.txn([], [put("/a", "1"), put("/b", "1")]);
  await s.txn([], [put("/a", "2")]);
  await s.txn([], [{ type: "delete", key: "/a" }, put("/b", "2")]);
  await s.txn([], [put("/a", "3")]);
  const show = (batches: StoreEvent[][]) =>
    batches.map((b) => b.map((e) => `${e.type} ${e.kv.key}@${e.kv.modRevision} c${e.kv.createRevision} v${e.kv.version} "${dec(e.kv.value)}" prev ${e.prevKv ? `"${dec(e.prevKv.value)}"@${e.prevKv.modRevision} c${e.prevKv.createRevision} v${e.prevKv.version}` : "none"}`));
  const given = show(await live.waitFor(4));
  assert.deepEqual(given, [
    ['put /a@1 c1 v1 "1" prev none', 'put /b@1 c1 v1 "1" prev none'],
    ['put /a@2 c1 v2 "2" prev "1"@1 c1 v1'],
    ['delete /a@3 c0 v0 "" prev "2"@2 c1 v2', 'put /b@3 c1 v2 "2" prev "1"@1 c1 v1'],
    ['put /a@4 c4 v1 "3" prev none'],
  ]);
  const replayed = await watchUpTo(s, "/", 0, 4);
  assert.deepEqual(show(replayed.map((b) => b.events)), given, "replayed from history as given live");
});

storeTest("sqlite: a failed guard beside a watcher that has not read yet answers its write and leaves the watcher its events", {}, async (s, ac) => {
  const w = collect(eventsOf(s.watch("/", 0, ac.signal)));
  const ok = s.txn([], [put("/a", "1")]);
  const failed = s.txn([{ key: "/a", modRevision: 0 }], [put("/a", "2")]);
  assert.deepEqual(await ok, { succeeded: true, revision: 1 });
  assert.deepEqual(await failed, { succeeded: false, revision: 1 });
  await s.txn([], [put("/b", "1")]);
  assert.deepEqual((await w.waitFor(2)).map(fmt), ["put /a@1", "put /b@2"]);
});

storeTest("sqlite: a group commit SQLite refuses fails every write of the group, stores none of them, and the store goes on", {}, async (s) => {
  // Queued in one turn, the three are one SQLite transaction; the middle value cannot be bound.
  const writes = [s.txn([], [put("/a", "1")]), s.txn([], [{ type: "put", key: "/bad", value: {} as Uint8Array }]), s.txn([], [put("/c", "1")])];
  const outcomes = await Promise.allSettled(writes);
  assert.deepEqual(
    outcomes.map((o) => o.status),
    ["rejected", "rejected", "rejected"],
  );
  assert.equal(await s.revision(), 0);
  assert.deepEqual((await s.range("/")).kvs, []);
  assert.deepEqual(await s.txn([], [put("/a", "1")]), { succeeded: true, revision: 1 });
});

test("sqlite: a store file in a directory that does not exist is refused with SQLite's own reason", () => {
  const path = join(tmpdir(), "k4s-sqlite-unit-no-such-dir", "sub", "k4s.db");
  assert.throws(() => openSqliteStore({ path }), (e: Error) => !(e instanceof ConnectError) && /directory does not exist/.test(e.message));
});

storeTest("sqlite: an ended watch leaves nothing behind: not followed any more, no listener left on its signal", {}, async (s) => {
  const ended = async (how: "return" | "abort" | "error") => {
    const ac = new AbortController();
    const it = s.watch("/", await s.revision(), ac.signal)[Symbol.asyncIterator]();
    const first = it.next();
    await s.txn([], [put("/k", how)]);
    await first;
    assert.equal(s.watchCount, 1, `${how}: followed while it runs`);
    assert.equal(getEventListeners(ac.signal, "abort").length, 1);
    if (how === "return") await it.return?.(undefined);
    else if (how === "abort") {
      const next = it.next();
      ac.abort();
      assert.equal((await next).done, true);
    } else await it.throw?.(new Error("consumer failed")).catch(() => {});
    assert.equal(s.watchCount, 0, `${how}: still followed after it ended`);
    assert.equal(getEventListeners(ac.signal, "abort").length, 0, `${how}: its listener left on the signal`);
  };
  await ended("return");
  await ended("abort");
  await ended("error");
});
