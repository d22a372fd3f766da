/**
 * A router on every server: three `k4s server` processes over one real etcd, a worker host
 * connected to C, a client that knows only A. A's router sends the calls over its peer link to
 * C, whose router delivers them to the host; the leader, when it is neither A nor C, sees none of
 * them (its k4s_deliveries_total does not move).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { startCluster, type ClusterServer } from "./cluster-harness.js";
import { dumpLogs, eventually, spawnK4s, type Proc } from "./helpers.js";

/** A server's k4s_deliveries_total, read from its /metrics. */
async function deliveries(s: ClusterServer): Promise<number> {
  const url = /metrics on (\S+)/.exec(s.proc.stdout())![1]!;
  const text = await (await fetch(url)).text();
  const line = text.split("\n").find((l) => l.startsWith("k4s_deliveries_total"));
  return line ? Number(line.split(" ").pop()) : 0;
}

test("cluster spread: a request through A reaches a host on C over one peer hop; the leader (neither A nor C) delivers none of it", async () => {
  const cluster = await startCluster(3, { flags: ["--no-local-worker", "--metrics-port", "0"] });
  const { leader } = cluster;
  let host: Proc | undefined;
  try {
    const [a, c] = cluster.standbys as [ClusterServer, ClusterServer];
    for (const s of cluster.servers) await s.proc.waitFor(/metrics on \S+/, 30_000);
    host = spawnK4s(["worker", "--server", c.address, "--name", "host-on-c"]);
    await eventually(async () => (await a.client.servers()).find((s) => s.address === c.address)?.sessions.some((x) => x.name === "host-on-c"), 30_000, "host-on-c held by C");
    await a.client.apply("kind: Container\nmetadata: {name: spread-echo}\nspec: {module: workers, function: echo_worker}\n");
    await eventually(async () => (await a.client.get("Container", "spread-echo")).status?.ready === true, 60_000, "spread-echo ready");
    assert.equal((await a.client.get("Container", "spread-echo")).status?.host, "host-on-c");
    const before = { leader: await deliveries(leader), a: await deliveries(a), c: await deliveries(c) };
    const N = 50;
    const t0 = Date.now();
    for (let i = 0; i < N; i++) assert.equal(await a.client.request("spread-echo", `m${i}`, { timeoutMs: 20_000 }), `ECHO: m${i}`);
    const perRequestMs = (Date.now() - t0) / N;
    const sends = 20;
    for (let i = 0; i < sends; i++) await a.client.send("spread-echo", `s${i}`);
    await eventually(async () => (await deliveries(c)) - before.c >= N + sends, 30_000, "the sends delivered by C");
    const after = { leader: await deliveries(leader), a: await deliveries(a), c: await deliveries(c) };
    assert.equal(after.leader - before.leader, 0, "the leader delivered none of it");
    assert.equal(after.a - before.a, 0, "A forwarded, C delivered");
    assert.equal(after.c - before.c, N + sends, "C delivered every request and send once");
    console.log(
      `# through A to a host on C (leader ${leader.address} neither): ${N} sequential requests at ${perRequestMs.toFixed(2)} ms each, ${sends} sends; ` +
        `deliveries: leader +${after.leader - before.leader}, A +${after.a - before.a}, C +${after.c - before.c}`,
    );
  } catch (err) {
    dumpLogs(Object.fromEntries(cluster.servers.map((s, i) => [`server ${i}${s === leader ? " (leader)" : ""} ${s.address}`, s.proc])));
    throw err;
  } finally {
    await host?.kill();
    await cluster.stop();
  }
});
