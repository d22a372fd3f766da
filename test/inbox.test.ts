/**
 * The inbox ring buffer against a plain array model: random pushes, redeliveries to the front,
 * takes, abandons and extracts keep FIFO order, never hand out an abandoned envelope, keep the
 * live count and byte size exact, and stay bounded when nobody drains them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { EnvelopeState } from "../src/server/messaging/envelope.js";
import { Inbox } from "../src/server/messaging/inbox.js";

interface Item {
  id: number;
  state: number;
  data: Uint8Array;
}

/** An item whose payload size varies with its id, so the byte count is checked, not just the count. */
const item = (id: number): Item => ({ id, state: EnvelopeState.Queued, data: new Uint8Array(id % 7) });
const bytesOf = (items: readonly Item[]) => items.reduce((n, it) => n + it.data.byteLength, 0);

type Op = { op: "push" } | { op: "unshift" } | { op: "shift" } | { op: "abandon"; pick: number } | { op: "extractOdd" };

const ops = fc.array(
  fc.oneof(
    { arbitrary: fc.constant<Op>({ op: "push" }), weight: 6 },
    { arbitrary: fc.constant<Op>({ op: "unshift" }), weight: 3 },
    { arbitrary: fc.constant<Op>({ op: "shift" }), weight: 3 },
    { arbitrary: fc.nat().map<Op>((pick) => ({ op: "abandon", pick })), weight: 2 },
    { arbitrary: fc.constant<Op>({ op: "extractOdd" }), weight: 1 },
  ),
  // Long enough that the ring grows past its first 16 slots while it has wrapped.
  { maxLength: 400, size: "max" },
);

test("inbox: FIFO with redeliveries first, abandoned envelopes skipped, live count and bytes exact (model check)", () => {
  fc.assert(
    fc.property(ops, (list) => {
      const inbox = new Inbox<Item>();
      let model: Item[] = [];
      let next = 0;
      for (const o of list) {
        if (o.op === "push" || o.op === "unshift") {
          const it = item(next++);
          if (o.op === "push") {
            inbox.push(it);
            model.push(it);
          } else {
            inbox.unshift(it);
            model.unshift(it);
          }
        } else if (o.op === "shift") {
          assert.equal(inbox.shift(), model.shift());
        } else if (o.op === "abandon") {
          if (model.length === 0) continue;
          const [it] = model.splice(o.pick % model.length, 1);
          it!.state = EnvelopeState.Done;
          inbox.abandoned(it!);
        } else {
          const taken = inbox.extract((it) => it.id % 2 === 1);
          assert.deepEqual(taken, model.filter((it) => it.id % 2 === 1));
          model = model.filter((it) => it.id % 2 === 0);
        }
        assert.equal(inbox.live, model.length);
        assert.equal(inbox.bytes, bytesOf(model));
      }
      assert.deepEqual(inbox.drain(), model);
      assert.equal(inbox.live, 0);
      assert.equal(inbox.bytes, 0);
      assert.equal(inbox.shift(), undefined);
    }),
    { numRuns: 150 },
  );
});

test("inbox: an inbox whose envelopes are abandoned without being taken stays bounded", () => {
  const inbox = new Inbox<Item>();
  const waiting: Item[] = [];
  for (let i = 0; i < 100_000; i++) {
    const it = item(i);
    inbox.push(it);
    waiting.push(it);
    // Every envelope but one in a thousand times out while queued.
    if (i % 1000 !== 0) {
      it.state = EnvelopeState.Done;
      inbox.abandoned(it);
      waiting.pop();
    }
  }
  assert.equal(inbox.live, 100);
  assert.equal(inbox.bytes, bytesOf(waiting));
  // The ring holds at most about twice the live ones (plus its compaction floor), not 100,000.
  const ring = (inbox as unknown as { buf: unknown[] }).buf.length;
  assert.ok(ring <= 512, `ring of ${ring} slots for 100 live envelopes`);
  assert.deepEqual(inbox.drain(), waiting);
});
