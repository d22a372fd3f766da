/**
 * Several `k4s server --store etcd://...` processes over one real etcd: one is elected leader
 * through an etcd lease and runs the controllers; when it is SIGKILLed, another takes over
 * within the lease time, runs a scale issued after the kill to its end, and no write any server
 * acknowledged is lost.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { createClient, type K4sClient } from "../src/client/index.js";
import { isLeader, startCluster, LEASE_TTL, type ClusterServer } from "./cluster-harness.js";
import { dumpLogs, eventually, runK4s, spawnK4s, startTestServer, WORKERS_SDK_JS, type Proc } from "./helpers.js";

/** The code of a call that succeeded. */
const OK = 0;

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
    await assert.rejects(c.client.request("ha-rs-nothing", "x", { timeoutMs: 30_000 }), /\[not_found\] no container or service named "ha-rs-nothing"/);
    // Every server lists the same members: one leader, and each server holding its own local
    // host's session (a standby relays its host's stream to the leader).
    const expected = Object.fromEntries(servers.map((s) => [s.address, `${s === leader ? "leader" : "standby"} host/local-${portOf(s)}`]));
    const sameAs = (want: Record<string, string>) => (got: Record<string, string>) => JSON.stringify(Object.entries(got).sort()) === JSON.stringify(Object.entries(want).sort());
    // Each server sees the others' session records through its own watch of etcd: each in its time.
    for (const [name, s] of [["b", b], ["c", c]] as const) {
      await eventually(async () => sameAs(expected)(await membership(s)), 30_000, `the membership on ${name}`).catch(async () => assert.deepEqual(await membership(s), expected));
    }
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

/**
 * A worker module (plain JavaScript, as `k4s worker --module` loads) that appends every message
 * it runs to the file named by K4S_TEST_RECORD ("send ID" or "request ID", one a line) and echoes
 * requests 20 ms later, so that a test reads what ran, how often.
 */
function recordingModule(): string {
  const path = join(mkdtempSync(join(tmpdir(), "k4s-record-")), "recorder.mjs");
  writeFileSync(
    path,
    `import { appendFileSync } from "node:fs";
import { defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};
export const recorder = defineWorker(async (ctx) => {
  await ctx.handle(async (msg) => {
    appendFileSync(process.env.K4S_TEST_RECORD, (msg.expectsReply ? "request " : "send ") + msg.value.id + "\\n");
    if (!msg.expectsReply) return undefined;
    // A request stays in the worker's hands a moment: some are there when the server dies.
    await new Promise((resolve) => setTimeout(resolve, 20));
    return "ECHO: " + JSON.stringify(msg.value);
  });
});
`,
  );
  return path;
}

test("cluster failover: SIGKILL the server holding a host's session (not the leader) with requests and sends in flight through another server; the host moves on, its containers are resumed (not restarted), every request settles within its deadline and runs at most once, every accepted send is delivered but those the dead server held in memory (counted)", async () => {
  const cluster = await startCluster(3, { flags: ["--no-local-worker"] });
  const { leader, standbys: others } = cluster;
  const [via, holder] = others as [ClusterServer, ClusterServer];
  let host: Proc | undefined;
  let client: K4sClient | undefined;
  const ac = new AbortController();
  const record = join(mkdtempSync(join(tmpdir(), "k4s-ran-")), "ran.log");
  writeFileSync(record, "");
  try {
    // The host is given every server, the one that will die first; the client knows only another one.
    const all = [holder, leader, via].map((s) => s.address);
    host = spawnK4s(["worker", "--server", all.join(","), "--name", "fo-host", "--module", `rec=${recordingModule()}`], { K4S_TEST_RECORD: record });
    await eventually(async () => (await via.client.servers()).find((s) => s.address === holder.address)?.sessions.some((x) => x.name === "fo-host"), 30_000, "fo-host held by its first server");
    const rs = RS.replace(/ha-rs/g, "fo-rs").replace(/app: ha/g, "app: fo").replace("{module: workers, function: echo_worker}", "{module: rec, function: recorder}");
    // fo-burst takes a burst of sends just before the kill, more than its worker drains at once.
    await others[0]!.client.apply(
      rs + "---\nkind: Service\nmetadata: {name: fo-svc}\nspec: {matchLabels: {app: fo}}\n---\nkind: Container\nmetadata: {name: fo-burst}\nspec: {module: rec, function: recorder}\n",
    );
    await eventually(async () => (await others[0]!.client.get("ReplicaSet", "fo-rs")).status?.readyReplicas === 2, 60_000, "2 ready replicas");
    await eventually(async () => (await others[0]!.client.get("Container", "fo-burst")).status?.ready, 60_000, "fo-burst ready");
    const containersNow = async () =>
      (await via.client.list("Container")).items.map((c) => `${c.metadata!.name} ${c.metadata!.uid} restarts=${c.status?.restarts ?? 0} ${c.status?.phase}`).sort();
    const before = await containersNow();
    client = createClient({ address: via.address });
    assert.equal(await client.request("fo-svc", { id: "r-first" }), 'ECHO: {"id":"r-first"}');
    // A watch through the failover client, resumed across the kill.
    const watch = client.watch({ kind: "Service", resume: { giveUpAfterMs: 60_000 }, signal: ac.signal });
    const seen: string[] = [];
    const watching = (async () => {
      for await (const ev of watch) seen.push(`${ev.type} ${ev.object.metadata!.name}`);
    })().catch(() => {});

    // Requests in flight through the failover client while the holder dies.
    const DEADLINE_MS = 5000;
    // A send is accepted or refused UNAVAILABLE: one waiting for its container's new place on a
    // loaded machine must not run into its deadline first (that would be DEADLINE_EXCEEDED).
    const SEND_DEADLINE_MS = 30_000;
    const settled: { id: string; code: number; ms: number }[] = [];
    let requesting = true;
    const requester = async (n: number) => {
      for (let i = 0; requesting; i++) {
        const started = Date.now();
        const id = `r${n}-${i}`;
        const code = await client!.request("fo-svc", { id }, { timeoutMs: DEADLINE_MS }).then(
          () => OK,
          (e: unknown) => ConnectError.from(e).code,
        );
        settled.push({ id, code, ms: Date.now() - started });
        if (code !== OK) await new Promise((r) => setTimeout(r, 100));
      }
    };
    const requesters = [0, 1, 2, 3].map(requester);
    // Sends through the same server meanwhile: each is answered (accepted, or UNAVAILABLE for the caller to send again).
    const sends: { id: string; code: number; startedAt: number }[] = [];
    const sender = async (n: number) => {
      for (let i = 0; requesting; i++) {
        const id = `s${n}-${i}`;
        const startedAt = Date.now();
        const code = await client!.send("fo-svc", { id }, { timeoutMs: SEND_DEADLINE_MS }).then(() => OK, (e: unknown) => ConnectError.from(e).code);
        sends.push({ id, code, startedAt });
        // Paced, so that the requests do not queue behind a flood of sends but are in the worker's hands.
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    const senders = [0, 1, 2, 3].map(sender);
    const ok = () => settled.filter((r) => r.code === OK).length;
    await eventually(() => ok() >= 20, 30_000, "requests under way");
    const BURST = 300;
    const burst = Array.from({ length: BURST }, (_, i) => {
      const startedAt = Date.now();
      return client!.send("fo-burst", { id: `b${i}` }, { timeoutMs: SEND_DEADLINE_MS }).then(
        () => ({ id: `b${i}`, code: OK, startedAt }),
        (e: unknown) => ({ id: `b${i}`, code: ConnectError.from(e).code, startedAt }),
      );
    });
    const burstAnswered: { id: string; code: number; startedAt: number }[] = [];
    for (const b of burst) void b.then((x) => burstAnswered.push(x));
    await eventually(() => burstAnswered.length >= BURST / 3, 30_000, "the burst under way");
    const killedAt = Date.now();
    await holder.proc.kill("SIGKILL");
    // From here on nothing reaches the holder: whatever is accepted is in another server's hands.
    const deadAt = Date.now();
    // The host moved on to another server, which holds its session now.
    const next = (await eventually(
      async () => (await via.client.servers()).find((s) => s.address !== holder.address && s.sessions.some((x) => x.name === "fo-host")),
      30_000,
      "the host's session on another server",
    ))!;
    const hostMovedMs = Date.now() - killedAt;
    const okBefore = ok();
    await eventually(() => ok() >= okBefore + 20, 60_000, "requests answered through the new holder");
    const servedAgainMs = Date.now() - killedAt;
    await eventually(() => sends.filter((x) => x.code === OK && x.startedAt > deadAt).length >= 20, 60_000, "sends accepted after the kill");
    requesting = false;
    await Promise.all([...requesters, ...senders]);
    sends.push(...(await Promise.all(burst)));
    assert.ok(sends.every((x) => x.code === OK || x.code === Code.Unavailable), `every send accepted or refused UNAVAILABLE: ${[...new Set(sends.map((x) => x.code))]}`);
    assert.ok(
      settled.every((r) => r.code === OK || r.code === Code.Unavailable || r.code === Code.DeadlineExceeded),
      `every request answered, failed UNAVAILABLE or past its deadline: ${[...new Set(settled.map((r) => Code[r.code]))]}`,
    );
    // The same containers, running, never restarted.
    await eventually(async () => JSON.stringify(await containersNow()) === JSON.stringify(before), 30_000, "the containers resumed").catch(async () =>
      assert.deepEqual(await containersNow(), before),
    );

    // What the workers ran: every accepted send at least once, but those the holder had accepted
    // and held in its memory when it died (started before it was dead); no request twice.
    const accepted = sends.filter((x) => x.code === OK);
    const ran = () => readFileSync(record, "utf8").split("\n").filter(Boolean);
    const ranSends = () => new Set(ran().filter((l) => l.startsWith("send ")).map((l) => l.slice(5)));
    const afterDeath = accepted.filter((x) => x.startedAt > deadAt);
    await eventually(() => afterDeath.every((x) => ranSends().has(x.id)), 30_000, "the sends accepted after the kill delivered").catch(() => {});
    const delivered = ranSends();
    const lost = accepted.filter((x) => !delivered.has(x.id));
    assert.deepEqual(
      lost.filter((x) => x.startedAt > deadAt).map((x) => x.id),
      [],
      "a send accepted once the holder was dead is delivered (only the dead holder's memory loses sends)",
    );
    const requestsRan = ran()
      .filter((l) => l.startsWith("request "))
      .map((l) => l.slice(8));
    const twice = requestsRan.filter((id, i) => requestsRan.indexOf(id) !== i);
    assert.deepEqual(twice, [], "no request ran twice");
    const answered = settled.filter((r) => r.code === OK).map((r) => r.id);
    assert.deepEqual(
      answered.filter((id) => !requestsRan.includes(id)),
      [],
      "every answered request ran",
    );
    const slowest = Math.max(...settled.map((r) => r.ms));
    // The watch resumed through another server and sees a change made after the kill.
    await via.client.apply("kind: Service\nmetadata: {name: after-kill}\nspec: {matchLabels: {app: fo}}\n");
    await eventually(() => seen.includes("ADDED after-kill"), 30_000, "the resumed watch");
    const failed = settled.filter((r) => r.code !== OK);
    console.log(
      `# server holding the host SIGKILLed (not the leader): host on ${next.address === leader.address ? "the leader" : "the other server"} after ${hostMovedMs} ms, requests through the third answered again after ${servedAgainMs} ms; ` +
        `${settled.length} requests settled (${failed.length} failed: ${failed.filter((r) => r.code === Code.Unavailable).length} UNAVAILABLE, ${failed.filter((r) => r.code === Code.DeadlineExceeded).length} DEADLINE_EXCEEDED; ` +
        `slowest ${slowest} ms, ${settled.filter((r) => r.ms > DEADLINE_MS).length} past the ${DEADLINE_MS} ms deadline), ${requestsRan.length} requests ran, none twice; ` +
        `${sends.length} sends sent, ${accepted.length} accepted (${sends.length - accepted.length} UNAVAILABLE), ${accepted.filter((x) => delivered.has(x.id)).length} delivered, ` +
        `${lost.length} lost in the dead holder's memory (all sent before it died; ${lost.filter((x) => x.id.startsWith("b")).length} of them of a burst of ${BURST} to fo-burst just before the kill; ${lost.slice(0, 8).map((x) => x.id).join(" ") || "none"}${lost.length > 8 ? " ..." : ""}); containers not restarted`,
    );
    ac.abort();
    await watching;
  } catch (err) {
    dumpLogs({ host, ...Object.fromEntries(cluster.servers.map((s, i) => [`server${i}`, s.proc])) });
    throw err;
  } finally {
    ac.abort();
    await client?.close();
    await host?.kill();
    await cluster.stop();
  }
});
