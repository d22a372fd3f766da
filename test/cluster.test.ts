/**
 * Several `k4s server --store etcd://...` processes over one real etcd: one is elected leader
 * through an etcd lease and runs the controllers; when it is SIGKILLed, another takes over
 * within the lease time, runs a scale issued after the kill to its end, and no write any server
 * acknowledged is lost.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { createClient, type K4sClient } from "../src/client/index.js";
import { isLeader, startCluster, LEASE_TTL, type ClusterServer } from "./cluster-harness.js";
import { eventually, runK4s, spawnK4s, startTestServer, type Proc } from "./helpers.js";

const portOf = (s: ClusterServer) => s.address.split(":").pop();

/** The servers as `client.servers()` of one server lists them: address -> role and held sessions. */
async function membership(s: ClusterServer): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const m of await s.client.servers()) {
    out[m.address] = `${m.leader ? "leader" : "standby"} ${m.sessions.map((x) => `${x.kind}/${x.name}`).sort().join(",")}`.trim();
  }
  return out;
}

const RS = `kind: ReplicaSet
metadata: {name: ha-rs}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: ha}}
    spec: {module: workers, function: echo_worker}
`;

test("cluster: SIGKILL the leader; another server runs the controllers within the lease time, a scale issued after the kill completes, no acknowledged write is lost", async () => {
  const cluster = await startCluster(3);
  const { servers, leader } = cluster;
  try {
    assert.equal(servers.filter(isLeader).length, 1, "exactly one leader");
    const [b, c] = cluster.standbys as [ClusterServer, ClusterServer];
    // A standby serves the resource API; its status comes from the leader's controllers.
    await b.client.apply(RS);
    await eventually(async () => (await b.client.get("ReplicaSet", "ha-rs")).status?.readyReplicas === 2, 60_000, "2 ready replicas");
    // A standby routes messages to the leader, whose router answers.
    await assert.rejects(c.client.request("ha-rs-nothing", "x", { timeoutMs: 2000 }), /\[not_found\] no container or service named "ha-rs-nothing"/);
    // Every server lists the same members: one leader, and each server holding its own local
    // host's session (a standby relays its host's stream to the leader).
    const expected = Object.fromEntries(servers.map((s) => [s.address, `${s === leader ? "leader" : "standby"} host/local-${portOf(s)}`]));
    const sameAs = (want: Record<string, string>) => (got: Record<string, string>) => JSON.stringify(Object.entries(got).sort()) === JSON.stringify(Object.entries(want).sort());
    await eventually(async () => sameAs(expected)(await membership(b)), 10_000, "the membership on b").catch(async () => assert.deepEqual(await membership(b), expected));
    assert.deepEqual(await membership(c), expected);
    const table = await runK4s(["get", "servers", "--server", b.address]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`^ADDRESS +ROLE +SESSIONS +AGE +HELD\n`));
    assert.match(table.stdout, new RegExp(`\n${leader.address} +leader +1 +\\S+ +host/local-${portOf(leader)}\n`));
    assert.match(table.stdout, new RegExp(`\n${b.address} \\(this\\) +standby +1 +\\S+ +host/local-${portOf(b)}`));

    // Writes acknowledged through every server while the leader dies.
    const acked: string[] = [];
    let writing = true;
    const writer = async (s: ClusterServer, tag: string) => {
      for (let i = 0; writing; i++) {
        const name = `w-${tag}-${i}`;
        try {
          await s.client.apply(`kind: Service\nmetadata: {name: ${name}}\nspec: {matchLabels: {app: ha}}\n`);
          acked.push(name);
        } catch {
          if (s === leader) return;
        }
      }
    };
    const writers = [writer(leader, "a"), writer(b, "b"), writer(c, "c")];
    await eventually(() => acked.length >= 20, 30_000, "writes under way");
    const killedAt = Date.now();
    await leader.proc.kill("SIGKILL");
    await b.client.scale("ha-rs", 4);
    const next = (await eventually(() => [b, c].find(isLeader), 30_000, "a new leader"))!;
    const takeoverMs = Date.now() - killedAt;
    await eventually(
      async () => {
        const rs = await c.client.get("ReplicaSet", "ha-rs");
        return rs.status?.replicas === 4 && rs.status.readyReplicas === 4;
      },
      90_000,
      "the scale to 4 ready replicas",
    );
    const scaledMs = Date.now() - killedAt;
    writing = false;
    await Promise.all(writers);
    // The dead leader dropped out with its lease; each server holds its own local host again.
    const after = Object.fromEntries([b, c].map((s) => [s.address, `${s === next ? "leader" : "standby"} host/local-${portOf(s)}`]));
    await eventually(async () => sameAs(after)(await membership(c)), 30_000, "the membership after the kill").catch(async () => assert.deepEqual(await membership(c), after));
    const stored = new Set((await next.client.list("Service")).items.map((s) => s.metadata!.name));
    const lost = acked.filter((n) => !stored.has(n));
    assert.deepEqual(lost, [], "every acknowledged write is stored");
    console.log(
      `# leader SIGKILLed: new leader ${next.address} elected after ${takeoverMs} ms (lease TTL ${LEASE_TTL} s); ` +
        `scale to 4 ready after ${scaledMs} ms; ${acked.length} acknowledged writes, 0 lost`,
    );
  } finally {
    await cluster.stop();
  }
});

test("k4s get servers on a server over SQLite: a cluster of one, its own leader, with the sessions it holds", async () => {
  const server = await startTestServer();
  const host = spawnK4s(["worker", "--server", server.address, "--name", "solo-host"]);
  try {
    await eventually(async () => (await runK4s(["get", "servers", "--server", server.address])).stdout.includes("host/solo-host"), 30_000, "the host's session");
    const json = await runK4s(["get", "servers", "-o", "json", "--server", server.address]);
    const list = JSON.parse(json.stdout) as { items: { address: string; leader: boolean; self: boolean; sessions: { kind: string; name: string }[] }[] };
    assert.equal(list.items.length, 1);
    assert.equal(list.items[0]!.address, server.address);
    assert.equal(list.items[0]!.leader, true);
    assert.equal(list.items[0]!.self, true);
    assert.deepEqual(list.items[0]!.sessions.map((x) => `${x.kind}/${x.name}`), ["host/solo-host"]);
  } finally {
    await host.kill();
    await server.stop();
  }
});

test("cluster failover: SIGKILL the server holding a host's session (not the leader) with requests and sends in flight through another server; the host moves on, its containers are resumed (not restarted), every request settles within its deadline, every send is answered", async () => {
  const cluster = await startCluster(3, { flags: ["--no-local-worker"] });
  const { leader, standbys: others } = cluster;
  const [via, holder] = others as [ClusterServer, ClusterServer];
  let host: Proc | undefined;
  let client: K4sClient | undefined;
  const ac = new AbortController();
  try {
    // The host is given every server, the one that will die first; the client knows only another one.
    const all = [holder, leader, via].map((s) => s.address);
    host = spawnK4s(["worker", "--server", all.join(","), "--name", "fo-host"]);
    await eventually(async () => (await via.client.servers()).find((s) => s.address === holder.address)?.sessions.some((x) => x.name === "fo-host"), 30_000, "fo-host held by its first server");
    await others[0]!.client.apply(RS.replace(/ha-rs/g, "fo-rs").replace(/app: ha/g, "app: fo") + "---\nkind: Service\nmetadata: {name: fo-svc}\nspec: {matchLabels: {app: fo}}\n");
    await eventually(async () => (await others[0]!.client.get("ReplicaSet", "fo-rs")).status?.readyReplicas === 2, 60_000, "2 ready replicas");
    const containersNow = async () =>
      (await via.client.list("Container")).items.map((c) => `${c.metadata!.name} ${c.metadata!.uid} restarts=${c.status?.restarts ?? 0} ${c.status?.phase}`).sort();
    const before = await containersNow();
    client = createClient({ address: via.address });
    assert.equal(await client.request("fo-svc", { x: 0 }), 'ECHO: {"x":0}');
    // A watch through the failover client, resumed across the kill.
    const watch = client.watch({ kind: "Service", resume: { giveUpAfterMs: 60_000 }, signal: ac.signal });
    const seen: string[] = [];
    const watching = (async () => {
      for await (const ev of watch) seen.push(`${ev.type} ${ev.object.metadata!.name}`);
    })().catch(() => {});

    // Requests in flight through the failover client while the leader dies.
    const DEADLINE_MS = 5000;
    const settled: { ok: boolean; ms: number }[] = [];
    let requesting = true;
    const requester = async (n: number) => {
      for (let i = 0; requesting; i++) {
        const started = Date.now();
        const ok = await client!.request("fo-svc", { n, i }, { timeoutMs: DEADLINE_MS }).then(
          () => true,
          () => false,
        );
        settled.push({ ok, ms: Date.now() - started });
        if (!ok) await new Promise((r) => setTimeout(r, 100));
      }
    };
    const requesters = [0, 1, 2, 3].map(requester);
    // Sends through the same server meanwhile: each is answered (accepted, or UNAVAILABLE for the caller to send again).
    const sendCodes: number[] = [];
    const sender = (async () => {
      for (let i = 0; requesting; i++) {
        sendCodes.push(await client!.send("fo-svc", { s: i }, { timeoutMs: DEADLINE_MS }).then(() => 0, (e: unknown) => ConnectError.from(e).code));
      }
    })();
    await eventually(() => settled.filter((r) => r.ok).length >= 20, 30_000, "requests under way");
    const killedAt = Date.now();
    await holder.proc.kill("SIGKILL");
    // The host moved on to another server, which holds its session now.
    const next = (await eventually(
      async () => (await via.client.servers()).find((s) => s.address !== holder.address && s.sessions.some((x) => x.name === "fo-host")),
      30_000,
      "the host's session on another server",
    ))!;
    const hostMovedMs = Date.now() - killedAt;
    const okBefore = settled.filter((r) => r.ok).length;
    await eventually(() => settled.filter((r) => r.ok).length >= okBefore + 20, 60_000, "requests answered through the new leader");
    const servedAgainMs = Date.now() - killedAt;
    requesting = false;
    await Promise.all([...requesters, sender]);
    assert.ok(sendCodes.every((c) => c === 0 || c === Code.Unavailable), `every send accepted or refused UNAVAILABLE: ${[...new Set(sendCodes)]}`);
    // The same containers, running, never restarted.
    await eventually(async () => JSON.stringify(await containersNow()) === JSON.stringify(before), 30_000, "the containers resumed").catch(async () =>
      assert.deepEqual(await containersNow(), before),
    );
    const slowest = Math.max(...settled.map((r) => r.ms));
    assert.ok(slowest < DEADLINE_MS + 5000, `every request settled within its deadline (slowest ${slowest} ms)`);
    // The watch resumed through another server and sees a change made after the kill.
    await via.client.apply("kind: Service\nmetadata: {name: after-kill}\nspec: {matchLabels: {app: fo}}\n");
    await eventually(() => seen.includes("ADDED after-kill"), 30_000, "the resumed watch");
    const failed = settled.filter((r) => !r.ok).length;
    console.log(
      `# server holding the host SIGKILLed (not the leader): host on ${next.address === leader.address ? "the leader" : "the other server"} after ${hostMovedMs} ms, requests through the third answered again after ${servedAgainMs} ms; ` +
        `${settled.length} requests settled (${failed} failed, slowest ${slowest} ms, deadline ${DEADLINE_MS} ms); ${sendCodes.length} sends answered (${sendCodes.filter((c) => c !== 0).length} UNAVAILABLE); containers not restarted`,
    );
    ac.abort();
    await watching;
  } finally {
    ac.abort();
    await client?.close();
    await host?.kill();
    await cluster.stop();
  }
});
