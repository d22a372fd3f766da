/**
 * The event recorder's bounded ring and its journal: past its capacity the recorder keeps the
 * newest events, oldest first, and the journal writes (and a restart reads back) exactly those,
 * over a real store (SQLite in memory).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { EventSchema, type Event } from "../src/gen/k4s/v1/log_service_pb.js";
import { createEventRecorder } from "../src/server/event-recorder.js";
import { createTailJournal, protoChunks } from "../src/server/tail-journal.js";
import { openSqliteStore } from "../src/server/store/sqlite-store.js";

const messages = (events: readonly Event[]) => events.map((e) => e.message);
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `e${from + i}`);

test("past its capacity the recorder keeps the newest events, oldest first; the journal keeps the same and a restart reads them back", async () => {
  const store = openSqliteStore({});
  try {
    const journal = () => createTailJournal({ store, prefix: "/test-events/", ...protoChunks(EventSchema), seqOf: (e) => e.seq });
    const first = journal();
    const recorder = createEventRecorder({ capacity: 5, journal: first });
    await recorder.restore();
    const heard: string[] = [];
    recorder.subscribe((e) => heard.push(e.message));
    // Flushed in the middle too: trimming must also drop chunks already written.
    for (let i = 0; i < 7; i++) recorder.record({ reason: "R", kind: "Container", name: i % 2 ? "odd" : "even", message: `e${i}` });
    await first.flush();
    assert.deepEqual(messages(recorder.recent()), range(2, 7));
    for (let i = 7; i < 23; i++) recorder.record({ reason: "R", kind: "Container", name: i % 2 ? "odd" : "even", message: `e${i}` });
    assert.deepEqual(heard, range(0, 23), "every event reaches the followers, kept or not");
    assert.deepEqual(messages(recorder.recent()), range(18, 23));
    const seqs = recorder.recent().map((e) => e.seq);
    assert.deepEqual(messages(recorder.recent({ afterSeq: seqs[1] })), range(20, 23));
    assert.deepEqual(messages(recorder.recent({ name: "odd" })), ["e19", "e21"]);
    await first.flush();

    const second = journal();
    const restarted = createEventRecorder({ capacity: 5, journal: second });
    await restarted.restore();
    assert.deepEqual(messages(restarted.recent()), range(18, 23), "the restart reads back the kept events");
    restarted.record({ reason: "R", kind: "Container", name: "x", message: "e23" });
    assert.deepEqual(messages(restarted.recent()), range(19, 24));
    assert.ok(restarted.recent().at(-1)!.seq > seqs.at(-1)!, "positions keep increasing after the restart");
    await second.flush();
    const stored = (await store.range("/test-events/")).kvs.flatMap((kv) => messages(protoChunks(EventSchema).decode(kv.value)));
    assert.ok(stored.length <= 5 + 5, `chunks wholly out of the tail were deleted: ${stored.join(",")}`);
    assert.deepEqual(stored.filter((m) => range(19, 24).includes(m)), range(19, 24), "every kept event is in the store");
  } finally {
    store.close();
  }
});

test("the journal skips the records that fell out of the tail before a flush, however many", async () => {
  const store = openSqliteStore({});
  try {
    const journal = createTailJournal({ store, prefix: "/test-events/", ...protoChunks(EventSchema), seqOf: (e) => e.seq });
    const recorder = createEventRecorder({ capacity: 3, journal });
    for (let i = 0; i < 5000; i++) recorder.record({ reason: "R", kind: "Container", name: "n", message: `e${i}` });
    await journal.flush();
    const stored = (await store.range("/test-events/")).kvs.flatMap((kv) => messages(protoChunks(EventSchema).decode(kv.value)));
    assert.deepEqual(stored, range(4997, 5000));
  } finally {
    store.close();
  }
});
