/**
 * k4s servers over a real three-member etcd when etcd fails: one member SIGKILLed (etcd keeps its
 * quorum, the servers keep serving), and two of three (no quorum: writes fail with a clear status,
 * the leader stands down, and everything works again once the members are back).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ConnectError, Code } from "@connectrpc/connect";
import { createClient } from "../src/client/index.js";
import { startCluster, type ClusterServer } from "./cluster-harness.js";
import { dumpLogs, eventually, spawnK4s, type Proc } from "./helpers.js";

const RS = `kind: ReplicaSet
metadata: {name: ef-rs}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: ef}}
    spec: {module: workers, function: echo_worker}
---
kind: Service
metadata: {name: ef-svc}
spec: {matchLabels: {app: ef}}
`;
const service = (name: string) => `kind: Service\nmetadata: {name: ${name}}\nspec: {matchLabels: {app: none}}\n`;

/** Prints what each server says of the containers and of the cluster's servers (for a failed test's log). */
async function dumpClusterState(servers: ClusterServer[]): Promise<void> {
  for (const s of servers) {
    const containers = await s.client.list("Container").then(
      (l) => l.items.map((o) => `${o.metadata?.name} ${String((o.status as { phase?: unknown } | undefined)?.phase)} on ${String((o.spec as { host?: unknown } | undefined)?.host ?? "-")}`).join("; "),
      (e: unknown) => String(e),
    );
    const members = await s.client.servers().then(
      (l) => l.map((m) => `${m.address}${m.leader ? " (leader)" : ""} [${m.sessions.map((x) => x.name).join(", ")}]`).join("; "),
      (e: unknown) => String(e),
    );
    const rs = await s.client.get("ReplicaSet", "ef-rs").then((o) => `replicas ${String((o.spec as { replicas?: unknown } | undefined)?.replicas)}, ready ${String((o.status as { readyReplicas?: unknown } | undefined)?.readyReplicas)}`, (e: unknown) => String(e));
    console.log(`# server ${s.address}: containers: ${containers} | servers: ${members} | ef-rs: ${rs}`);
  }
}

/** How many servers said their lease went unrenewed long enough to end their sessions. */
const lapsed = (servers: ClusterServer[]) => servers.filter((s) => /could not renew its lease/.test(s.proc.stderr())).length;

/** What the server said last about its leadership: true while it leads. */
const leadsNow = (s: ClusterServer) => [...s.proc.stdout().matchAll(/k4s server (is the leader|is standing by)/g)].pop()?.[1] === "is the leader";

test("cluster over a three-member etcd: one member SIGKILLed, every server keeps serving writes, watches, messages and scales", async () => {
  const cluster = await startCluster(3, { etcdMembers: 3, flags: ["--no-local-worker"] });
  const { etcd, servers, leader } = cluster;
  let host: Proc | undefined;
  const ac = new AbortController();
  try {
    const [a, b] = cluster.standbys as [ClusterServer, ClusterServer];
    host = spawnK4s(["worker", "--server", [leader, a, b].map((s) => s.address).join(","), "--name", "ef-host"]);
    await a.client.apply(RS);
    await eventually(async () => (await a.client.get("ReplicaSet", "ef-rs")).status?.readyReplicas === 2, 60_000, "2 ready replicas");
    const seen: string[] = [];
    const watching = (async () => {
      for await (const ev of b.client.watch({ kind: "Service", resume: { giveUpAfterMs: 60_000 }, signal: ac.signal })) seen.push(`${ev.type} ${ev.object.metadata!.name}`);
    })().catch(() => {});

    const killedAt = Date.now();
    await etcd.members[0]!.kill("SIGKILL");
    // A write through every server lands (their etcd clients move to a live member).
    const writeMs: number[] = [];
    for (const [i, s] of servers.entries()) {
      await eventually(() => s.client.apply(service(`after-${i}`)).then(() => true), 30_000, `a write through server ${i}`);
      writeMs.push(Date.now() - killedAt);
    }
    await eventually(() => [0, 1, 2].every((i) => seen.includes(`ADDED after-${i}`)), 30_000, "the writes on b's watch");
    // Messages through a standby, and a scale run by the leader's controllers.
    // When the killed member carried the leader's lease, the leadership can move (seen in about
    // one loaded run in three): a request in flight then fails UNAVAILABLE and is not re-sent
    // (at most once), so, as any caller does, it is sent again; every other error fails the test.
    const RETRY = Symbol("retry");
    let answer: unknown = RETRY;
    let retries = -1;
    for (const giveUpAt = Date.now() + 40_000; answer === RETRY; retries++) {
      answer = await a.client.request("ef-svc", "x", { timeoutMs: 20_000 }).catch((err: unknown) => {
        const e = ConnectError.from(err);
        if (e.code !== Code.Unavailable || Date.now() > giveUpAt) throw e;
        return new Promise<typeof RETRY>((resolve) => setTimeout(() => resolve(RETRY), 100));
      });
    }
    assert.equal(answer, "ECHO: x");
    await a.client.scale("ef-rs", 3);
    await eventually(async () => (await b.client.get("ReplicaSet", "ef-rs")).status?.readyReplicas === 3, 60_000, "3 ready replicas");
    const scaledMs = Date.now() - killedAt;
    // What each server last said of its leadership reaches this process in its own time: while a
    // leadership moves, none or two may be seen for a moment.
    await eventually(() => servers.filter(leadsNow).length === 1, 30_000, "one leader at the end").catch(() =>
      assert.equal(servers.filter(leadsNow).length, 1, "one leader at the end"),
    );
    console.log(`# etcd member SIGKILLed: writes through the 3 servers landed after ${writeMs.join(", ")} ms; a request through a standby answered after ${retries} retries; a scale 2 -> 3 was ready ${scaledMs} ms after the kill; ${lapsed(servers)} of 3 servers saw their lease lapse`);
    ac.abort();
    await watching;
  } catch (err) {
    dumpLogs({ ...Object.fromEntries(servers.map((s, i) => [`server ${i}${s === leader ? " (first leader)" : ""} ${s.address}`, s.proc])), "host ef-host": host });
    await dumpClusterState(servers);
    throw err;
  } finally {
    ac.abort();
    await host?.kill();
    await cluster.stop();
  }
});

test("cluster over a three-member etcd that loses its quorum: writes fail with a clear status, the leader stands down, and all works again once the members are back", async () => {
  const cluster = await startCluster(2, { etcdMembers: 3, flags: ["--no-local-worker"] });
  const { etcd, servers, leader } = cluster;
  const other = cluster.standbys[0]!;
  try {
    await leader.client.apply(service("before-loss"));

    const lostAt = Date.now();
    await Promise.all([etcd.members[1]!.kill("SIGKILL"), etcd.members[2]!.kill("SIGKILL")]);
    // The leader cannot renew its lease: it stands down by itself (watched while the writes below wait).
    const stoodDown = eventually(() => !leadsNow(leader), 60_000, "the leader standing down").then(() => Date.now() - lostAt);
    // A write through either server fails; it does not hang, and says what failed.
    const failures: string[] = [];
    for (const s of servers) {
      const c = createClient({ address: s.address, reconnect: false });
      const t0 = Date.now();
      const err = await c.apply(service(`during-loss-${failures.length}`)).then(
        () => assert.fail("a write succeeded without an etcd quorum"),
        (e: unknown) => ConnectError.from(e),
      );
      await c.close();
      assert.ok([Code.Unavailable, Code.DeadlineExceeded].includes(err.code), `write refused UNAVAILABLE or DEADLINE_EXCEEDED, got ${Code[err.code]}: ${err.message}`);
      failures.push(`${Code[err.code]} after ${Date.now() - t0} ms ("${err.rawMessage.slice(0, 120)}")`);
    }
    const stoodDownMs = await stoodDown;

    const backAt = Date.now();
    await Promise.all([etcd.members[1]!.restart(), etcd.members[2]!.restart()]);
    await eventually(() => other.client.apply(service("after-loss")).then(() => true), 60_000, "a write once the quorum is back");
    const writableMs = Date.now() - backAt;
    await eventually(() => servers.some(leadsNow), 60_000, "a leader again");
    const leaderMs = Date.now() - backAt;
    await eventually(() => servers.filter(leadsNow).length === 1, 30_000, "exactly one leader").catch(() =>
      assert.equal(servers.filter(leadsNow).length, 1, "exactly one leader"),
    );
    // What was written before the loss is still there, on both servers.
    for (const s of servers) assert.equal((await s.client.get("Service", "before-loss")).metadata?.name, "before-loss");
    assert.equal((await leader.client.get("Service", "after-loss")).metadata?.name, "after-loss");
    console.log(
      `# etcd quorum lost (2 of 3 members SIGKILLed): writes failed ${failures.join("; ")}; the leader stood down ${stoodDownMs} ms after the loss; ` +
        `members back: writes landed after ${writableMs} ms, a leader after ${leaderMs} ms`,
    );
  } finally {
    await cluster.stop();
  }
});
