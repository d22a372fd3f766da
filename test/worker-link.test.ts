/**
 * A worker link's outgoing queue in memory: its bytes are counted from when frames are queued
 * until the stream wrote them to the peer, and a peer that does not read is cut off once the queue passes the byte bound, with
 * RESOURCE_EXHAUSTED naming it and the queue dropped (the frames would never be read); a
 * stall of the server's own loop is not blamed on the links.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ServerFrameSchema, type ServerFrame } from "../src/gen/k4s/v1/worker_service_pb.js";
import { createLinkRegistry } from "../src/server/messaging/link-registry.js";
import { WorkerLink } from "../src/server/messaging/worker-link.js";
import { frameBytes } from "../src/transport/frame-batch.js";
import { eventually } from "./helpers.js";

const delivery = (id: number, bytes: number): ServerFrame =>
  create(ServerFrameSchema, { frame: { case: "delivery", value: { id: BigInt(id), data: new Uint8Array(bytes) } } });

test("worker link: queued bytes go up as frames are queued and back to 0 once the stream wrote them, not when it took them", async () => {
  const link = new WorkerLink({ id: "l1", name: "h", role: "host", maxQueuedBytes: 10_000 });
  link.push(delivery(1, 1000));
  link.push(delivery(2, 2000));
  const both = frameBytes(delivery(1, 1000)) + frameBytes(delivery(2, 2000));
  assert.equal(link.queuedBytes, both);
  const batch = await link.next();
  assert.equal(batch?.frames.length, 2);
  assert.equal(batch?.bytes, both, "the batch carries its bytes as counted when queued");
  assert.equal(link.queued, 0);
  assert.equal(link.queuedBytes, both, "taken but not yet written: still unread by the peer");
  link.written(batch!);
  assert.equal(link.queuedBytes, 0);
});

test("worker link: frames the stream took and has not written count toward the byte bound and congestion; writing them drains it", async () => {
  const cut: string[] = [];
  const drained: string[] = [];
  const link = new WorkerLink({ id: "l3", name: "h", role: "host", maxQueuedBytes: 3 * 1024 * 1024, onOverflow: (l, limit) => (cut.push(limit), l.close()), onDrained: (l) => drained.push(l.id) });
  const MiB = 1024 * 1024;
  link.push(delivery(1, MiB));
  const first = await link.next();
  link.push(delivery(2, MiB));
  const second = await link.next();
  assert.equal(link.queued, 0, "both taken by the stream");
  assert.ok(link.congested, "2 MiB handed to the stream and unwritten: congested");
  link.written(first!);
  assert.equal(drained.length, 0, "still 1 MiB unwritten: congested");
  link.push(delivery(3, MiB));
  link.push(delivery(4, MiB));
  assert.equal(cut.length, 1, "1 MiB in transport plus 2 MiB queued passes the 3 MiB bound");
  assert.match(cut[0]!, /more than 3 MiB of frames queued/);
  link.written(second!);
  assert.equal(drained.length, 0, "a closed link is not drained");
  const other = new WorkerLink({ id: "l4", name: "h", role: "host", onDrained: (l) => drained.push(l.id) });
  other.push(delivery(1, 2 * MiB));
  const big = await other.next();
  assert.ok(other.congested);
  other.written(big!);
  assert.ok(!other.congested);
  assert.deepEqual(drained, ["l4"], "drained once the stream wrote what congested it");
});

test("worker link: a peer that does not read is cut off past the byte bound, the queue dropped; one frame larger than the bound alone still goes", () => {
  const cut: string[] = [];
  const link = new WorkerLink({ id: "l2", name: "h", role: "host", maxQueuedBytes: 5000, onOverflow: (_l, limit) => cut.push(limit) });
  link.push(delivery(1, 20_000));
  assert.deepEqual(cut, [], "a single frame over the bound is not an overflow");
  link.push(delivery(2, 10));
  assert.equal(cut.length, 1);
  assert.match(cut[0]!, /more than 4\.9 KiB of frames queued \(the server's maxSessionBufferBytes, 5000 bytes\)/);
  assert.equal(link.queued, 0, "the unread frames are dropped");
  assert.equal(link.queuedBytes, 0);
});

test("link registry: the cut-off link is lost with RESOURCE_EXHAUSTED naming maxSessionBufferBytes", async () => {
  const links = createLinkRegistry({ heartbeatIntervalMs: 60_000, maxSessionBufferBytes: 64 * 1024 });
  const lost: string[] = [];
  links.onLost((l) => lost.push(l.name));
  const link = links.open({ name: "reader-never", role: "host" });
  for (let i = 0; i < 100 && !link.closed; i++) link.push(delivery(i, 1024));
  assert.ok(link.closed, "the link is closed");
  assert.deepEqual(lost, ["reader-never"]);
  assert.equal(link.closeError?.code, Code.ResourceExhausted);
  assert.match(link.closeError!.rawMessage, /session "reader-never" does not read its stream: more than 64 KiB of frames queued \(the server's maxSessionBufferBytes, 65536 bytes\)/);
  assert.equal(await link.next(), undefined, "nothing is left to flush");
});

test("link registry: a link whose heartbeat waits unread behind the server's own stalled loop is not declared lost", async () => {
  const hb = 100;
  const links = createLinkRegistry({ heartbeatIntervalMs: hb });
  links.start();
  try {
    const link = links.open({ name: "patient", role: "host" });
    // The server's loop is held up 6 heartbeat intervals (twice what loses a silent link); the
    // peer's heartbeat arrived meanwhile and is read right after the timers that run first.
    await new Promise<void>((resolve) =>
      setImmediate(() => {
        const until = Date.now() + 6 * hb;
        while (Date.now() < until);
        setImmediate(() => {
          link.lastReceived = Date.now();
          resolve();
        });
      }),
    );
    await new Promise((r) => setTimeout(r, hb));
    assert.equal(link.closed, false, `declared lost: ${link.closeError?.rawMessage}`);
    // A link that stays silent is still lost once the grace is over.
    await eventually(() => link.closed, 20 * hb, "the silent link lost");
    assert.match(link.closeError!.rawMessage, /sent nothing for \d+ ms \(3 heartbeat intervals\): declared lost/);
  } finally {
    links.stop(new ConnectError("done", Code.Unavailable));
  }
});
