/**
 * The Store on a real etcd (the contract of store-contract.ts; SQLite's run is in
 * sqlite-store.test.ts) and what only etcd has (its compactor, its limits); what SQLite proves
 * across processes (durability across a SIGKILL); and the typed
 * ResourceStore rules on top on etcd (resource-store-contract.ts; SQLite's run is in
 * resource-store.test.ts).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Code } from "@connectrpc/connect";
import { openSqliteStore } from "../src/server/store/sqlite-store.js";
import { COMPACT_KEY, openEtcdStore } from "../src/server/store/etcd-store.js";
import type { Store } from "../src/server/store/store.js";
import { freePorts, startEtcd } from "./etcd.js";
import { eventually } from "./helpers.js";
import { etcdBackend, openOnEtcd } from "./store-backends.js";
import { collect, dec, eventsOf, expectCode, fmt, put, storeContract } from "./store-contract.js";
import { resourceStoreContract } from "./resource-store-contract.js";

storeContract(etcdBackend);

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

// ---- SQLite across processes ----

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

// The typed ResourceStore rules on etcd (on SQLite: resource-store.test.ts).
resourceStoreContract(etcdBackend);
