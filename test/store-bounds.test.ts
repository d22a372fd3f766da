/**
 * The store's byte bounds under one client's abuse: the SQLite data directory stays near the
 * objects plus the history window however often a big object is rewritten, and a server keeps
 * no decoded copies of past versions. Figures are printed; the bounds asserted have headroom.
 * Sizes are cut to keep the suite's time (each update of a 1 MiB object writes and syncs ~3
 * MiB); K4S_BOUNDS_UPDATES=300 with K4S_BOUNDS_HISTORY_MIB=64 runs the full-size case. Space
 * freed in the SQLite file goes back to the file system (tested here, not in sqlite-store.test.ts:
 * its steps are tens of MiB, too slow to write once per mutant).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { create } from "@bufbuild/protobuf";
import { ContainerSchema, type Container } from "../src/gen/k4s/v1/resources_pb.js";
import { createResourceStore, MAX_APPLY_OBJECTS } from "../src/server/store/create-resource-store.js";
import { openSqliteStore } from "../src/server/store/sqlite-store.js";
import { eventually, startTestServer } from "./helpers.js";

const MIB = 1024 * 1024;
const UPDATES = Number(process.env.K4S_BOUNDS_UPDATES ?? 100);
const HISTORY_BYTES = Number(process.env.K4S_BOUNDS_HISTORY_MIB ?? 16) * MIB;

/** A Container whose parameters make it about `kib` KiB when stored. */
function bigContainer(name: string, kib: number, n: number): Container {
  return create(ContainerSchema, {
    metadata: { name, labels: { n: String(n) } },
    spec: { module: "workers", function: "echo_worker", parameters: { blob: `${n}`.padEnd(kib * 1024, "x") } },
  });
}

function dirBytes(dir: string): number {
  return readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

test("sqlite: many updates of a 1 MiB object keep the data dir near the object plus the history window", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-bounds-"));
  const store = openSqliteStore({ path: join(dir, "k4s.db"), historyBytes: HISTORY_BYTES });
  try {
    const rs = createResourceStore(store);
    await rs.create(bigContainer("big", 1000, 0));
    const before = dirBytes(dir);
    for (let i = 1; i <= UPDATES; i++) await rs.update(bigContainer("big", 1000, i));
    // Space is given back a step at a time between other work.
    await new Promise((r) => setTimeout(r, 500));
    const bytes = dirBytes(dir);
    console.log(`# data dir ${(before / MIB).toFixed(1)} MiB with the object, ${(bytes / MIB).toFixed(1)} MiB after ${UPDATES} updates of it (1000 KiB) (history bound ${HISTORY_BYTES / MIB} MiB; ~${Math.round((UPDATES * 3000) / 1024)} MiB written in all)`);
    assert.ok(bytes < HISTORY_BYTES + 48 * MIB, `data dir ${(bytes / MIB).toFixed(1)} MiB`);
    assert.ok((await store.compactRevision()) > UPDATES / 2, "old revisions were compacted");
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a server keeps no decoded copies of past versions: updates of a 1 MiB object, heap back near where it was", async () => {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const dir = mkdtempSync(join(tmpdir(), "k4s-bounds-"));
  const server = await startTestServer({ dataDir: dir, historyBytes: HISTORY_BYTES });
  try {
    const rs = server.resources;
    await rs.create(bigContainer("big", 1000, 0));
    await new Promise((r) => setTimeout(r, 300));
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 1; i <= UPDATES / 2; i++) await rs.update(bigContainer("big", 1000, i));
    // Let the controllers and the messaging plane take in every event.
    await new Promise((r) => setTimeout(r, 1000));
    gc();
    const grown = (process.memoryUsage().heapUsed - before) / MIB;
    console.log(`# heap after ${UPDATES / 2} updates of a 1000 KiB object, watched by the server's controllers and messaging plane: ${grown >= 0 ? "+" : ""}${grown.toFixed(1)} MiB`);
    assert.ok(grown < 32, `heap grew by ${grown.toFixed(1)} MiB`);
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("sqlite: space freed by compaction goes back to the file system, a step at a time, and the WAL is truncated after", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-bounds-"));
  const s = openSqliteStore({ path: join(dir, "k4s.db"), historyLimit: 1 });
  try {
    // 24 MiB written in one revision and deleted in the next (which compacts the first away:
    // some 6,000 free pages of 4 KiB at once, more than one step of giving them back takes); a
    // third write compacts the second.
    const keys = Array.from({ length: 24 }, (_, i) => `/big/${i}`);
    await s.txn([], keys.map((k) => ({ type: "put" as const, key: k, value: Buffer.alloc(MIB, 1) })));
    await s.txn([], keys.map((key) => ({ type: "delete" as const, key })));
    const full = dirBytes(dir);
    assert.ok(full > 24 * MIB, `${full} bytes on disk`);
    await s.txn([], [{ type: "put", key: "/small", value: Buffer.from("x") }]);
    assert.equal(await s.compactRevision(), 2);
    await eventually(() => dirBytes(dir) < MIB, 60_000, "the data directory back under 1 MiB");
    assert.equal(String((await s.get("/small"))!.value), "x");
  } finally {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("sqlite: a store closed while freed space waits to be given back closes cleanly, and opens again", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-bounds-"));
  try {
    let s = openSqliteStore({ path: join(dir, "k4s.db"), historyLimit: 1 });
    const keys = Array.from({ length: 8 }, (_, i) => `/big/${i}`);
    await s.txn([], keys.map((key) => ({ type: "put" as const, key, value: Buffer.alloc(MIB, 1) })));
    // 8 MiB freed: a step of giving it back is scheduled, and the store closes before it runs.
    await s.txn([], keys.map((key) => ({ type: "delete" as const, key })));
    await s.close();
    await new Promise((r) => setTimeout(r, 100));
    s = openSqliteStore({ path: join(dir, "k4s.db"), historyLimit: 1 });
    assert.equal(await s.revision(), 2);
    await s.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("an apply of exactly the most objects one apply may hold is one transaction (resource-store.test.ts checks one more is refused)", async () => {
  const store = openSqliteStore();
  try {
    const rs = createResourceStore(store);
    const objects = Array.from({ length: MAX_APPLY_OBJECTS }, (_, i) => create(ContainerSchema, { metadata: { name: `a-${i}` }, spec: { module: "workers", function: "echo" } }));
    const out = await rs.apply(objects);
    assert.equal(out.length, MAX_APPLY_OBJECTS);
    assert.ok(out.every((o) => o.action === "created"));
    assert.equal(await rs.revision(), 1);
  } finally {
    await store.close();
  }
});
