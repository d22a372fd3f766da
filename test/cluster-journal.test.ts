/**
 * Durable sends across the servers of a cluster, through real parts: two `k4s server` processes
 * over one real etcd, a real `k4s worker` host given both servers, the SDK as the sender. The
 * worker writes a line when it has handled a message (not when it got it), so "handled" means
 * handled. A server that starts holding a container (its host moved there) reads back what the
 * container's old holder journaled and did not settle.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { JOURNAL_PREFIX } from "../src/server/messaging/send-journal.js";
import { openStore } from "../src/server/store/open-store.js";
import { startCluster, type ClusterServer } from "./cluster-harness.js";
import { dumpLogs, eventually, spawnK4s, WORKERS_SDK_JS, type Proc, recorderLines } from "./helpers.js";

/**
 * The recorder: appends {ev, v, a} to params.file when it starts and when it is done with a
 * message; waits for params.gate (a file) before handling anything while it is set.
 */
const MODULE = `import { appendFileSync, existsSync } from "node:fs";
import { defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const recorder = defineWorker(async (ctx) => {
  await ctx.handle(async (msg) => {
    const line = (ev) => appendFileSync(ctx.params.file, JSON.stringify({ ev, v: msg.value, a: msg.attempt }) + "\\n");
    line("start");
    while (ctx.params.gate && !existsSync(ctx.params.gate)) await sleep(20);
    line("done");
    return msg.expectsReply ? { ok: true } : undefined;
  });
});
`;

interface Line {
  ev: "start" | "done";
  v: { i?: number };
  a: number;
}

let dir: string;
let modulePath: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), "k4s-cluster-journal-"));
  modulePath = join(dir, "recorder.mjs");
  writeFileSync(modulePath, MODULE);
});

after(() => rmSync(dir, { recursive: true, force: true }));

function lines(file: string, ev: Line["ev"] = "done"): Line[] {
  return recorderLines<Line>(file, ev);
}

/** How many times each value was handled. */
function counts(file: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const l of lines(file)) if (l.v.i !== undefined) out.set(l.v.i, (out.get(l.v.i) ?? 0) + 1);
  return out;
}

/** The keys of the journal of durable sends in etcd now. */
async function journalKeys(storeUrl: string): Promise<string[]> {
  const store = await openStore({ url: storeUrl });
  try {
    return (await store.range(JOURNAL_PREFIX)).kvs.map((kv) => kv.key);
  } finally {
    await store.close();
  }
}

test("takeover reads the journal back: durable sends journaled by a server SIGKILLed while its worker was blocked are all handled on the server the host moved to", async () => {
  const cluster = await startCluster(2, { flags: ["--no-local-worker"] });
  // A holds the host's session; B leads, and the client sends through B (over its peer link to A).
  const b = cluster.leader;
  const a = cluster.standbys[0] as ClusterServer;
  const file = join(dir, "takeover.jsonl");
  const gate = join(dir, "takeover.gate");
  writeFileSync(gate, "");
  let host: Proc | undefined;
  try {
    host = spawnK4s(["worker", "--server", `${a.address},${b.address}`, "--name", "mover", "--module", `dur=${modulePath}`]);
    await eventually(async () => (await b.client.servers()).find((s) => s.address === a.address)?.sessions.some((x) => x.name === "mover"), 30_000, "host mover held by A");
    await b.client.apply(`kind: Container\nmetadata: {name: keeper}\nspec: {module: dur, function: recorder, delivery: durable, parameters: ${JSON.stringify({ file, gate })}}\n`);
    await eventually(async () => (await b.client.get("Container", "keeper")).status?.ready === true, 60_000, "keeper ready");

    // Handled and acknowledged before the kill: removed from the journal, never handled again.
    const early = 10;
    for (let i = 0; i < early; i++) await b.client.send("container/keeper", { i });
    await eventually(() => lines(file).length >= early, 30_000, "the early sends handled");
    await eventually(async () => (await journalKeys(cluster.etcd.storeUrl)).length === 0, 30_000, "the early sends settled in the journal");

    // The worker blocks on the first of these; the rest wait in A's inbox, journaled by A.
    unlinkSync(gate);
    const acked: number[] = [];
    for (let i = early; i < early + 60; i++) {
      await b.client.send("container/keeper", { i });
      acked.push(i);
    }
    await eventually(() => lines(file, "start").length > early, 30_000, "the worker holds a message");
    const journaled = (await journalKeys(cluster.etcd.storeUrl)).length;
    assert.equal(journaled, acked.length, "every accepted send is in the journal before the kill");
    const t0 = Date.now();
    await a.proc.kill("SIGKILL");
    await eventually(async () => (await b.client.servers()).find((s) => s.address === b.address)?.sessions.some((x) => x.name === "mover"), 30_000, "host mover held by B");
    const movedMs = Date.now() - t0;
    writeFileSync(gate, "");

    const want = new Set(acked);
    await eventually(
      () => {
        const c = counts(file);
        return [...want].every((i) => c.has(i));
      },
      90_000,
      "every send accepted before the kill handled on B",
    );
    const handledMs = Date.now() - t0;
    const c = counts(file);
    const duplicates = [...c.values()].reduce((n, k) => n + k - 1, 0);
    for (let i = 0; i < early; i++) assert.equal(c.get(i), 1, `send ${i}, acknowledged before the kill, was handled once`);
    await eventually(async () => (await journalKeys(cluster.etcd.storeUrl)).length === 0, 30_000, "the journal empty once all is handled");
    console.log(
      `# takeover: ${acked.length} sends journaled by A, A SIGKILLed; host on B after ${movedMs} ms, all handled after ${handledMs} ms; ` +
        `handled ${acked.filter((i) => c.has(i)).length}, duplicates ${duplicates}, lost 0`,
    );
  } catch (err) {
    dumpLogs({ "server A": a.proc, "server B (leader)": b.proc, host });
    throw err;
  } finally {
    await host?.kill();
    await cluster.stop();
  }
});
