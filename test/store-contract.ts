/**
 * What every Store backend promises, as tests run on a fresh store of one backend: etcd-shaped
 * transactions and revisions, paged ranges at a revision, history and watch with progress, and
 * compaction. store.test.ts runs them on etcd, sqlite-store.test.ts on SQLite (fast enough to
 * run once per mutant); the helpers here serve both.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Store, StoreEvent, WatchBatch } from "../src/server/store/store.js";
import { eventually } from "./eventually.js";
import type { OpenedStore, StoreBackend } from "./store-backends.js";

export const enc = (s: string) => new TextEncoder().encode(s);
export const dec = (b: Uint8Array) => new TextDecoder().decode(b);
export const put = (key: string, value: string) => ({ type: "put" as const, key, value: enc(value) });

/** Reads batches from an async iterable into an array, for assertions with `waitFor`. */
export function collect<T>(source: AsyncIterable<T>): { items: T[]; done: Promise<unknown>; waitFor(n: number): Promise<T[]> } {
  const items: T[] = [];
  const waiters = new Set<() => void>();
  const done = (async () => {
    for await (const x of source) {
      items.push(x);
      waiters.forEach((w) => w());
    }
  })().then(
    () => undefined,
    (e: unknown) => {
      waiters.forEach((w) => w());
      return e;
    },
  );
  return {
    items,
    done,
    waitFor(n) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${n} items, have ${items.length}`)), 5000);
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

export const fmt = (b: StoreEvent[]) => b.map((e) => `${e.type} ${e.kv.key}@${e.kv.modRevision}`).join(",");

export async function expectCode(p: Promise<unknown> | (() => Promise<unknown>), code: Code, re: RegExp) {
  await assert.rejects(typeof p === "function" ? p() : p, (e: unknown) => {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${String(e)}`);
    assert.equal(e.code, code, `code of "${e.message}"`);
    assert.match(e.rawMessage, re);
    return true;
  });
}

/** Only the batches that carry events (a watch also yields progress batches without any). */
export async function* eventsOf(source: AsyncIterable<WatchBatch>): AsyncGenerator<StoreEvent[]> {
  for await (const b of source) if (b.events.length > 0) yield b.events;
}

/** Registers the Store contract tests on stores of one backend. */
export function storeContract(backend: StoreBackend): void {
  /** A test on a fresh store of this backend, closed afterwards. */
  const storeTest = (name: string, fn: (s: Store, opened: OpenedStore) => Promise<void>, options?: { historyLimit?: number }) =>
    test(`${backend.name}: ${name}`, async () => {
      const opened = await backend.open(options);
      try {
        await fn(opened.store, opened);
      } finally {
        await opened.close();
      }
    });

  storeTest("txn: one revision per successful write, compare guards, versions", async (s) => {
    const base = await s.revision();
    let r = await s.txn([], [put("/a", "1"), put("/b", "1")]);
    assert.deepEqual(r, { succeeded: true, revision: base + 1 });
    r = await s.txn([{ key: "/a", modRevision: 0 }], [put("/a", "2")]);
    assert.deepEqual(r, { succeeded: false, revision: base + 1 }, "absent guard fails for an existing key");
    r = await s.txn([{ key: "/a", modRevision: base + 1 }], [put("/a", "2")]);
    assert.deepEqual(r, { succeeded: true, revision: base + 2 });
    const a = await s.get("/a");
    assert.equal(dec(a!.value), "2");
    assert.deepEqual([a!.createRevision, a!.modRevision, a!.version], [base + 1, base + 2, 2]);
    r = await s.txn([], [{ type: "delete", key: "/nothing" }]);
    assert.deepEqual(r, { succeeded: true, revision: base + 2 }, "a txn that changes nothing makes no revision");
    r = await s.txn([], [{ type: "delete", key: "/a" }]);
    assert.equal(r.revision, base + 3);
    assert.equal(await s.get("/a"), undefined);
    const range = await s.range("/");
    assert.deepEqual(
      range.kvs.map((k) => k.key),
      ["/b"],
    );
    assert.equal(range.revision, base + 3);
    await expectCode(s.txn([], [put("/x", "1"), put("/x", "2")]), Code.InvalidArgument, /writes key \/x twice/);
    await s.close();
    await expectCode(s.get("/b"), Code.Unavailable, /closed/);
  });

  storeTest("concurrent transactions commit together but each gets its own revision and event batch", async (s) => {
    const base = await s.revision();
    const ac = new AbortController();
    const w = collect(eventsOf(s.watch("/", base, ac.signal)));
    // 20 racing creates of one key: exactly one wins; 20 writes of distinct keys all land.
    const racing = await Promise.all(Array.from({ length: 20 }, (_, i) => s.txn([{ key: "/race", modRevision: 0 }], [put("/race", String(i))])));
    assert.equal(racing.filter((r) => r.succeeded).length, 1);
    const distinct = await Promise.all(Array.from({ length: 20 }, (_, i) => s.txn([], [put(`/d/${i}`, String(i))])));
    assert.deepEqual(
      distinct.map((r) => r.revision).sort((a, b) => a - b),
      Array.from({ length: 20 }, (_, i) => base + i + 2),
      "one revision each",
    );
    const batches = await w.waitFor(21);
    assert.deepEqual(
      batches.map((b) => b.length),
      Array(21).fill(1),
    );
    assert.deepEqual(
      batches.map((b) => b[0]!.kv.modRevision),
      Array.from({ length: 21 }, (_, i) => base + i + 1),
    );
    ac.abort();
  });

  test(`${backend.name}: model check: random transactions agree with an in-memory map, and a watch replays them`, async () => {
    const opened = await backend.open();
    const s = opened.store;
    let run = 0;
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.record({
              guard: fc.option(fc.constantFrom("a", "b", "c"), { nil: undefined }),
              guardRev: fc.nat(6),
              ops: fc.uniqueArray(fc.record({ key: fc.constantFrom("a", "b", "c", "d"), del: fc.boolean(), v: fc.string({ maxLength: 4 }) }), {
                selector: (o) => o.key,
                maxLength: 3,
              }),
            }),
            { maxLength: 25 },
          ),
          async (txns) => {
            // Every run in its own key space, revisions counted from where the store is.
            const p = `/m${run++}/`;
            const base = await s.revision();
            const model = new Map<string, { value: string; mod: number; create: number; version: number }>();
            let rev = base;
            for (const t of txns) {
              const guardKey = t.guard && p + t.guard;
              const guardRev = t.guardRev === 0 ? 0 : base + t.guardRev;
              const compares = guardKey ? [{ key: guardKey, modRevision: guardRev }] : [];
              const ok = !guardKey || (model.get(guardKey)?.mod ?? 0) === guardRev;
              const ops = t.ops.map((o) => (o.del ? { type: "delete" as const, key: p + o.key } : put(p + o.key, o.v)));
              const r = await s.txn(compares, ops);
              assert.equal(r.succeeded, ok);
              if (ok && t.ops.some((o) => !o.del || model.has(p + o.key))) {
                rev++;
                for (const o of t.ops) {
                  const prev = model.get(p + o.key);
                  if (o.del) model.delete(p + o.key);
                  else model.set(p + o.key, { value: o.v, mod: rev, create: prev?.create ?? rev, version: (prev?.version ?? 0) + 1 });
                }
              }
              assert.equal(r.revision, rev);
            }
            const range = await s.range(p);
            assert.deepEqual(
              range.kvs.map((k) => [k.key, dec(k.value), k.modRevision, k.createRevision, k.version]),
              [...model.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, m]) => [k, m.value, m.mod, m.create, m.version]),
            );
            // Replaying the run's history rebuilds the same state.
            const replayed = new Map<string, string>();
            if (rev > base) {
              const ac = new AbortController();
              for await (const batch of s.watch(p, base, ac.signal)) {
                for (const e of batch.events) {
                  if (e.type === "put") replayed.set(e.kv.key, dec(e.kv.value));
                  else replayed.delete(e.kv.key);
                }
                if (batch.revision >= rev) break;
              }
            }
            assert.deepEqual(new Map([...model].map(([k, m]) => [k, m.value])), replayed);
          },
        ),
        { numRuns: 60 },
      );
    } finally {
      await opened.close();
    }
  });

  storeTest("range is sorted and bounded by the prefix", async (s) => {
    await s.txn([], [put("/k/b", "b"), put("/k/a", "a"), put("/ka", "x"), put("/j", "y"), put("/k/c/d", "z")]);
    assert.deepEqual(
      (await s.range("/k/")).kvs.map((k) => k.key),
      ["/k/a", "/k/b", "/k/c/d"],
    );
  });

  storeTest("range pages: after + limit, remaining, and every page read at the first page's revision", async (s) => {
    const keys = Array.from({ length: 25 }, (_, i) => `/p/${String(i).padStart(2, "0")}`);
    await s.txn([], keys.map((k) => put(k, "v1")));
    await s.txn([], [put("/q/other", "x")]);
    const first = await s.range("/p/", { limit: 10 });
    assert.deepEqual(
      first.kvs.map((k) => k.key),
      keys.slice(0, 10),
    );
    assert.equal(first.more, true);
    assert.equal(first.remaining, 15);
    // Meanwhile: one key updated, one deleted, one created.
    await s.txn([], [put("/p/12", "v2"), { type: "delete", key: "/p/15" }, put("/p/12a", "new")]);
    const second = await s.range("/p/", { after: first.kvs[9]!.key, limit: 10, revision: first.revision });
    assert.equal(second.revision, first.revision);
    assert.deepEqual(
      second.kvs.map((k) => `${k.key}=${dec(k.value)}`),
      keys.slice(10, 20).map((k) => `${k}=v1`),
      "the page shows the keys as they were at the first page's revision",
    );
    const third = await s.range("/p/", { after: second.kvs[9]!.key, limit: 10, revision: first.revision });
    assert.deepEqual(
      third.kvs.map((k) => k.key),
      keys.slice(20),
    );
    assert.equal(third.more, false);
    assert.equal(third.remaining, 0);
    // At the current revision, the change is there.
    const now = await s.range("/p/", { after: "/p/11", limit: 3 });
    assert.deepEqual(
      now.kvs.map((k) => `${k.key}=${dec(k.value)}`),
      ["/p/12=v2", "/p/12a=new", "/p/13=v1"],
    );
    await expectCode(s.range("/p/", { revision: now.revision + 5 }), Code.OutOfRange, /newer than the store's revision/);
  });

  storeTest("watch replays history from a revision, then follows live writes, per prefix", async (s) => {
    const base = await s.revision();
    await s.txn([], [put("/a/1", "x")]); // +1
    await s.txn([], [put("/b/1", "x")]); // +2
    await s.txn([], [put("/a/1", "y"), put("/a/2", "y")]); // +3
    const ac = new AbortController();
    const w = collect(eventsOf(s.watch("/a/", base + 1, ac.signal)));
    const replay = await w.waitFor(1);
    assert.deepEqual(replay.map(fmt), [`put /a/1@${base + 3},put /a/2@${base + 3}`], "revision 1 excluded, /b filtered, one batch per txn");
    assert.equal(dec(replay[0]![0]!.prevKv!.value), "x", "prevKv carries the value before");
    await s.txn([], [{ type: "delete", key: "/a/2" }, put("/b/2", "z")]); // +4
    const all = await w.waitFor(2);
    assert.equal(fmt(all[1]!), `delete /a/2@${base + 4}`);
    assert.equal(dec(all[1]![0]!.prevKv!.value), "y");
    ac.abort();
    assert.equal(await w.done, undefined, "abort ends the watch without error");

    // From a revision in the future: nothing until the store passes it.
    const ac2 = new AbortController();
    const future = collect(eventsOf(s.watch("/", base + 5, ac2.signal)));
    await s.txn([], [put("/c", "5")]); // +5
    await s.txn([], [put("/c", "6")]); // +6
    const got = await future.waitFor(1);
    assert.equal(fmt(got[0]!), `put /c@${base + 6}`);
    ac2.abort();
  });

  storeTest("a watch reports progress through revisions with nothing under its prefix", async (s) => {
    const base = await s.revision();
    const ac = new AbortController();
    const w = collect(s.watch("/quiet/", base, ac.signal));
    await s.txn([], [put("/loud/1", "x")]);
    await s.txn([], [put("/quiet/1", "x")]);
    await s.txn([], [put("/loud/2", "x")]);
    // SQLite reports each revision at once; etcd through its progress notifications, whose
    // interval the test etcd shortens.
    const got = await eventually(() => w.items.find((b) => b.events.length === 0 && b.revision >= base + 3), 15_000, "progress to the last revision");
    assert.ok(got);
    const withEvents = w.items.filter((b) => b.events.length > 0);
    assert.deepEqual(
      withEvents.map((b) => fmt(b.events)),
      [`put /quiet/1@${base + 2}`],
    );
    const revisions = w.items.map((b) => b.revision);
    assert.deepEqual(revisions, [...revisions].sort((a, b) => a - b), "in revision order");
    ac.abort();
  });

  test(`${backend.name}: compaction: watches and reads from before it get OUT_OF_RANGE, later ones replay`, async () => {
    // SQLite keeps its last 5 revisions (historyLimit); etcd is compacted as its compactor would.
    const opened = await backend.open({ historyLimit: 5 });
    const s = opened.store;
    try {
      const base = await s.revision();
      for (let i = 1; i <= 12; i++) await s.txn([], [put("/k", String(i))]);
      if (opened.compact) await opened.compact(base + 7);
      assert.equal(await s.compactRevision(), base + 7);
      const ac = new AbortController();
      await expectCode(
        async () => {
          for await (const _ of s.watch("/", base + 5, ac.signal)) void _;
        },
        Code.OutOfRange,
        new RegExp(`revision ${base + 5} is older than the kept history \\(compacted up to ${base + 7}\\): relist`),
      );
      await expectCode(s.range("/", { revision: base + 6 }), Code.OutOfRange, /older than the kept history/);
      const w = collect(eventsOf(s.watch("/", base + 7, ac.signal)));
      const got = await w.waitFor(5);
      assert.deepEqual(
        got.map((b) => b[0]!.kv.modRevision),
        [8, 9, 10, 11, 12].map((r) => base + r),
      );
      ac.abort();
    } finally {
      await opened.close();
    }
  });
}
