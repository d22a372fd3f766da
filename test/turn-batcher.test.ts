/**
 * The turn batcher in memory: the items added in one event-loop turn are handled as one batch,
 * each once; items added while a batch is handled go in the next; stop waits for the batch
 * being handled and starts no other; a batch that fails goes to the failure handler whole and
 * the next is handled.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createTurnBatcher } from "../src/server/controllers/turn-batcher.js";

/** A promise and the function that resolves it. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { opened, open };
}

test("the items of one turn are one batch, each once; those added while it is handled are the next", async () => {
  const batches: string[][] = [];
  const first = gate();
  const handled = gate();
  const batcher = createTurnBatcher<string>(async (batch) => {
    batches.push(batch);
    if (batches.length === 1) await first.opened;
    if (batches.length === 2) handled.open();
  }, assert.fail);
  batcher.add("a");
  batcher.add("b");
  batcher.add("a");
  assert.equal(batcher.handling("a"), false, "nothing is handled before the turn ends");
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(batches, [["a", "b"]]);
  assert.equal(batcher.handling("a"), true);
  assert.equal(batcher.handling("c"), false);
  batcher.add("c");
  batcher.add("a");
  await new Promise((r) => setImmediate(r));
  assert.equal(batches.length, 1, "the next batch waits for the one being handled");
  first.open();
  await handled.opened;
  assert.deepEqual(batches, [["a", "b"], ["c", "a"]]);
  await batcher.stop();
  assert.equal(batcher.handling("c"), false, "nothing is handled once the batches are done");
});

test("stop waits for the batch being handled and starts no other", async () => {
  const batches: number[][] = [];
  const release = gate();
  let done = false;
  const batcher = createTurnBatcher<number>(async (batch) => {
    batches.push(batch);
    await release.opened;
    done = true;
  }, assert.fail);
  batcher.add(1);
  await new Promise((r) => setImmediate(r));
  batcher.add(2);
  const stopped = batcher.stop();
  batcher.add(3);
  release.open();
  await stopped;
  assert.equal(done, true, "stop resolved before the batch being handled was done");
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(batches, [[1]]);
});

test("a batch whose handler throws goes to the failure handler whole; the next batch is handled", async () => {
  const failures: [number[], unknown][] = [];
  const handled: number[][] = [];
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on("unhandledRejection", onUnhandled);
  try {
    const batcher = createTurnBatcher<number>(
      async (batch) => {
        if (batch.includes(1)) throw new Error("store down");
        handled.push(batch);
      },
      (batch, err) => failures.push([batch, err]),
    );
    const turns = async (until: () => boolean) => {
      for (let i = 0; i < 100 && !until(); i++) await new Promise((r) => setImmediate(r));
    };
    batcher.add(1);
    batcher.add(2);
    await turns(() => failures.length > 0);
    assert.deepEqual(
      failures.map(([batch, err]) => [batch, (err as Error).message]),
      [[[1, 2], "store down"]],
    );
    batcher.add(3);
    await turns(() => handled.length > 0);
    assert.deepEqual(handled, [[3]], "the batcher goes on after a failed batch");
    await batcher.stop();
  } finally {
    process.off("unhandledRejection", onUnhandled);
  }
  assert.deepEqual(unhandled, []);
});
