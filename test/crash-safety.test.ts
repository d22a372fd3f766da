/**
 * Crash safety: a real `k4s server` process on a data dir takes a stream of applies
 * (multi-document), updates, scales and deletes, and is SIGKILLed at a random point. After a
 * restart on the same data dir every acknowledged write is there, the write in flight is there
 * entirely or not at all, and a watch resumes from the last resourceVersion it saw (or is told
 * OUT_OF_RANGE and relists). Rounds: K4S_CRASH_ROUNDS (default 2); scripts/soak.ts runs many.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { createClient, type AnyObject, type K4sClient, type WatchEvent } from "../src/client/index.js";
import { childrenOf, eventually, spawnK4s, startTestServer, type Proc } from "./helpers.js";

const ROUNDS = Number(process.env.K4S_CRASH_ROUNDS ?? 2);
const SEED = Number(process.env.K4S_SEED ?? Date.now() % 1_000_000);

/** A small deterministic PRNG (mulberry32), so a failing round can be replayed with K4S_SEED. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function startServer(dataDir: string): Promise<{ proc: Proc; address: string }> {
  const proc = spawnK4s(["server", "--port", "0", "--data-dir", dataDir, "--no-local-worker"]);
  await proc.waitFor(/listening on (\S+)/, 20_000);
  const address = /listening on (\S+)/.exec(proc.stdout())![1]!;
  return { proc, address };
}

/** What the model expects of one object: a label value, a replica count, or absence. */
type Expect = string | null;
/** key "Kind/name" -> expected observable value. */
type Model = Map<string, Expect>;

function observe(o: AnyObject): string {
  if (o.$typeName === "k4s.v1.ReplicaSet") return `replicas=${(o as { spec?: { replicas: number } }).spec?.replicas}`;
  return `op=${o.metadata?.labels.op ?? ""}`;
}

interface Op {
  describe: string;
  effect: Map<string, Expect>;
  run(c: K4sClient): Promise<unknown>;
}

function groupManifest(g: number, op: number): string {
  const docs: string[] = [];
  for (let i = 0; i < 3; i++) {
    docs.push(`kind: Container\nmetadata:\n  name: g${g}-c${i}\n  labels: {op: "${op}", group: "g${g}"}\nspec:\n  module: workers\n  function: echo_worker\n  parameters: {prefix: "P${op}"}\n`);
  }
  docs.push(`kind: Service\nmetadata:\n  name: g${g}-svc\n  labels: {op: "${op}"}\nspec:\n  selector: "g${g}-c*"\n`);
  return docs.join("---\n");
}

/** Picks the next operation from the model of acknowledged state. */
function nextOp(model: Model, n: number, r: () => number): Op {
  const pick = r();
  const existing = [...model.entries()].filter(([k, v]) => v !== null && k.startsWith("Container/"));
  if (pick < 0.45 || existing.length === 0) {
    const g = Math.floor(r() * 12);
    const effect = new Map<string, Expect>();
    for (let i = 0; i < 3; i++) effect.set(`Container/g${g}-c${i}`, `op=${n}`);
    effect.set(`Service/g${g}-svc`, `op=${n}`);
    const manifest = groupManifest(g, n);
    return { describe: `apply group g${g} op=${n}`, effect, run: (c) => c.apply(manifest) };
  }
  if (pick < 0.7) {
    const [key] = existing[Math.floor(r() * existing.length)]!;
    const name = key.slice("Container/".length);
    return {
      describe: `update ${key} op=${n}`,
      effect: new Map([[key, `op=${n}`]]),
      async run(c) {
        const cur = await c.get("Container", name);
        const next = { ...cur, metadata: { ...cur.metadata!, labels: { ...cur.metadata!.labels, op: String(n) }, resourceVersion: "" } };
        return c.update(next as AnyObject);
      },
    };
  }
  if (pick < 0.85) {
    const replicas = Math.floor(r() * 4);
    return { describe: `scale crash-rs ${replicas}`, effect: new Map([["ReplicaSet/crash-rs", `replicas=${replicas}`]]), run: (c) => c.scale("crash-rs", replicas) };
  }
  const [key] = existing[Math.floor(r() * existing.length)]!;
  const name = key.slice("Container/".length);
  return { describe: `delete ${key}`, effect: new Map([[key, null]]), run: (c) => c.delete("Container", name) };
}

async function snapshot(c: K4sClient): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const kind of ["Container", "Service", "ReplicaSet"] as const) {
    for (const o of (await c.list(kind)).items) {
      // Replicas of crash-rs are the controller's writes, not the client's.
      if (o.metadata?.ownerReference) continue;
      out.set(`${kind}/${o.metadata!.name}`, observe(o));
    }
  }
  return out;
}

/** Follows a watch in the background, remembering the last resourceVersion seen. */
function follow(c: K4sClient, from: string | undefined) {
  const abort = new AbortController();
  const events: WatchEvent[] = [];
  const state = { last: from ?? "", error: undefined as ConnectError | undefined };
  const done = (async () => {
    try {
      for await (const e of c.watch({ resourceVersion: from, signal: abort.signal })) {
        events.push(e);
        state.last = e.resourceVersion;
      }
    } catch (err) {
      state.error = ConnectError.from(err);
    }
  })();
  return { events, state, done, stop: () => abort.abort() };
}

/** Figures of the whole run, printed at the end for docs/guarantees.md. */
const figures = { rounds: 0, acked: 0, inFlightApplied: 0, inFlightNotApplied: 0, inFlightNone: 0, watchResumed: 0, watchRelisted: 0 };

async function crashRound(round: number): Promise<void> {
  const r = rng(SEED + round);
  const dir = mkdtempSync(join(tmpdir(), "k4s-crash-"));
  let srv = await startServer(dir);
  let c = createClient({ address: srv.address, reconnect: false });
  try {
    const model: Model = new Map();
    await c.apply(`kind: ReplicaSet\nmetadata: {name: crash-rs}\nspec:\n  replicas: 1\n  template:\n    spec: {module: workers, function: echo_worker}\n`);
    model.set("ReplicaSet/crash-rs", "replicas=1");
    const watch = follow(c, (await c.list("Container")).resourceVersion);
    const killAt = 3 + Math.floor(r() * 25);
    let inFlight: { op: Op; acked: boolean; before: Model } | undefined;
    for (let n = 1; ; n++) {
      const op = nextOp(model, n, r);
      if (n < killAt) {
        await op.run(c);
        op.effect.forEach((v, k) => model.set(k, v));
        figures.acked++;
        continue;
      }
      // Kill while the op travels: after a random few ms, so the kill lands before, during or
      // after the server's commit.
      const pending = op.run(c).then(
        () => true,
        () => false,
      );
      await new Promise((res) => setTimeout(res, Math.floor(r() * 12)));
      await srv.proc.kill("SIGKILL");
      const acked = await pending;
      const before = new Map(model);
      if (acked) {
        op.effect.forEach((v, k) => model.set(k, v));
        figures.acked++;
      }
      inFlight = { op, acked, before };
      break;
    }
    await watch.done;
    const lastSeen = watch.state.last;
    await c.close();

    srv = await startServer(dir);
    c = createClient({ address: srv.address, reconnect: false });
    const actual = await snapshot(c);
    const ctx = () => `round ${round} (K4S_SEED=${SEED}), in flight: ${inFlight?.op.describe} (acked ${inFlight?.acked})`;
    const effect = inFlight!.op.effect;
    const before = inFlight!.before;
    const keys = new Set([...before.keys(), ...effect.keys(), ...actual.keys()]);
    let applied = 0;
    let notApplied = 0;
    for (const key of keys) {
      const was = before.get(key) ?? null;
      const got = actual.get(key) ?? null;
      if (!effect.has(key) || effect.get(key) === was) {
        assert.equal(got, was, `${key}: expected ${was ?? "absent"}, found ${got ?? "absent"}; ${ctx()}`);
        continue;
      }
      if (got === effect.get(key)) applied++;
      else if (got === was) notApplied++;
      else assert.fail(`${key}: found ${got ?? "absent"}, neither the acknowledged ${was ?? "absent"} nor the in-flight ${effect.get(key) ?? "absent"}; ${ctx()}`);
    }
    assert.ok(applied === 0 || notApplied === 0, `in-flight write half applied (${applied} keys applied, ${notApplied} not); ${ctx()}`);
    if (inFlight!.acked) assert.equal(notApplied, 0, `acknowledged write missing after restart; ${ctx()}`);
    else if (applied > 0) figures.inFlightApplied++;
    else if (notApplied > 0) figures.inFlightNotApplied++;
    else figures.inFlightNone++;

    // The watch resumes from the last version it saw, or is told to relist.
    const resumed = follow(c, lastSeen || undefined);
    const marker = `watch-marker-${round}`;
    await c.apply(`kind: Container\nmetadata: {name: ${marker}}\nspec: {module: workers, function: echo_worker}\n`);
    const saw = await eventually(
      () => resumed.state.error !== undefined || resumed.events.some((e) => e.object.metadata?.name === marker),
      10_000,
      `resumed watch delivering ${marker} or failing`,
    ).then(() => resumed.events.some((e) => e.object.metadata?.name === marker));
    resumed.stop();
    await resumed.done;
    if (resumed.state.error) {
      assert.equal(resumed.state.error.code, Code.OutOfRange, `watch from ${lastSeen} failed with ${resumed.state.error.message}; ${ctx()}`);
      figures.watchRelisted++;
      const relist = await c.list("Container");
      assert.ok(relist.items.some((o) => o.metadata?.name === marker), "relist shows the marker");
    } else {
      assert.ok(saw, `resumed watch from ${lastSeen} never delivered the marker; ${ctx()}`);
      for (const e of resumed.events) {
        assert.ok(BigInt(e.resourceVersion) > BigInt(lastSeen || "0"), `resumed watch replayed ${e.resourceVersion} <= ${lastSeen}`);
      }
      figures.watchResumed++;
    }
    figures.rounds++;
  } finally {
    await c.close();
    await srv.proc.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

test(`acknowledged writes survive SIGKILL of the server; in-flight writes are all or nothing; watches resume (${ROUNDS} rounds)`, async () => {
  for (let round = 0; round < ROUNDS; round++) await crashRound(round);
  console.log(`crash-safety figures (K4S_SEED=${SEED}): ${JSON.stringify(figures)}`);
  assert.equal(figures.rounds, ROUNDS);
});

test("a watch from a version compacted away across a restart gets OUT_OF_RANGE, and a relist then watch catches up", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-crash-"));
  try {
    let server = await startTestServer({ dataDir: dir, historyLimit: 5 });
    let c = createClient({ address: server.address, reconnect: false });
    const first = await c.apply("kind: Container\nmetadata: {name: oor-0}\nspec: {}\n");
    const oldVersion = first[0]!.object!.metadata!.resourceVersion;
    for (let i = 1; i <= 20; i++) await c.apply(`kind: Container\nmetadata: {name: oor-${i}}\nspec: {}\n`);
    await c.close();
    await server.stop();
    server = await startTestServer({ dataDir: dir, historyLimit: 5 });
    c = createClient({ address: server.address, reconnect: false });
    try {
      const stale = follow(c, oldVersion);
      await stale.done;
      assert.equal(stale.state.error?.code, Code.OutOfRange, `watch from ${oldVersion}: ${stale.state.error?.message ?? "no error"}`);
      const listing = await c.list("Container", { nameGlob: "oor-*" });
      assert.equal(listing.items.length, 21, "every object survived the restart");
      const fresh = follow(c, listing.resourceVersion);
      await c.apply("kind: Container\nmetadata: {name: oor-new}\nspec: {}\n");
      await eventually(() => fresh.events.some((e) => e.object.metadata?.name === "oor-new"), 10_000, "the relisted watch sees the next change");
      assert.ok(fresh.events.every((e) => e.object.metadata?.name === "oor-new" || e.type !== "ADDED"), "no replay of listed objects");
      fresh.stop();
      await fresh.done;
    } finally {
      await c.close();
      await server.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a watch resumed after a restart from version V delivers every change after V, the one right after V included, and none before", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-crash-"));
  try {
    let server = await startTestServer({ dataDir: dir });
    let c = createClient({ address: server.address, reconnect: false });
    const versions: string[] = [];
    for (let i = 0; i < 5; i++) {
      const [out] = await c.apply(`kind: Container\nmetadata: {name: rs-${i}}\nspec: {}\n`);
      versions.push(out!.object!.metadata!.resourceVersion);
    }
    await c.close();
    await server.stop();
    server = await startTestServer({ dataDir: dir });
    c = createClient({ address: server.address, reconnect: false });
    try {
      // From the revision just before rs-2's: the first change after it is rs-2 itself.
      const from = String(BigInt(versions[2]!) - 1n);
      const resumed = follow(c, from);
      await eventually(() => resumed.events.some((e) => e.object.metadata?.name === "rs-4") || resumed.state.error !== undefined, 10_000, "the resumed watch reaching rs-4");
      resumed.stop();
      await resumed.done;
      const seen = resumed.events.map((e) => `${e.type} ${e.object.metadata?.name}@${e.resourceVersion}`);
      // (The controllers' status writes come as MODIFIED events in between.)
      assert.deepEqual(seen.filter((x) => x.startsWith("ADDED ")), [2, 3, 4].map((i) => `ADDED rs-${i}@${versions[i]}`), `watch from ${from}: ${seen.join(", ")}`);
      for (const e of resumed.events) assert.ok(BigInt(e.resourceVersion) > BigInt(from), `replayed ${e.resourceVersion} <= ${from}`);
    } finally {
      await c.close();
      await server.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a multi-document apply is one write: every object it created has the apply's resourceVersion, as the answer and a watch show it", async () => {
  const server = await startTestServer();
  const c = createClient({ address: server.address, reconnect: false });
  try {
    const watch = follow(c, (await c.list("Container")).resourceVersion);
    for (let round = 0; round < 3; round++) {
      const outcomes = await c.apply(groupManifest(round, round + 1));
      const versions = new Set(outcomes.map((o) => o.object!.metadata!.resourceVersion));
      assert.equal(versions.size, 1, `apply answered versions ${[...versions]}`);
      const [version] = versions;
      // Each object's creation, as the watch sees it, is at the apply's one revision (the
      // controllers' status writes come after it).
      const names = outcomes.map((o) => o.object!.metadata!.name);
      const added = () => watch.events.filter((e) => e.type === "ADDED" && names.includes(e.object.metadata!.name));
      await eventually(() => added().length === names.length, 10_000, `the watch seeing the apply's ${names.length} objects`);
      for (const e of added()) assert.equal(e.resourceVersion, version, `${e.object.metadata!.name} created at ${e.resourceVersion}, not at the apply's ${version}`);
    }
    watch.stop();
    await watch.done;
  } finally {
    await c.close();
    await server.stop();
  }
});

/** One system call of the strace log: what, on which file, when it started and ended (µs). */
interface Syscall {
  name: string;
  path: string;
  startUs: number;
  endUs: number;
}

/** Parses `strace -f -ttt -T -y` lines: `PID SECS.USECS name(FD</path>, ...) = R <DUR>`. */
function parseStrace(text: string): Syscall[] {
  const calls: Syscall[] = [];
  for (const line of text.split("\n")) {
    const m = /^\d+\s+(\d+)\.(\d+) (\w+)\(\d+<([^>]*)>.*\) = (-?\d+).* <(\d+)\.(\d+)>$/.exec(line);
    if (!m || Number(m[5]) < 0) continue;
    const startUs = Number(m[1]) * 1e6 + Number(m[2]);
    calls.push({ name: m[3]!, path: m[4]!, startUs, endUs: startUs + Number(m[6]) * 1e6 + Number(m[7]) });
  }
  return calls;
}

test("every acknowledged write is written and fsynced to the database or its WAL before its reply (the server under strace)", async () => {
  assert.doesNotThrow(() => execFileSync("strace", ["-V"]), "this test needs strace (Debian package strace; .ci/run installs it)");
  const dir = mkdtempSync(join(tmpdir(), "k4s-fsync-"));
  const log = join(dir, "strace.log");
  const proc = spawnK4s(["server", "--port", "0", "--data-dir", join(dir, "data"), "--no-local-worker"], {}, [
    "strace", "-f", "-qq", "-ttt", "-T", "-y", "-e", "trace=fsync,fdatasync,write,pwrite64,pwritev,pwritev2", "-o", log,
  ]);
  try {
    await proc.waitFor(/listening on (\S+)/, 30_000);
    const c = createClient({ address: /listening on (\S+)/.exec(proc.stdout())![1]!, reconnect: false });
    const writes: { what: string; sentUs: number; repliedUs: number }[] = [];
    const timed = async (what: string, run: () => Promise<unknown>) => {
      const sentUs = Date.now() * 1000;
      await run();
      writes.push({ what, sentUs, repliedUs: Date.now() * 1000 });
    };
    try {
      await timed("apply", () => c.apply(groupManifest(1, 1)));
      await timed("apply a ReplicaSet", () => c.apply(`kind: ReplicaSet\nmetadata: {name: fs-rs}\nspec:\n  replicas: 0\n  template:\n    spec: {module: workers, function: echo_worker}\n`));
      for (let n = 2; n <= 6; n++) {
        await timed(`apply ${n}`, () => c.apply(groupManifest(n % 3, n)));
        await timed(`scale ${n}`, () => c.scale("fs-rs", (n + 1) % 2));
        await timed(`update ${n}`, async () => {
          const cur = await c.get("Container", `g${n % 3}-c0`);
          await c.update({ ...cur, metadata: { ...cur.metadata!, labels: { op: `u${n}` }, resourceVersion: "" } } as AnyObject);
        });
      }
      await timed("delete", () => c.delete("Container", "g1-c1"));
    } finally {
      await c.close();
    }
    // SIGKILL the server itself: strace, killed, would detach and leave it running.
    killTraced(proc);
    await proc.exited;
    const db = join(dir, "data", "k4s.db");
    const calls = parseStrace(readFileSync(log, "utf8")).filter((s) => s.path === db || s.path === `${db}-wal`);
    assert.ok(calls.length > 0, `strace saw no call on ${db}: ${readFileSync(log, "utf8").slice(0, 500)}`);
    for (const w of writes) {
      const inside = calls.filter((s) => s.startUs >= w.sentUs - 1000 && s.endUs <= w.repliedUs + 1000);
      // Writes of the controllers may follow the reply; what counts is that the request's own
      // commit, a write, was followed by a sync of that file before the reply went out.
      const synced = inside.some(
        (sync) =>
          (sync.name === "fsync" || sync.name === "fdatasync") &&
          inside.some((w) => w.name.includes("write") && w.path === sync.path && w.endUs <= sync.startUs),
      );
      assert.ok(inside.some((s) => s.name.includes("write")), `${w.what}: no write to the database or its WAL between the request and its reply`);
      assert.ok(synced, `${w.what}: acknowledged with no fsync of the database or its WAL after a write (${inside.map((s) => s.name).join(",")})`);
    }
  } finally {
    killTraced(proc);
    await proc.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

/** SIGKILLs the processes strace runs (the server), after which strace ends by itself. */
function killTraced(proc: Proc): void {
  for (const pid of childrenOf(proc.child.pid!)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // It ended meanwhile.
    }
  }
}
