/**
 * A server of a cluster SIGKILLed together with what was connected to it, none of it coming back:
 * its host's container is run again on another host after the resume grace (a restart, counted
 * as a single server counts a lost host's), and its attached process's external container is
 * shown not running as a single server shows one whose process went away, until a process
 * attaches again, to any server.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Container } from "../src/gen/k4s/v1/resources_pb.js";
import { attach, type Attached } from "../src/workers/runtime/attach.js";
import { defineWorker } from "../src/workers/runtime/define-worker.js";
import { startCluster, type ClusterServer } from "./cluster-harness.js";
import { dumpLogs, eventually, spawnK4s, type Proc } from "./helpers.js";

/** Heartbeat the servers announce: the resume grace is three of them, at least 5 s. */
const HEARTBEAT_MS = 1000;
const GRACE_MS = Math.max(3 * HEARTBEAT_MS, 5000);

/** Serves an external container from this process, answering every request with its own tag. */
function serve(addresses: string[], container: string, tag: string): Attached {
  return attach({
    address: addresses.join(","),
    container,
    worker: defineWorker(async (ctx) => {
      await ctx.handle(async () => tag);
    }),
  });
}

const what = (c: Container | undefined) => `${c?.metadata?.uid} ${c?.status?.phase} host=${c?.status?.host} restarts=${c?.status?.restarts} ready=${c?.status?.ready} "${c?.status?.message}"`;

test("cluster: a server SIGKILLed with its host and attached process, neither back: after the resume grace the host's container runs on another host with RESTARTS +1, and the external container shows Pending as a single server shows a detached one, until a process attaches to another server", async () => {
  const cluster = await startCluster(3, { flags: ["--no-local-worker", "--heartbeat-ms", String(HEARTBEAT_MS)] });
  const { leader, standbys } = cluster;
  const [b, c] = standbys as [ClusterServer, ClusterServer];
  const procs: Record<string, Proc | undefined> = { leader: leader.proc, b: b.proc, c: c.proc };
  const attached: Attached[] = [];
  try {
    // The host is given C only: once C dies it has nowhere to go, and is killed too.
    procs.gone = spawnK4s(["worker", "--server", c.address, "--name", "h-gone"]);
    await eventually(async () => (await b.client.servers()).find((s) => s.address === c.address)?.sessions.some((x) => x.name === "h-gone"), 30_000, "h-gone held by C");
    await b.client.apply("kind: Container\nmetadata: {name: moved}\nspec: {module: workers, function: echo_worker}\n---\nkind: Container\nmetadata: {name: ext-gone}\nspec: {}\n---\nkind: Container\nmetadata: {name: ext-single}\nspec: {}\n");
    await eventually(async () => (await b.client.get("Container", "moved")).status?.ready, 60_000, "moved running on h-gone");
    // ext-gone's process is attached to C only; ext-single's to B, which lives.
    attached.push(serve([c.address], "ext-gone", "first"), serve([b.address], "ext-single", "single"));
    await Promise.all(attached.map((a) => a.ready));
    await eventually(async () => (await b.client.get("Container", "ext-gone")).status?.ready && (await b.client.get("Container", "ext-single")).status?.ready, 30_000, "both external containers running");
    const before = await b.client.get("Container", "moved");
    assert.equal(before.status?.host, "h-gone");
    assert.equal(before.status?.restarts, 0);
    // Another host, on B, for the container to move to.
    procs.stay = spawnK4s(["worker", "--server", b.address, "--name", "h-stay"]);
    await eventually(async () => (await b.client.servers()).some((s) => s.sessions.some((x) => x.name === "h-stay")), 30_000, "h-stay held");

    // On a live server, a process that goes away leaves its external container like this.
    await attached[1]!.stop(0).catch(() => {});
    const single = (await eventually(async () => {
      const got = await b.client.get("Container", "ext-single");
      return got.status?.ready === false ? got : undefined;
    }, 30_000, "ext-single detached"))!;

    const killedAt = Date.now();
    await Promise.all([c.proc.kill("SIGKILL"), procs.gone.kill("SIGKILL")]);
    await attached[0]!.stop(0).catch(() => {});
    // Until the grace has passed, the external container is left as it was shown. Checked once
    // a second has passed, if the answer came while the grace cannot have ended (it starts when
    // C's lease expires): on a loaded machine the look may come too late to tell.
    await new Promise((r) => setTimeout(r, 1000));
    const early = (await b.client.get("Container", "ext-gone")).status?.phase;
    const lookedMs = Date.now() - killedAt;
    if (lookedMs < GRACE_MS) assert.equal(early, "Running", `not marked before the grace (looked ${lookedMs} ms after the kill)`);
    else console.log(`# not checked before the grace: the look came ${lookedMs} ms after the kill`);

    const moved = (await eventually(async () => {
      const got = await b.client.get("Container", "moved");
      return got.status?.ready && got.status.host === "h-stay" ? got : undefined;
    }, 60_000, "moved running on h-stay").catch(async () => assert.fail(`moved: ${what(await b.client.get("Container", "moved"))}`)))!;
    const movedMs = Date.now() - killedAt;
    assert.equal(moved.metadata?.uid, before.metadata?.uid, "the same container");
    assert.equal(moved.status?.restarts, 1, "run again on another host: one restart");

    const gone = (await eventually(async () => {
      const got = await b.client.get("Container", "ext-gone");
      return got.status?.phase !== "Running" ? got : undefined;
    }, 60_000, "ext-gone no longer shown Running").catch(async () => assert.fail(`ext-gone: ${what(await b.client.get("Container", "ext-gone"))}`)))!;
    const markedMs = Date.now() - killedAt;
    // The same phase and reason as the single server's detached one.
    const shown = (x: Container) => [x.status?.phase, x.status?.ready, x.status?.host, x.status?.message.replace(x.metadata!.name, "NAME")];
    assert.deepEqual(shown(gone), shown(single));
    assert.deepEqual(shown(gone), ["Pending", false, "", 'waiting for a process to attach to external container "NAME"']);
    // The leader, which held it meanwhile, recorded why.
    const events: string[] = [];
    for await (const e of leader.client.events({ kind: "Container", name: "ext-gone" })) events.push(`${e.reason}: ${e.message}`);
    assert.ok(events.some((e) => /^Detached: process "\S+" did not attach again after its server was lost$/.test(e)), events.join("\n"));

    // A process attaching again, to another server, serves it.
    attached.push(serve([leader.address], "ext-gone", "again"));
    await attached[2]!.ready;
    await eventually(async () => (await b.client.get("Container", "ext-gone")).status?.phase === "Running", 30_000, "ext-gone Running again");
    const again = await b.client.get("Container", "ext-gone");
    assert.equal(again.status?.ready, true);
    assert.equal(await b.client.request("ext-gone", "x", { timeoutMs: 30_000 }), "again");
    console.log(
      `# C SIGKILLed with its host and attached process (resume grace ${GRACE_MS} ms): its container ran again on h-stay after ${movedMs} ms, restarts 0 -> ${moved.status?.restarts}, same uid; ` +
        `the external container shown ${gone.status?.phase} after ${markedMs} ms ("${gone.status?.message}"), Running again once a process attached to the leader`,
    );
  } catch (err) {
    dumpLogs(procs);
    throw err;
  } finally {
    await Promise.all(attached.map((a) => a.stop(0).catch(() => {})));
    for (const p of [procs.gone, procs.stay]) await p?.kill();
    await cluster.stop();
  }
});
