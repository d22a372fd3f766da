/**
 * The status writer: a write that keeps failing is retried later and later (a capped back-off)
 * and logged once per run of failures, not every 500 ms forever; a success ends the run.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { ContainerSchema } from "../src/gen/k4s/v1/resources_pb.js";
import { ContainerRecord } from "../src/server/controllers/container-record.js";
import { createStatusWriter } from "../src/server/controllers/status-writer.js";
import { createResourceStore } from "../src/server/store/create-resource-store.js";
import { openStore } from "../src/server/store/open-store.js";
import type { ResourceStore } from "../src/server/store/resource-store.js";

test("status writer: a status write that keeps failing is retried with a growing, capped back-off and logged once per run of failures", async () => {
  const store = await openStore({});
  const real = createResourceStore(store);
  try {
    const obj = await real.create(create(ContainerSchema, { metadata: { name: "sw" }, spec: { module: "m", function: "f" } }));
    let refuse = true;
    const failing: ResourceStore = Object.assign(Object.create(real) as ResourceStore, {
      updateStatuses: (kind: "Container", updates: Parameters<ResourceStore["updateStatuses"]>[1]) =>
        refuse ? Promise.reject(new Error("etcd is away")) : real.updateStatuses(kind, updates),
    });
    const logged: string[] = [];
    const delays: number[] = [];
    let again: (() => void) | undefined;
    const writer = createStatusWriter({
      resources: failing,
      onError: (m) => logged.push(m),
      retry: (_rec, delayMs) => {
        delays.push(delayMs);
        again?.();
      },
    });
    const rec = new ContainerRecord("sw", obj.metadata!.uid, obj);
    rec.message = "changed";
    const retried = () => new Promise<void>((resolve) => (again = resolve));
    for (let i = 0; i < 8; i++) {
      const next = retried();
      writer.write(rec);
      await next;
    }
    assert.equal(logged.length, 1, `logged once for 8 failures in a row: ${logged.join(" | ")}`);
    assert.match(logged[0]!, /writing the status of container "sw".*failed.*back-off/);
    for (let i = 1; i < delays.length; i++) assert.ok(delays[i]! >= delays[i - 1]! * 0.5, `delays grow: ${delays.join(", ")}`);
    assert.ok(delays.at(-1)! > delays[0]! * 4, `later retries wait longer: ${delays.join(", ")}`);
    assert.ok(delays.every((d) => d <= 30_000 * 1.25), `capped: ${delays.join(", ")}`);

    // A success ends the run: the next failure is logged again, retried soon again.
    refuse = false;
    rec.message = "written";
    writer.write(rec);
    for (let i = 0; i < 200 && (await real.get("Container", "sw"))?.status?.message !== "written"; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal((await real.get("Container", "sw"))?.status?.message, "written");
    refuse = true;
    rec.message = "again";
    const next = retried();
    writer.write(rec);
    await next;
    assert.equal(logged.length, 2, "a new run of failures is logged again");
    assert.ok(delays.at(-1)! < 1_000, `and retried soon again: ${delays.at(-1)} ms`);
    await writer.stop();
    console.log(`# 8 failed writes then a success then one more failure: ${logged.length} log lines, retry delays ${delays.map((d) => Math.round(d)).join(", ")} ms`);
  } finally {
    store.close?.();
  }
});
