/**
 * The router's deadline queue on a mocked clock: items expire in deadline order, none before its
 * deadline, removed ones never, a moved one at its new deadline; one timer serves them all.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { createDeadlineQueue, type Deadlined } from "../src/server/messaging/deadline-queue.js";

interface Item extends Deadlined {
  id: number;
}

const item = (id: number, deadline: number): Item => ({ id, deadline, heapIndex: -1 });

test("deadline queue: random adds, moves and removes expire in deadline order, each at its deadline (model check)", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
  fc.assert(
    fc.property(
      fc.array(fc.record({ at: fc.integer({ min: 1, max: 500 }), moveTo: fc.option(fc.integer({ min: 1, max: 500 })), remove: fc.boolean() }), { maxLength: 120, size: "max" }),
      (specs) => {
        const start = Date.now();
        const expired: Array<{ item: Item; at: number }> = [];
        const q = createDeadlineQueue<Item>((it) => expired.push({ item: it, at: Date.now() }));
        const items = specs.map((s, i) => item(i, start + s.at));
        for (const it of items) q.add(it);
        specs.forEach((s, i) => {
          const it = items[i]!;
          if (s.moveTo !== null) {
            it.deadline = start + s.moveTo;
            q.add(it);
          }
          if (s.remove) q.remove(it);
        });
        const kept = items.filter((_, i) => !specs[i]!.remove);
        assert.equal(q.size, kept.length);
        for (const it of items.filter((_, i) => specs[i]!.remove)) assert.equal(it.heapIndex, -1);

        // Time moves a millisecond at a time, as a real clock would.
        for (let ms = 0; ms <= 501; ms++) t.mock.timers.tick(1);

        assert.equal(q.size, 0);
        assert.deepEqual(
          expired.map((e) => e.item.id).sort((a, b) => a - b),
          kept.map((it) => it.id),
          "every kept item expired once; no removed one did",
        );
        for (let i = 1; i < expired.length; i++) assert.ok(expired[i - 1]!.item.deadline <= expired[i]!.item.deadline, "in deadline order");
        for (const e of expired) assert.equal(e.at, e.item.deadline, `item ${e.item.id} expired at its deadline, not before or after`);
        q.clear();
      },
    ),
    { numRuns: 60 },
  );
});

test("deadline queue: an earlier deadline re-arms the one timer earlier; clear disarms it", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 5_000 });
  const expired: number[] = [];
  const q = createDeadlineQueue<Item>((it) => expired.push(it.id));
  q.add(item(1, 5_100));
  q.add(item(2, 5_020));
  t.mock.timers.tick(19);
  assert.deepEqual(expired, []);
  t.mock.timers.tick(1);
  assert.deepEqual(expired, [2], "the earlier item added later fired first");
  // Removing the item the timer is armed for: the timer firing early expires nothing.
  const third = item(3, 5_050);
  q.add(third);
  q.remove(third);
  t.mock.timers.tick(30);
  assert.deepEqual(expired, [2]);
  t.mock.timers.tick(50);
  assert.deepEqual(expired, [2, 1]);
  q.add(item(4, 5_200));
  q.clear();
  assert.equal(q.size, 0);
  t.mock.timers.tick(1_000);
  assert.deepEqual(expired, [2, 1], "nothing expires after clear");
});

test("deadline queue: removing an item twice, one never added, or one of a cleared queue leaves the others alone", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
  const expired: number[] = [];
  const q = createDeadlineQueue<Item>((it) => expired.push(it.id));
  const start = Date.now();
  const [a, b, c] = [item(1, start + 10), item(2, start + 20), item(3, start + 30)];
  for (const it of [a!, b!, c!]) q.add(it);
  q.remove(b!);
  q.remove(b!); // again: already gone
  q.remove(item(9, start + 5)); // never added
  // An item whose index points at another item's slot is not that item: nothing is removed.
  q.remove({ ...c!, id: 99, heapIndex: c!.heapIndex } as Item);
  assert.equal(q.size, 2);
  q.clear();
  assert.equal(q.size, 0);
  assert.equal(a!.heapIndex, -1, "a cleared item is out of the queue");
  // A cleared item can be added again and expires; removing another cleared one does nothing.
  q.add(a!);
  q.remove(c!);
  assert.equal(q.size, 1);
  t.mock.timers.tick(50);
  assert.deepEqual(expired, [1]);
});
