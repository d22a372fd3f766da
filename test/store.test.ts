/**
 * The Store on both backends (SQLite, and a real etcd): etcd-shaped transactions and
 * revisions, paged ranges at a revision, history and watch with progress, compaction, and the
 * typed ResourceStore rules on top; then what only SQLite has to prove itself (slow watchers,
 * one process per file, durability across a SIGKILL, bounded history on disk) and only etcd
 * (its compactor, its limits).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import fc from "fast-check";
import { Code, ConnectError } from "@connectrpc/connect";
import { openSqliteStore } from "../src/server/store/sqlite-store.js";
import { COMPACT_KEY, openEtcdStore } from "../src/server/store/etcd-store.js";
import type { Store, StoreEvent, WatchBatch } from "../src/server/store/store.js";
import { createResourceStore } from "../src/server/store/create-resource-store.js";
import type { ObjectBatch, ObjectEvent } from "../src/server/store/resource-store.js";
import { freePorts, startEtcd } from "./etcd.js";
import { eventually } from "./helpers.js";
import { BACKENDS, openOnEtcd, type OpenedStore } from "./store-backends.js";
import { ContainerSchema, ReplicaSetSchema, ServiceSchema } from "../src/gen/k4s/v1/resources_pb.js";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const put = (key: string, value: string) => ({ type: "put" as const, key, value: enc(value) });

/** Reads batches from an async iterable into an array, for assertions with `waitFor`. */
function collect<T>(source: AsyncIterable<T>): { items: T[]; done: Promise<unknown>; waitFor(n: number): Promise<T[]> } {
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

const fmt = (b: StoreEvent[]) => b.map((e) => `${e.type} ${e.kv.key}@${e.kv.modRevision}`).join(",");

async function expectCode(p: Promise<unknown> | (() => Promise<unknown>), code: Code, re: RegExp) {
  await assert.rejects(typeof p === "function" ? p() : p, (e: unknown) => {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${String(e)}`);
    assert.equal(e.code, code, `code of "${e.message}"`);
    assert.match(e.rawMessage, re);
    return true;
  });
}

/** Only the batches that carry events (a watch also yields progress batches without any). */
async function* eventsOf(source: AsyncIterable<WatchBatch>): AsyncGenerator<StoreEvent[]> {
  for await (const b of source) if (b.events.length > 0) yield b.events;
}

for (const backend of BACKENDS) {
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
}

for (const backend of BACKENDS) {
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

test("etcd: several stores on one etcd compact it as kube-apiserver does, a round behind", async () => {
  const etcd = await startEtcd();
  const a = openOnEtcd(etcd, { compactIntervalMs: 150 });
  const b = openOnEtcd(etcd, { compactIntervalMs: 150 });
  try {
    const first = await a.store.txn([], [put("/t/x", "1")]);
    for (let i = 0; i < 20; i++) await b.store.txn([], [put("/t/x", String(i))]);
    // The first round only records the revision; a later one compacts to it.
    const compacted = await eventually(async () => (await a.store.compactRevision()) >= first.revision && a.store.compactRevision(), 15_000, "a compaction");
    const ac = new AbortController();
    await expectCode(
      async () => {
        for await (const _ of a.store.watch("/t/", 0, ac.signal)) void _;
      },
      Code.OutOfRange,
      /older than the kept history/,
    );
    // What was compacted to was recorded a round earlier: newer revisions are all there.
    const head = await a.store.revision();
    assert.ok(Number(compacted) < head, `compacted ${compacted} must stay behind the head ${head}`);
    const rounds = Number((await a.store.get(COMPACT_KEY))?.version ?? 0);
    assert.ok(rounds >= 2, `the compaction key counts the rounds (${rounds})`);
    ac.abort();
  } finally {
    await a.close();
    await b.close();
    await etcd.stop();
  }
});

test("etcd: a transaction larger than etcd allows is INVALID_ARGUMENT naming the etcd flag", async () => {
  const etcd = await startEtcd({ flags: ["--max-txn-ops", "128"] });
  const { store, close } = openOnEtcd(etcd);
  try {
    const ops = Array.from({ length: 200 }, (_, i) => put(`/big/${i}`, "x"));
    await expectCode(store.txn([], ops), Code.InvalidArgument, /--max-txn-ops/);
    assert.equal((await store.range("/big/")).kvs.length, 0, "nothing of it was written");
  } finally {
    await close();
    await etcd.stop();
  }
});

test("etcd: an unreachable etcd is UNAVAILABLE, naming it", async () => {
  const [port] = await freePorts(1);
  const store = openEtcdStore({ endpoints: [`127.0.0.1:${port}`] });
  try {
    await expectCode(store.revision(), Code.Unavailable, new RegExp(`etcd 127\\.0\\.0\\.1:${port}.*unavailable`));
  } finally {
    await store.close();
  }
});

// ---- SQLite only ----

test("sqlite: a slow watcher does not block writers and catches up from history", async () => {
  const s = openSqliteStore({ watchBufferLimit: 3, historyLimit: 1000 });
  const ac = new AbortController();
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
  ac.abort();
  await it.return?.(undefined);
  await s.close();
});

test("sqlite: a watcher that falls behind the kept history gets OUT_OF_RANGE", async () => {
  const s = openSqliteStore({ watchBufferLimit: 2, historyLimit: 5 });
  const ac = new AbortController();
  const it = eventsOf(s.watch("/", 0, ac.signal))[Symbol.asyncIterator]();
  const first = it.next();
  await s.txn([], [put("/k", "0")]);
  await first;
  for (let i = 1; i <= 20; i++) await s.txn([], [put("/k", String(i))]);
  await expectCode(it.next(), Code.OutOfRange, /older than the kept history/);
  await s.close();
});

test("sqlite: a second process cannot open a store file in use", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-store-"));
  try {
    const s = openSqliteStore({ path: join(dir, "k4s.db") });
    await s.txn([], [put("/k", "v")]);
    assert.throws(
      () => openSqliteStore({ path: join(dir, "k4s.db") }),
      (e: unknown) => e instanceof ConnectError && e.code === Code.Unavailable && /in use by another process/.test(e.rawMessage),
    );
    await s.close();
    const again = openSqliteStore({ path: join(dir, "k4s.db") });
    assert.equal(dec((await again.get("/k"))!.value), "v");
    await again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("sqlite: every acknowledged write survives a SIGKILL; history and watch resume after reopening", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-durable-"));
  const path = join(dir, "k4s.db");
  const storeModule = pathToFileURL(fileURLToPath(new URL("../src/server/store/sqlite-store.ts", import.meta.url))).href;
  const script = join(dir, "writer.mts");
  writeFileSync(
    script,
    `import { openSqliteStore } from ${JSON.stringify(storeModule)};
const s = openSqliteStore({ path: ${JSON.stringify(path)} });
const enc = new TextEncoder();
for (let i = 0; ; i++) {
  const r = await s.txn([], [{ type: "put", key: "/w/" + (i % 7), value: enc.encode("v" + i) }, { type: "put", key: "/seq/" + String(i).padStart(8, "0"), value: enc.encode(String(i)) }]);
  process.stdout.write("ack " + i + " " + r.revision + "\\n");
}
`,
  );
  let store: Store | undefined;
  try {
    const child = spawn(process.execPath, ["--import", "tsx", script], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    // "close" rather than "exit": every line the writer got out before dying has been read.
    const exited = new Promise<string | number>((resolve) => child.on("close", (code, sig) => resolve(sig ?? code ?? -1)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`writer made too little progress:\n${out}\n${err}`)), 20_000);
      child.stdout.on("data", (d) => {
        out += d;
        // Kill mid-stream once it wrote a fair number of transactions.
        if ((out.match(/\n/g)?.length ?? 0) >= 200) {
          clearTimeout(timer);
          child.kill("SIGKILL");
          resolve();
        }
      });
      child.on("exit", () => {
        clearTimeout(timer);
        reject(new Error(`writer exited early:\n${err}`));
      });
    });
    assert.equal(await exited, "SIGKILL");
    const acks = out
      .split("\n")
      .filter((l) => /^ack \d+ \d+$/.test(l))
      .map((l) => l.split(" ").slice(1).map(Number) as [number, number]);
    assert.ok(acks.length >= 200);
    acks.forEach(([i, rev]) => assert.equal(rev, i + 1, "one revision per txn"));
    const [lastI, lastRev] = acks[acks.length - 1]!;

    store = openSqliteStore({ path });
    const rev = await store.revision();
    assert.ok(rev >= lastRev, `store revision ${rev} must include the last acknowledged ${lastRev}`);
    // At most the one txn in flight at the kill may be there beyond the acknowledged ones.
    assert.ok(rev <= lastRev + 1);
    const seq = await store.range("/seq/");
    assert.equal(seq.kvs.length, rev);
    for (let i = 0; i <= lastI; i++) {
      const kv = seq.kvs[i]!;
      assert.equal(kv.key, `/seq/${String(i).padStart(8, "0")}`);
      assert.equal(dec(kv.value), String(i));
      assert.equal(kv.modRevision, i + 1);
    }
    // The history survived too: a watch resumes from an acknowledged revision.
    const from = lastRev - 10;
    const ac = new AbortController();
    const w = collect(eventsOf(store.watch("/seq/", from, ac.signal)));
    const replay = await w.waitFor(rev - from);
    assert.deepEqual(
      replay.map((b) => b[0]!.kv.modRevision),
      Array.from({ length: rev - from }, (_, k) => from + k + 1),
    );
    const r = await store.txn([], [put("/seq/after-restart", "x")]);
    assert.equal(r.revision, rev + 1, "revisions continue after the restart");
    const live = await w.waitFor(rev - from + 1);
    assert.equal(fmt(live[live.length - 1]!), `put /seq/after-restart@${rev + 1}`);
    ac.abort();
  } finally {
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- the typed layer ----

/** The event lists of the batches that carry events, and the listing's (even empty, when keepListing). */
async function* objectEventsOf(source: AsyncIterable<ObjectBatch>, keepListing = true): AsyncGenerator<ObjectEvent[]> {
  for await (const b of source) if (b.events.length > 0 || (keepListing && b.listing)) yield b.events;
}

const container = (name: string, extra: MessageInitShape<typeof ContainerSchema> = {}) =>
  create(ContainerSchema, { metadata: { name }, spec: { module: "workers", function: "echo" }, ...extra } as MessageInitShape<typeof ContainerSchema>);

for (const backend of BACKENDS) {
  /** A test of the typed layer on a fresh store of this backend. */
  const typedTest = (name: string, fn: (rs: ReturnType<typeof createResourceStore>, base: number) => Promise<void>) =>
    test(`${backend.name}: ResourceStore: ${name}`, async () => {
      const opened = await backend.open();
      try {
        const rs = createResourceStore(opened.store);
        await fn(rs, await rs.revision());
      } finally {
        await opened.close();
      }
    });

typedTest("create stamps server fields; update bumps generation on spec change and keeps status", async (rs, base) => {
  const input = container("echo", { status: { phase: "Running" } });
  const c = await rs.create(input);
  assert.equal(input.metadata!.uid, "", "the input is not mutated");
  assert.equal(c.apiVersion, "k4s/v1");
  assert.equal(c.kind, "Container");
  assert.match(c.metadata!.uid, /^[0-9a-f-]{36}$/);
  assert.equal(c.metadata!.generation, 1n);
  assert.equal(c.metadata!.resourceVersion, String(base + 1));
  assert.ok(c.metadata!.creationTimestamp);
  assert.equal(c.status!.phase, "", "status is not settable through create");
  await expectCode(rs.create(container("echo")), Code.AlreadyExists, /Container "echo" already exists/);

  const st = await rs.updateStatus("Container", "echo", (cur) => ({ ...cur.status!, phase: "Running", ready: true }));
  assert.equal(st!.status!.phase, "Running");
  const same = await rs.updateStatus("Container", "echo", (cur) => cur.status);
  assert.equal(same!.metadata!.resourceVersion, st!.metadata!.resourceVersion, "an unchanged status writes nothing");

  const labelsOnly = await rs.update(container("echo", { metadata: { name: "echo", labels: { app: "x" } } }));
  assert.equal(labelsOnly.metadata!.generation, 1n, "labels do not bump generation");
  assert.equal(labelsOnly.status!.phase, "Running", "status kept");
  const specChange = await rs.update(create(ContainerSchema, { metadata: { name: "echo", labels: { app: "x" } }, spec: { command: ["python3"] } }));
  assert.equal(specChange.metadata!.generation, 2n);
  assert.equal(specChange.metadata!.uid, c.metadata!.uid);
  const noop = await rs.update(specChange);
  assert.equal(noop.metadata!.resourceVersion, specChange.metadata!.resourceVersion, "a no-change update writes nothing");
  await expectCode(
    rs.update(create(ContainerSchema, { metadata: { name: "echo", resourceVersion: String(base + 1) }, spec: {} })),
    Code.Aborted,
    new RegExp(`Container "echo" was modified meanwhile: resourceVersion is \\d+, not ${base + 1}`),
  );
  await expectCode(rs.update(container("nope")), Code.NotFound, /Container "nope" not found/);
  await rs.create(container("gone"));
  await expectCode(rs.delete("Container", "gone", { resourceVersion: String(base + 1) }), Code.Aborted, /Container "gone" was modified meanwhile/);
  const gone = (await rs.get("Container", "gone"))!;
  await rs.delete("Container", "gone", { resourceVersion: gone.metadata!.resourceVersion });
  assert.equal(await rs.get("Container", "gone"), undefined);
  await expectCode(
    rs.create(create(ContainerSchema, { metadata: { name: "Bad" }, spec: { concurrency: 5000 } })),
    Code.InvalidArgument,
    /metadata\.name: .*not a valid name.*; spec\.concurrency: must be between 0 and 1000, got 5000/,
  );
  assert.equal((await rs.get("Container", "echo"))!.metadata!.resourceVersion, specChange.metadata!.resourceVersion);
});

typedTest("ReplicaSet delete cascades to owned Containers in one txn; running ones are marked", async (rs) => {
  const set = await rs.create(create(ReplicaSetSchema, { metadata: { name: "calc" }, spec: { replicas: 3, container: "tmpl" } }));
  const owner = { kind: "ReplicaSet", name: "calc", uid: set.metadata!.uid };
  for (const i of [0, 1, 2]) await rs.create(container(`calc-${i}`, { metadata: { name: `calc-${i}`, ownerReference: owner } }));
  await rs.create(container("calc-other", { metadata: { name: "calc-other", ownerReference: { ...owner, uid: "someone-else" } } }));
  await rs.create(container("tmpl"));
  await rs.updateStatus("Container", "calc-1", (c) => ({ ...c.status!, host: "h1", phase: "Running", ready: true }));
  await rs.updateStatus("Container", "calc-2", (c) => ({ ...c.status!, host: "h1", phase: "Succeeded" }));
  const before = await rs.revision();
  const ac = new AbortController();
  const w = collect(objectEventsOf(rs.watch({ fromRevision: before }, ac.signal)));

  const deleted = await rs.delete("ReplicaSet", "calc");
  assert.equal(deleted.metadata!.name, "calc");
  assert.equal(await rs.revision(), before + 1, "one transaction");
  const [batch] = await w.waitFor(1);
  assert.deepEqual(
    batch!.map((e: ObjectEvent) => `${e.type} ${e.object.metadata!.name}`).sort(),
    ["DELETED calc", "DELETED calc-0", "DELETED calc-2", "MODIFIED calc-1"],
  );
  const left = (await rs.list("Container")).items.map((c) => c.metadata!.name);
  assert.deepEqual(left, ["calc-1", "calc-other", "tmpl"]);
  const marked = (await rs.get("Container", "calc-1"))!;
  assert.ok(marked.metadata!.deletionTimestamp);
  assert.equal(marked.status!.phase, "Terminating");
  // Deleting a marked container again changes nothing; finalize removes it.
  const again = await rs.delete("Container", "calc-1");
  assert.equal(again.metadata!.resourceVersion, marked.metadata!.resourceVersion);
  await rs.finalize("tmpl"); // not marked: untouched
  assert.ok(await rs.get("Container", "tmpl"));
  await rs.finalize("calc-1");
  assert.equal(await rs.get("Container", "calc-1"), undefined);
  ac.abort();
});

typedTest("apply is all or nothing and reports created/configured/unchanged", async (rs, base) => {
  const svc = create(ServiceSchema, { metadata: { name: "svc" }, spec: { selector: "calc-*" } });
  let out = await rs.apply([container("a"), svc]);
  assert.deepEqual(
    out.map((o) => o.action),
    ["created", "created"],
  );
  assert.equal(await rs.revision(), base + 1, "one transaction for the whole apply");
  out = await rs.apply([container("a", { metadata: { name: "a", labels: { v: "2" } } }), svc, container("b")]);
  assert.deepEqual(
    out.map((o) => o.action),
    ["configured", "unchanged", "created"],
  );
  assert.equal(out[0]!.object.metadata!.generation, 1n, "a label change is no spec change");
  const rev = await rs.revision();
  out = await rs.apply([container("c")], { dryRun: true });
  assert.deepEqual(
    out.map((o) => o.action),
    ["created"],
  );
  assert.equal(await rs.revision(), rev, "dry run writes nothing");
  await expectCode(
    rs.apply([container("d"), create(ContainerSchema, { metadata: { name: "e" }, spec: { module: "m" } })]),
    Code.InvalidArgument,
    /object 2 \(Container "e"\): spec\.function: required when module is set/,
  );
  await expectCode(rs.apply([container("d"), container("d")]), Code.InvalidArgument, /object 2 \(Container "d"\): duplicate of object 1/);
  assert.equal(await rs.get("Container", "d"), undefined, "nothing of a rejected apply is stored");
  assert.equal(await rs.revision(), rev);
});

typedTest("watch lists first (one batch, even empty), filters by labels with ADDED/DELETED transitions", async (rs) => {
  const ac = new AbortController();
  const empty = collect(objectEventsOf(rs.watch({ kind: "Service" }, ac.signal), true));
  assert.deepEqual((await empty.waitFor(1))[0], [], "the initial listing is yielded even when empty");
  await rs.create(container("x", { metadata: { name: "x", labels: { app: "a" } } }));
  await rs.create(container("y"));
  const w = collect(objectEventsOf(rs.watch({ kind: "Container", labels: { app: "a" } }, ac.signal)));
  const [initial] = await w.waitFor(1);
  assert.deepEqual(
    initial!.map((e) => `${e.type} ${e.object.metadata!.name}`),
    ["ADDED x"],
  );
  await rs.update(container("y", { metadata: { name: "y", labels: { app: "a" } } }));
  await rs.update(container("x", { metadata: { name: "x", labels: { app: "b" } } }));
  await rs.delete("Container", "y");
  const got = await w.waitFor(4);
  assert.deepEqual(
    got.slice(1).map((b) => b.map((e) => `${e.type} ${e.object.metadata!.name}`).join()),
    ["ADDED y", "DELETED x", "DELETED y"],
  );
  const deletedY = got[3]![0]!;
  assert.equal(deletedY.object.metadata!.resourceVersion, String(deletedY.revision), "a DELETED object carries the delete's revision");
  assert.equal(empty.items.length, 1, "the Service watch saw no Container events");
  ac.abort();
});
}
