/**
 * The journal of durable sends over both store backends (SQLite and a real etcd): entries are
 * in the store once append() resolves, many appends share one transaction, settled entries go
 * in batches, a later server run reads back exactly what earlier runs left, the bounds refuse
 * naming the limit, a released entry is read back when its container is taken again, an entry
 * settled here is not read back while its delete is on its way (or failed and retried), and
 * dropping an owner deletes its whole journal.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createSendJournal, JOURNAL_PREFIX, parseKey } from "../src/server/messaging/send-journal.js";
import type { Store } from "../src/server/store/store.js";
import { eventually } from "./eventually.js";
import { startEtcd } from "./etcd.js";
import { BACKENDS, openOnEtcd, type OpenedStore } from "./store-backends.js";

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** Counts the store's transactions, to see group commit. */
function counting(store: Store): { store: Store; txns: () => number } {
  let n = 0;
  return {
    store: {
      ...store,
      revision: () => store.revision(),
      get: (k) => store.get(k),
      range: (p, o) => store.range(p, o),
      txn(c, ops) {
        n++;
        return store.txn(c, ops);
      },
      watch: (p, f, s) => store.watch(p, f, s),
      compactRevision: () => store.compactRevision(),
      close: () => store.close(),
    },
    txns: () => n,
  };
}

async function keys(store: Store, owner = ""): Promise<string[]> {
  return (await store.range(`${JOURNAL_PREFIX}${owner}`)).kvs.map((kv) => kv.key);
}

for (const backend of BACKENDS) {
  describe(`send journal on ${backend.name}`, () => {
    const opened: OpenedStore[] = [];
    after(async () => {
      for (const o of opened) await o.close();
    });
    const open = async () => {
      const o = await backend.open();
      opened.push(o);
      return o.store;
    };

    test("appends are on disk when they resolve, group-committed; removes go in batches", async () => {
      const base = await open();
      const { store, txns } = counting(base);
      const journal = createSendJournal({ store, boot: 1000 });
      const appended = await Promise.all(
        Array.from({ length: 300 }, (_, i) => journal.append("c1", { data: bytes(`m${i}`), contentType: "text/plain", sender: "", service: "" })),
      );
      assert.equal(new Set(appended).size, 300);
      assert.deepEqual(await keys(base, "c1/"), [...appended].sort(), "every resolved append is in the store");
      assert.deepEqual(appended, [...appended].sort(), "keys sort in the order the sends were accepted");
      assert.ok(txns() <= 6, `300 appends of one tick took ${txns()} transactions (at most 100 ops each)`);
      assert.deepEqual(journal.usage("c1"), { messages: 300, bytes: appended.reduce((n, _, i) => n + `m${i}`.length, 0) });

      const before = txns();
      for (const key of appended.slice(0, 250)) journal.remove(key);
      await journal.close();
      assert.equal((await keys(base, "c1/")).length, 50);
      assert.ok(txns() - before <= 3, `250 removes took ${txns() - before} transactions`);
      assert.equal(journal.usage("c1").messages, 50);
    });

    test("a later run recovers what earlier runs left, oldest first, not its own entries", async () => {
      const store = await open();
      const first = createSendJournal({ store, boot: 1000 });
      const k1 = await first.append("c1", { data: bytes("one"), contentType: "text/plain", sender: "s", service: "" });
      await first.append("c1", { data: bytes("two"), contentType: "", sender: "", service: "svc" });
      first.remove(k1);
      await first.close();

      const second = createSendJournal({ store, boot: 2000 });
      await second.append("c1", { data: bytes("three"), contentType: "", sender: "", service: "" });
      const got = await second.recover("c1");
      assert.deepEqual(
        got.map((e) => [text(e.data), e.contentType, e.sender, e.service]),
        [["two", "", "", "svc"]],
      );
      assert.equal(second.usage("c1").messages, 2, "recovered entries count against the bound");
      assert.deepEqual(await second.recover("c2"), []);
    });

    test("keys name their writer: two servers of one boot keep apart, recover's filter reads only the writers it names, a key naming none reads as an unknown earlier run's", async () => {
      const store = await open();
      const old = createSendJournal({ store, boot: 500 });
      await old.append("s1", { data: bytes("old"), contentType: "", sender: "", service: "s1" });
      await old.close();
      const a = createSendJournal({ store, boot: 1000, writer: () => "10.0.0.1:7000" });
      const b = createSendJournal({ store, boot: 1000, writer: () => "my-host:7000" });
      const ka = await a.append("s1", { data: bytes("a"), contentType: "", sender: "", service: "s1" });
      const kb = await b.append("s1", { data: bytes("b"), contentType: "", sender: "", service: "s1" });
      assert.deepEqual(parseKey(ka), { boot: "0000000003e8", writer: "10.0.0.1:7000" });
      assert.deepEqual(parseKey(kb).writer, "my-host:7000", "a writer with '-' in its name");
      assert.equal(parseKey(`${JOURNAL_PREFIX}s1/0000000001f4-0000000001`).writer, undefined);
      assert.deepEqual((await keys(store, "s1/")).map((k) => parseKey(k).boot), ["0000000001f4", "0000000003e8", "0000000003e8"], "sorted oldest first");
      assert.deepEqual(await b.recover("s1", (w) => w === "my-host:7000"), [], "its own run's entry is never read back");
      // Same boot, other writer: not this run's own entry.
      assert.deepEqual((await a.recover("s1", (w) => w === "my-host:7000")).map((e) => text(e.data)), ["b"]);
      assert.deepEqual((await b.recover("s1", (w) => w === undefined)).map((e) => text(e.data)), ["old"]);
      // Read back in a cluster, an entry is claimed: "b" is a's now, "old" b's.
      assert.deepEqual((await b.recover("s1", () => true)).map((e) => text(e.data)), ["a", "b"]);
      await a.close();
      await b.close();
    });

    test("in a cluster an entry read back is claimed first: moved under the reader's key, taken by one of two readers, left alone while its writer's record is there", async () => {
      const store = await open();
      const a = createSendJournal({ store, boot: 500, writer: () => "a:1" });
      for (const d of ["x", "y", "z"]) await a.append("s9", { data: bytes(d), contentType: "", sender: "", service: "s9" });
      await a.close();
      const record = (w: string | undefined) => `/records-for-test/${w}`;
      await store.txn([], [{ type: "put", key: record("a:1"), value: bytes("alive") }]);
      const b = createSendJournal({ store, boot: 1000, writer: () => "b:1" });
      // c has read the entries when b claims them all, before c's own claim.
      const cStore = counting(store).store;
      let byB: Awaited<ReturnType<typeof b.recover>> | undefined;
      cStore.txn = async (cmp, ops) => {
        byB ??= await b.recover("s9", () => true, record);
        return store.txn(cmp, ops);
      };
      const c = createSendJournal({ store: cStore, boot: 1000, writer: () => "c:1" });
      assert.deepEqual(await b.recover("s9", () => true, record), [], "its writer's record is there: not claimed");
      await store.txn([], [{ type: "delete", key: record("a:1") }]);
      const byC = await c.recover("s9", () => true, record);
      assert.deepEqual(byC, [], "claimed by b between c's read and c's claim: c takes none");
      const claimed = byB ?? [];
      assert.deepEqual(claimed.map((e) => text(e.data)), ["x", "y", "z"], "each entry taken once");
      for (const e of claimed) assert.equal(parseKey(e.key).writer, "b:1");
      assert.deepEqual((await keys(store, "s9/")).map((k) => parseKey(k).writer).filter((w) => w === "a:1"), [], "moved, not copied");
      assert.equal(b.usage("s9").messages, 3);
      assert.equal(c.usage("s9").messages, 0);
      assert.deepEqual(await b.recover("s9", (w) => w === "a:1", record), [], "nothing left of a's");
      await b.close();
      await c.close();
    });

    test("a read back that fails counts nothing; what a claim whose answer was lost moved is taken by the next read", async () => {
      const base = await open();
      const a = createSendJournal({ store: base, boot: 500, writer: () => "a:1" });
      for (const d of ["p", "q"]) await a.append("s8", { data: bytes(d), contentType: "", sender: "", service: "s8" });
      await a.close();
      const { store } = counting(base);
      // The store goes away right after applying the claim: its answer and the check of what it moved fail.
      let lose = true;
      let away = false;
      store.txn = async (c, ops) => {
        const r = await base.txn(c, ops);
        if (lose && r.succeeded) {
          lose = false;
          away = true;
          throw new Error("store connection lost");
        }
        return r;
      };
      store.get = async (k) => {
        if (away) throw new Error("store connection lost");
        return base.get(k);
      };
      const d = createSendJournal({ store, boot: 1000, writer: () => "d:1" });
      await assert.rejects(d.recover("s8", () => true), /store connection lost/);
      away = false;
      assert.equal(d.usage("s8").messages, 0, "a failed read counts nothing");
      const got = await d.recover("s8", () => true);
      assert.deepEqual(got.map((e) => [parseKey(e.key).writer, text(e.data)]), [["d:1", "p"], ["d:1", "q"]]);
      assert.equal(d.usage("s8").messages, 2);
      await d.close();
    });

    test("a claim applied whose answer came back as a refusal (the store's retry of a call whose answer was lost) is taken: nothing is left under the reader's keys", async () => {
      // etcd cannot be made to lose an answer on cue: the real store is wrapped so that its
      // first claim applies and then answers as refused, as the store's retry of it would.
      const base = await open();
      const a = createSendJournal({ store: base, boot: 500, writer: () => "a:1" });
      for (const d of ["m", "n", "o"]) await a.append("s7", { data: bytes(d), contentType: "", sender: "", service: "s7" });
      await a.close();
      const { store } = counting(base);
      let refuse = true;
      store.txn = async (c, ops) => {
        const r = await base.txn(c, ops);
        if (!refuse || !r.succeeded) return r;
        refuse = false;
        return { succeeded: false, revision: r.revision };
      };
      const d = createSendJournal({ store, boot: 1000, writer: () => "d:1" });
      const got = await d.recover("s7", () => true);
      assert.deepEqual(got.map((e) => [parseKey(e.key).writer, text(e.data)]), [["d:1", "m"], ["d:1", "n"], ["d:1", "o"]]);
      assert.equal(d.usage("s7").messages, 3, "counted: settled and deleted by this run");
      assert.deepEqual((await keys(base, "s7/")).sort(), got.map((e) => e.key).sort(), "each stored entry is one of those taken");
      await d.close();
    });

    test("a send released (its container taken by another server) is no longer counted, stays stored, and is read back by this run when it takes the container again", async () => {
      const store = await open();
      const journal = createSendJournal({ store, boot: 3000 });
      const k1 = await journal.append("c3", { data: bytes("one"), contentType: "", sender: "", service: "" });
      await journal.append("c3", { data: bytes("two"), contentType: "", sender: "", service: "" });
      assert.deepEqual(await journal.recover("c3"), [], "its own entries it still counts are not read back");
      journal.release(k1);
      assert.equal(journal.usage("c3").messages, 1, "a released entry is not counted");
      assert.equal((await keys(store, "c3/")).length, 2, "a released entry stays stored");
      assert.deepEqual((await journal.recover("c3")).map((e) => [e.key, text(e.data)]), [[k1, "one"]]);
      assert.equal(journal.usage("c3").messages, 2, "read back, it is counted again");
      assert.deepEqual(await journal.recover("c3"), [], "read back once");
      await journal.close();
    });

    test("an entry read back and settled here is not read back again while its delete is on its way or failed; a failed delete is tried again", async () => {
      const base = await open();
      const earlier = createSendJournal({ store: base, boot: 1000 });
      await earlier.append("c5", { data: bytes("once"), contentType: "", sender: "", service: "" });
      await earlier.close();
      // The store refuses deletes for a while (etcd unreachable, say): put and range still work.
      let refuseDeletes = true;
      const { store } = counting(base);
      const txn = store.txn.bind(store);
      store.txn = (c, ops) => (refuseDeletes && ops.some((op) => op.type === "delete") ? Promise.reject(new Error("store unreachable")) : txn(c, ops));
      const errors: string[] = [];
      const journal = createSendJournal({ store, boot: 2000, onError: (m) => errors.push(m) });
      const [got] = await journal.recover("c5");
      assert.equal(text(got!.data), "once");
      journal.remove(got!.key);
      assert.deepEqual(await journal.recover("c5"), [], "settled here, its delete on its way: not read back");
      await eventually(() => errors.length > 0, 30_000, "the delete failed");
      assert.match(errors[0]!, /deleting settled durable sends from the journal failed/);
      assert.deepEqual(await keys(base, "c5/"), [got!.key], "the failed delete left it stored");
      assert.deepEqual(await journal.recover("c5"), [], "its delete failed: still not read back");
      refuseDeletes = false;
      await eventually(async () => (await keys(base, "c5/")).length === 0, 30_000, "the failed delete tried again once the store takes deletes");
      await journal.close();
    });

    test("the bounds refuse naming the limit; dropping an owner deletes its journal", async () => {
      const store = await open();
      const journal = createSendJournal({ store, maxMessages: 3, maxBytes: 10, boot: 1000 });
      assert.match(journal.refuses("c1", 11, 'container "c1"') ?? "", /durable journal of container "c1" is full \(limit 10 bytes; it would hold 11\)/);
      for (let i = 0; i < 3; i++) {
        assert.equal(journal.refuses("c1", 1, 'container "c1"'), undefined);
        await journal.append("c1", { data: bytes("x"), contentType: "", sender: "", service: "" });
      }
      assert.match(journal.refuses("c1", 1, 'container "c1"') ?? "", /is full \(limit 3 messages; it would hold 4\)/);
      assert.match(journal.refuses("c1", 0, "x") ?? "", /limit 3 messages/);
      assert.equal(journal.refuses("c2", 1, 'container "c2"'), undefined, "the bound is per owner");
      await journal.append("c2", { data: bytes("y"), contentType: "", sender: "", service: "" });

      await journal.drop("c1");
      assert.deepEqual(await keys(store, "c1/"), []);
      assert.equal((await keys(store, "c2/")).length, 1, "other owners keep theirs");
      assert.equal(journal.refuses("c1", 1, 'container "c1"'), undefined, "a dropped journal frees its bound");
      await journal.close();
    });
  });
}

describe("send journal claims over an etcd whose requests are bounded", () => {
  test("a departed writer's entries of 1 MiB each are all claimed by another reader, in transactions etcd takes", async () => {
    // The same bound as etcd's default deployments without k4s's flags is smaller still (1.5 MiB);
    // 8 MiB here keeps the journal small while 12 entries read back together are well over it.
    const etcd = await startEtcd({ flags: ["--max-request-bytes", String(8 * 1024 * 1024)] });
    const opened = openOnEtcd(etcd);
    try {
      const base = opened.store;
      const a = createSendJournal({ store: base, boot: 500, writer: () => "a:1" });
      const mib = (i: number) => new Uint8Array(1024 * 1024).fill(i);
      await Promise.all(Array.from({ length: 12 }, (_, i) => a.append("s6", { data: mib(i), contentType: "", sender: "", service: "s6" })));
      await a.close();
      const { store } = counting(base);
      const failures: unknown[] = [];
      store.txn = async (c, ops) => {
        try {
          return await base.txn(c, ops);
        } catch (err) {
          failures.push(err);
          throw err;
        }
      };
      const b = createSendJournal({ store, boot: 1000, writer: () => "b:1" });
      const got = await b.recover("s6", () => true, (w) => `/records-for-test/${w}`);
      assert.deepEqual(got.map((e) => [parseKey(e.key).writer, e.data.byteLength, e.data[0]]), Array.from({ length: 12 }, (_, i) => ["b:1", 1024 * 1024, i]));
      assert.deepEqual(failures.map(String), [], "no claim too large for etcd");
      assert.deepEqual((await keys(base, "s6/")).map((k) => parseKey(k).writer), Array(12).fill("b:1"), "all moved");
      await b.close();
    } finally {
      await opened.close();
      await etcd.stop();
    }
  });

  test("a claim the store fails on (not applied) is tried again entry by entry", async () => {
    const etcd = await startEtcd();
    const opened = openOnEtcd(etcd);
    try {
      const base = opened.store;
      const a = createSendJournal({ store: base, boot: 500, writer: () => "a:1" });
      for (const d of ["u", "v", "w"]) await a.append("s5", { data: bytes(d), contentType: "", sender: "", service: "s5" });
      await a.close();
      const { store } = counting(base);
      // The real store, wrapped to fail (without applying) any claim of more than one entry.
      store.txn = async (c, ops) => {
        if (ops.length > 2) throw new Error("request is too large");
        return base.txn(c, ops);
      };
      const b = createSendJournal({ store, boot: 1000, writer: () => "b:1" });
      const got = await b.recover("s5", () => true);
      assert.deepEqual(got.map((e) => [parseKey(e.key).writer, text(e.data)]), [["b:1", "u"], ["b:1", "v"], ["b:1", "w"]]);
      await b.close();
    } finally {
      await opened.close();
      await etcd.stop();
    }
  });

  test("a claim the store failed on that etcd applies late (after the check found nothing) is still taken: nothing is left under keys no one reads", async () => {
    const etcd = await startEtcd();
    const opened = openOnEtcd(etcd);
    try {
      const base = opened.store;
      const a = createSendJournal({ store: base, boot: 500, writer: () => "a:1" });
      for (const d of ["u", "v", "w"]) await a.append("s7", { data: bytes(d), contentType: "", sender: "", service: "s7" });
      await a.close();
      const { store } = counting(base);
      // The real store, wrapped so that the first claim of several entries fails without being
      // applied, and is applied (late, as etcd may apply a proposal the client gave up on) just
      // before the next claim: etcd cannot be made to do that on cue.
      let late: (() => Promise<unknown>) | undefined;
      let failedOnce = false;
      store.txn = async (c, ops) => {
        if (!failedOnce && ops.length > 2) {
          failedOnce = true;
          late = () => base.txn(c, ops);
          throw new Error("etcdserver: request timed out");
        }
        if (late) {
          const apply = late;
          late = undefined;
          await apply();
        }
        return base.txn(c, ops);
      };
      const b = createSendJournal({ store, boot: 1000, writer: () => "b:1" });
      const got = await b.recover("s7", () => true);
      assert.deepEqual(got.map((e) => [parseKey(e.key).writer, text(e.data)]), [["b:1", "u"], ["b:1", "v"], ["b:1", "w"]]);
      assert.deepEqual((await keys(base, "s7/")).sort(), got.map((e) => e.key).sort(), "every entry left is one b took");
      await b.close();
    } finally {
      await opened.close();
      await etcd.stop();
    }
  });
});
