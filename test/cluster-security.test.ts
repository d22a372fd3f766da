/**
 * What a cluster's servers believe of each other only: a peer session (whose calls a server
 * answers itself, never forwarding them) is taken from a live member showing its peer
 * credential, never from a client; a host's name is taken over only by a session that proves
 * it with the host's credential.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { Etcd3 } from "etcd3";
import { HOST_CREDENTIAL_KEY } from "../src/server/messaging/host-credentials.js";
import { startCluster, type ClusterServer, type TestCluster } from "./cluster-harness.js";
import { eventually, selfSignedCertificate, spawnK4s, testCa, type Proc } from "./helpers.js";
import { openRawPeer } from "./raw-peer.js";

test("cluster security: a client's k4s-peer header is refused (PERMISSION_DENIED without a valid peer credential, UNAVAILABLE from a server that is no member now), a real credential makes a peer session; a host that did not prove its name cannot take it from another server's host", async () => {
  const cluster = await startCluster(2, { flags: ["--no-local-worker"] });
  const { etcd, leader } = cluster;
  const standby = cluster.standbys[0]!;
  let host: Proc | undefined;
  try {
    const hello = { case: "hello", value: { role: "client", name: "peer-impostor" } } as const;
    // What only a server can make (it reads the key from etcd, which no API shows): the peer
    // credential of an address that is no member of the cluster.
    const etcdClient = new Etcd3({ hosts: etcd.endpoints });
    const key = await etcdClient.get(HOST_CREDENTIAL_KEY).buffer();
    etcdClient.close();
    assert.ok(key, "the servers keep their key in etcd");
    const peerCredential = (address: string) => createHmac("sha256", key).update(`peer:${address}`).digest("base64url");
    const gone = "127.0.0.1:1";
    const attempts: Record<string, Record<string, string>> = {
      "no credential": { "k4s-peer": standby.address },
      "a forged credential": { "k4s-peer": standby.address, "k4s-peer-credential": "bm90LWEtcmVhbC1jcmVkZW50aWFsLWF0LWFsbC0wMTIzNDU2Nzg5" },
      "an empty credential": { "k4s-peer": standby.address, "k4s-peer-credential": "" },
    };
    for (const [what, headers] of Object.entries(attempts)) {
      for (const target of [leader, standby]) {
        const peer = openRawPeer(target.address, hello, headers);
        const err = await peer.ended;
        assert.equal(err?.code, Code.PermissionDenied, `${what} on ${target === leader ? "the leader" : "the standby"}: ${err?.message ?? "accepted"}`);
        assert.match(err!.rawMessage, /the k4s-peer header is for the servers of this cluster/);
        assert.equal(peer.pending("welcome").length, 0, `${what}: no welcome`);
      }
    }
    // A valid credential of a server that is no member now (its lease lapsed while etcd failed
    // over, or it left) is refused UNAVAILABLE: that server tries again once it joined again.
    for (const target of [leader, standby]) {
      const peer = openRawPeer(target.address, hello, { "k4s-peer": gone, "k4s-peer-credential": peerCredential(gone) });
      const err = await peer.ended;
      assert.equal(err?.code, Code.Unavailable, `a valid credential of a server that is no member: ${err?.message ?? "accepted"}`);
      assert.match(err!.rawMessage, /server "127\.0\.0\.1:1" is not a live member of this cluster now/);
    }
    // The same form of credential, made for the standby's address, is believed: so the one above
    // was refused for naming no member, not for its form. Only a client session may carry it.
    const withKey = openRawPeer(leader.address, hello, { "k4s-peer": standby.address, "k4s-peer-credential": peerCredential(standby.address) });
    await withKey.next("welcome", undefined, 30_000);
    withKey.cancel();
    const asHost = openRawPeer(leader.address, { case: "hello", value: { name: "peer-host", capacity: 1 } }, { "k4s-peer": standby.address, "k4s-peer-credential": peerCredential(standby.address) });
    assert.equal((await asHost.ended)?.code, Code.InvalidArgument, "a peer session is a client's");

    // A host on the standby runs a container; a session on the leader claiming its name without
    // its credential does not take it over: the standby's session stays the one in force, the
    // impostor's is ended, and the container keeps running where it was, never restarted.
    host = spawnK4s(["worker", "--server", standby.address, "--name", "host-s"]);
    const held = async () => Object.fromEntries((await leader.client.servers()).map((s) => [s.address, s.sessions.map((x) => x.name).sort().join(",")]));
    await eventually(async () => (await held())[standby.address] === "host-s", 30_000, "host-s held by the standby");
    await leader.client.apply("kind: Container\nmetadata: {name: sec-echo}\nspec: {module: workers, function: echo_worker}\n");
    await eventually(async () => (await leader.client.get("Container", "sec-echo")).status?.ready === true, 60_000, "sec-echo ready");
    const before = await leader.client.get("Container", "sec-echo");
    const impostor = openRawPeer(leader.address, { case: "hello", value: { name: "host-s", modules: ["workers"], capacity: 10 } });
    await impostor.next("welcome", undefined, 30_000);
    const ended = await impostor.ended;
    assert.equal(ended?.code, Code.AlreadyExists, `the impostor's session ended: ${ended?.message ?? "still open"}`);
    assert.equal(impostor.pending("assign").length, 0, "nothing was assigned to the impostor");
    assert.equal(await leader.client.request("sec-echo", "still here", { timeoutMs: 20_000 }), "ECHO: still here");
    const after = await leader.client.get("Container", "sec-echo");
    assert.deepEqual([after.metadata?.uid, after.status?.restarts, after.status?.host], [before.metadata?.uid, before.status?.restarts, "host-s"]);
    assert.equal((await held())[standby.address], "host-s");

    // A call forwarded to a server that does not deliver the container (the sender's view of
    // where it is was stale) is refused before acceptance, UNAVAILABLE, so the sender routes it
    // again; never queued here, where no worker of it will ever come (a send: never delivered).
    const stale = openRawPeer(leader.address, hello, { "k4s-peer": standby.address, "k4s-peer-credential": peerCredential(standby.address) });
    await stale.next("welcome", undefined, 30_000);
    stale.send({ case: "call", value: { id: 1n, target: "sec-echo", data: Buffer.from("r"), expectsReply: true, timeoutMs: 5_000 } });
    stale.send({ case: "call", value: { id: 2n, target: "sec-echo", data: Buffer.from("s"), expectsReply: false } });
    const refused: string[] = [];
    for (const id of [1n, 2n]) {
      const r = await stale.next("callResult", (x) => x.id === id, 30_000);
      assert.equal(r.error?.code, Code.Unavailable, `forwarded call ${id} to a server that does not hold sec-echo: ${r.error?.message ?? "accepted"}`);
      assert.match(r.error!.message, new RegExp(`container "sec-echo" is not held by server ${leader.address.replace(/\./g, "\\.")} \\(server ${standby.address.replace(/\./g, "\\.")} delivers it\\)`));
      refused.push(r.error!.message);
    }
    stale.cancel();
    console.log(`# k4s-peer header: ${Object.keys(attempts).length} forged forms refused PERMISSION_DENIED on both servers, a real credential of no member UNAVAILABLE; an unproven claim of host-s on the leader ended ("${ended?.rawMessage}"), sec-echo not moved; a request and a send forwarded to the server not holding it refused ("${refused[0]}")`);
  } finally {
    await host?.kill();
    await cluster.stop();
  }
});

test("cluster TLS: each server has a certificate of its own, signed by the cluster's CA (--tls-ca); the peer links verify it: a request through the leader reaches a host on the standby, and a server whose certificate the CA did not sign is not trusted", async () => {
  const ca = testCa();
  const caPem = readFileSync(ca.caFile);
  const tlsFlags = (name: string) => {
    const { certFile, keyFile } = ca.issue(name);
    return ["--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", ca.caFile];
  };
  const cluster = await startCluster(2, { flags: ["--no-local-worker"], flagsOf: (i) => tlsFlags(`server-${i}`), tls: { ca: caPem } });
  const { leader } = cluster;
  const standby = cluster.standbys[0]!;
  let host: Proc | undefined;
  let rogue: TestCluster | undefined;
  let host2: Proc | undefined;
  try {
    assert.notEqual(readFileSync(/--tls-cert (\S+)/.exec(leader.proc.child.spawnargs.join(" "))![1]!, "utf8"), readFileSync(/--tls-cert (\S+)/.exec(standby.proc.child.spawnargs.join(" "))![1]!, "utf8"));
    // A host on the standby runs a container.
    host = spawnK4s(["worker", "--server", standby.address, "--tls-ca", ca.caFile, "--name", "tls-host"]);
    const held = async () => Object.fromEntries((await standby.client.servers()).map((s) => [s.address, s.sessions.map((x) => x.name).join(",")]));
    await eventually(async () => (await held())[standby.address] === "tls-host", 30_000, "the host held by the standby");
    await standby.client.apply("kind: Container\nmetadata: {name: tls-echo}\nspec: {module: workers, function: echo_worker}\n");
    await eventually(async () => (await standby.client.get("Container", "tls-echo")).status?.ready, 60_000, "tls-echo ready");
    // The leader's peer link to the standby carries the request, over TLS.
    assert.equal(await leader.client.request("tls-echo", "over tls", { timeoutMs: 20_000 }), "ECHO: over tls");

    // A server whose certificate the CA did not sign (the first, holding a host): the one that
    // trusts the CA does not talk to it.
    await cluster.stop();
    const own = selfSignedCertificate();
    const dir = mkdtempSync(join(tmpdir(), "k4s-rogue-"));
    writeFileSync(join(dir, "cert.pem"), own.cert);
    writeFileSync(join(dir, "key.pem"), own.key);
    rogue = await startCluster(2, {
      flags: ["--no-local-worker"],
      flagsOf: (i) => (i === 0 ? ["--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "key.pem")] : tlsFlags("honest")),
      tls: { ca: Buffer.concat([caPem, own.cert]) },
    });
    const [own0, honest] = rogue.servers as [ClusterServer, ClusterServer];
    host2 = spawnK4s(["worker", "--server", own0.address, "--tls-ca", join(dir, "cert.pem"), "--name", "rogue-host"]);
    await own0.client.apply("kind: Container\nmetadata: {name: rogue-echo}\nspec: {module: workers, function: echo_worker}\n");
    await eventually(async () => (await own0.client.get("Container", "rogue-echo")).status?.ready, 60_000, "rogue-echo ready");
    const err = await honest.client.request("rogue-echo", "x", { timeoutMs: 20_000 }).then(
      () => assert.fail("a request went through a leader the CA did not sign"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(err.code, Code.Unavailable, err.message);
    assert.match(err.rawMessage, /certificate|self.signed/i);
    console.log(`# per-server certificates under one CA: a request through the leader reached a host on the other server (ECHO over TLS); a server with a certificate outside the CA: "${err.rawMessage.slice(0, 160)}"`);
  } finally {
    await host?.kill();
    await host2?.kill();
    await cluster.stop();
    await rogue?.stop();
  }
});
