/**
 * The leader's reader of departed servers' service journals over a real etcd (member records
 * written by hand): a member that joins and dies while a pass of reading runs is seen by the
 * records read meanwhile, and read back by the next pass.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createDepartedJournals } from "../src/server/cluster/departed-journals.js";
import { SERVER_RECORDS_PREFIX } from "../src/server/cluster/session-record.js";
import type { Store } from "../src/server/store/store.js";
import { eventually } from "./eventually.js";
import { etcdBackend } from "./store-backends.js";

const bytes = (s: string) => new TextEncoder().encode(s);

test("a member that joins and dies while a pass runs is read back by the next pass", async () => {
  const opened = await etcdBackend.open();
  const { store } = opened;
  let reads = 0;
  // The records as the controller reads them, counted (to know it read them after a change).
  const records: Pick<Store, "range"> = {
    async range(prefix, o) {
      const r = await store.range(prefix, o);
      reads++;
      return r;
    },
  };
  const passes: string[][] = [];
  let release: () => void = () => {};
  const blocked = new Promise<void>((r) => (release = r));
  const errors: string[] = [];
  const departed = createDepartedJournals({
    store: records,
    async readDeparted(live, recordOf) {
      assert.equal(recordOf("m1:1"), `${SERVER_RECORDS_PREFIX}m1:1`);
      passes.push([...live].sort());
      if (passes.length === 1) await blocked;
      return 0;
    },
    onError: (m) => errors.push(m),
  });
  try {
    await store.txn([], [{ type: "put", key: `${SERVER_RECORDS_PREFIX}m1:1`, value: bytes("") }]);
    await departed.start();
    await eventually(() => passes.length === 1, 30_000, "the first pass runs");
    // m2 joins while the first pass runs, is seen by the records read meanwhile, then dies.
    await store.txn([], [{ type: "put", key: `${SERVER_RECORDS_PREFIX}m2:1`, value: bytes("") }]);
    const before = reads;
    await eventually(() => reads >= before + 2, 30_000, "the records read again while the pass runs");
    await store.txn([], [{ type: "delete", key: `${SERVER_RECORDS_PREFIX}m2:1` }]);
    release();
    await eventually(() => passes.length === 2, 30_000, "a second pass for the member gone");
    assert.deepEqual(passes, [["m1:1"], ["m1:1"]]);
    assert.deepEqual(errors, []);
  } finally {
    release();
    await departed.stop();
    await opened.close();
  }
});
