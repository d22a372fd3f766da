/**
 * What the durable-delivery cluster tests share: a recording worker module, the counts of what
 * it handled, and the keys of the journal of durable sends in etcd.
 */
import { after, before } from "node:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { JOURNAL_PREFIX } from "../src/server/messaging/send-journal.js";
import { openStore } from "../src/server/store/open-store.js";
import { recorderLines, WORKERS_SDK_JS } from "./helpers.js";

/**
 * The recorder: appends {ev, v, a} to params.file when it starts and when it is done with a
 * message; waits for params.gate (a file) before handling anything while it is set.
 */
export const RECORDER_MODULE = `import { appendFileSync, existsSync } from "node:fs";
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

/** One line the recorder wrote: the message's value and attempt. */
export interface RecorderLine {
  ev: "start" | "done";
  v: { i?: number; r?: number; marker?: number };
  a: number;
}

/** The recorder's lines of one kind (whole lines only). */
export function lines(file: string, ev: RecorderLine["ev"] = "done"): RecorderLine[] {
  return recorderLines<RecorderLine>(file, ev);
}

/** How many times the recorder handled each value {i}. */
export function counts(file: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const l of lines(file)) if (l.v.i !== undefined) out.set(l.v.i, (out.get(l.v.i) ?? 0) + 1);
  return out;
}

/** How many handlings of values {i} were beyond the first of each. */
export function duplicates(file: string): number {
  return [...counts(file).values()].reduce((n, k) => n + k - 1, 0);
}

/** The keys of the journal of durable sends in the store now. */
export async function journalKeys(storeUrl: string): Promise<string[]> {
  const store = await openStore({ url: storeUrl });
  try {
    return (await store.range(JOURNAL_PREFIX)).kvs.map((kv) => kv.key);
  } finally {
    await store.close();
  }
}

/**
 * A temporary folder with the recorder module in it, made before the file's tests and removed
 * after them (its paths are read once the tests run).
 */
export function recorderDir(prefix: string): { readonly dir: string; readonly modulePath: string } {
  const at = { dir: "", modulePath: "" };
  before(() => {
    at.dir = mkdtempSync(join(tmpdir(), prefix));
    at.modulePath = join(at.dir, "recorder.mjs");
    writeFileSync(at.modulePath, RECORDER_MODULE);
  });
  after(() => rmSync(at.dir, { recursive: true, force: true }));
  return at;
}
