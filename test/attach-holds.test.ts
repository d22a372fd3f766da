/**
 * Attaching in a cluster, through real `k4s server` processes over one real etcd and raw attach
 * sessions: a server holds a container for a process attaching to it only while that attach is
 * on (the holds end when it attached, was refused, or the container went: the server's
 * k4s_attach_holds gauge goes back to 0); and several processes attaching one container to the
 * same server at once: exactly one wins, the others are refused (ALREADY_EXISTS while the
 * winner's attach is on), and the winner's cluster-wide claim stands (a process attaching on
 * another server is refused).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code } from "@connectrpc/connect";
import { startCluster, type ClusterServer } from "./cluster-harness.js";
import { dumpLogs, eventually } from "./helpers.js";
import { openRawPeer, type RawPeer } from "./raw-peer.js";

/** The value of a gauge of a server's /metrics. */
async function gauge(s: ClusterServer, name: string): Promise<number> {
  const url = /metrics on (\S+)/.exec(s.proc.stdout())![1]!;
  const text = await (await fetch(url)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} in ${url}`);
  return Number(line.slice(name.length + 1));
}

test("attach holds: a server holds a container for an attach only while it is on (attached, refused, or the container deleted: the holds end); same-server attach race: exactly one wins, the others are refused, its claim stands", async () => {
  const cluster = await startCluster(2, { flags: ["--no-local-worker", "--metrics-port", "0"] });
  const { leader } = cluster;
  const standby = cluster.standbys[0] as ClusterServer;
  const peers: RawPeer[] = [];
  const attachTo = (s: ClusterServer, container: string, host: string) => {
    const p = openRawPeer(s.address, { case: "attach", value: { container, host } });
    peers.push(p);
    return p;
  };
  try {
    await eventually(() => /metrics on \S+/.test(standby.proc.stdout()), 30_000, "the standby's metrics");
    const names = Array.from({ length: 6 }, (_, i) => `hold-${i}`);
    await standby.client.apply(
      [...names, "hold-elsewhere", "race-x"].map((n) => `kind: Container\nmetadata: {name: ${n}}\nspec: {}\n`).join("---\n"),
    );
    // Attached on the standby (the leader held them before: the standby holds them for the
    // attach), then deleted at once.
    for (const name of names) {
      const p = attachTo(standby, name, `proc-${name}`);
      await p.next("welcome");
      await standby.client.delete("Container", name);
      const end = await p.ended;
      assert.equal(end?.code, Code.NotFound, `${name}: ${end?.message}`);
    }
    // Attached on the leader; a process attaching it on the standby is refused (claimed there).
    await attachTo(leader, "hold-elsewhere", "proc-leader").next("welcome");
    const refused = await attachTo(standby, "hold-elsewhere", "proc-standby").ended;
    assert.equal(refused?.code, Code.Unavailable, refused?.message);
    assert.match(refused!.rawMessage, /already attached by a process on server /);
    const holdsAfter = await gauge(standby, "k4s_attach_holds");
    await eventually(async () => (await gauge(standby, "k4s_attach_holds")) === 0, 30_000, "no attach holds left on the standby");

    // Four processes attach race-x to the standby at once: one wins.
    const racers = ["r0", "r1", "r2", "r3"].map((h) => ({ h, p: attachTo(standby, "race-x", h) }));
    const outcomes = await Promise.all(
      racers.map(({ h, p }) =>
        p.next("welcome", undefined, 30_000).then(
          () => ({ h, code: 0, message: "" }),
          () => p.ended.then((e) => ({ h, code: e?.code ?? -1, message: e?.rawMessage ?? "ended" })),
        ),
      ),
    );
    const winners = outcomes.filter((o) => o.code === 0);
    assert.equal(winners.length, 1, `exactly one attach wins: ${JSON.stringify(outcomes)}`);
    const losers = outcomes.filter((o) => o.code !== 0);
    for (const l of losers) {
      if (l.code === Code.AlreadyExists) assert.match(l.message, /container "race-x" is being attached by another process \("r\d"\) on this server right now/);
      else assert.equal(l.code, Code.FailedPrecondition, `a loser: ${JSON.stringify(l)}`);
      assert.ok(l.code === Code.AlreadyExists || /already attached by "r\d"/.test(l.message), JSON.stringify(l));
    }
    // The winner's claim stands cluster-wide: a process attaching on the leader is refused.
    const elsewhere = await attachTo(leader, "race-x", "r-leader").ended;
    assert.equal(elsewhere?.code, Code.Unavailable, elsewhere?.message);
    assert.match(elsewhere!.rawMessage, new RegExp(`already attached by a process on server ${standby.address.replace(/\./g, "\\.")}`));
    // The session records reach etcd after the attaches' answers (and the deleted ones' go after
    // their ends): the listing is looked at until it settles.
    const sessionsNow = async () => (await standby.client.servers()).find((s) => s.address === standby.address)?.sessions.map((s) => s.name);
    await eventually(async () => JSON.stringify(await sessionsNow()) === JSON.stringify(["race-x"]), 30_000, "the standby's sessions").catch(async () =>
      assert.deepEqual(await sessionsNow(), ["race-x"], "the winner's attached session on the standby, and only it"),
    );
    console.log(`# attach holds on the standby right after the attaches: ${holdsAfter}, then 0; race of 4: winner ${winners[0]!.h}, losers ${losers.map((l) => `${l.h}:${Code[l.code]}`).join(" ")}`);
  } catch (err) {
    dumpLogs(Object.fromEntries(cluster.servers.map((s, i) => [`server ${i} ${s.address}`, s.proc])));
    throw err;
  } finally {
    for (const p of peers) p.cancel();
    await cluster.stop();
  }
});
