/**
 * What a cluster's servers believe of each other only: the relayed-by header a standby sets on
 * the streams it relays to the leader is taken from a live member showing its peer credential,
 * never from a client (which could otherwise have its own host session recorded as held by
 * another server, and its containers given a resume grace instead of a restart).
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
import { startCluster, type TestCluster } from "./cluster-harness.js";
import { eventually, selfSignedCertificate, spawnK4s, testCa, type Proc } from "./helpers.js";
import { openRawPeer } from "./raw-peer.js";

test("cluster security: a client's k4s-relayed-by (or k4s-peer) header is refused (PERMISSION_DENIED without a valid peer credential, UNAVAILABLE from a server that is no member now); a standby's own relay is believed", async () => {
  const cluster = await startCluster(2, { flags: ["--no-local-worker"] });
  const { etcd, leader } = cluster;
  const standby = cluster.standbys[0]!;
  let host: Proc | undefined;
  try {
    const hello = { case: "hello", value: { name: "impostor", capacity: 1 } } as const;
    // What only a server can make (it reads the key from etcd, which no API shows): the peer
    // credential of an address that is no member of the cluster.
    const etcdClient = new Etcd3({ hosts: etcd.endpoints });
    const key = await etcdClient.get(HOST_CREDENTIAL_KEY).buffer();
    etcdClient.close();
    assert.ok(key, "the servers keep their key in etcd");
    const gone = "127.0.0.1:1";
    const goneCredential = createHmac("sha256", key).update(`peer:${gone}`).digest("base64url");
    const attempts: Record<string, Record<string, string>> = {
      "no credential": { "k4s-relayed-by": standby.address },
      "a forged credential": { "k4s-relayed-by": standby.address, "k4s-peer-credential": "bm90LWEtcmVhbC1jcmVkZW50aWFsLWF0LWFsbC0wMTIzNDU2Nzg5" },
      "an empty credential": { "k4s-relayed-by": standby.address, "k4s-peer-credential": "" },
    };
    for (const [what, headers] of Object.entries(attempts)) {
      for (const target of [leader, standby]) {
        const peer = openRawPeer(target.address, hello, headers);
        const err = await peer.ended;
        assert.equal(err?.code, Code.PermissionDenied, `${what} on ${target === leader ? "the leader" : "the standby"}: ${err?.message ?? "accepted"}`);
        assert.match(err!.rawMessage, /k4s-relayed-by header is for the servers of this cluster/);
        assert.equal(peer.pending("welcome").length, 0, `${what}: no welcome`);
      }
    }
    // A client session naming itself a server's peer session (whose calls a server answers
    // itself, never forwarding them) is refused the same way without the peer credential.
    for (const target of [leader, standby]) {
      const peer = openRawPeer(target.address, { case: "hello", value: { role: "client", name: `peer-${standby.address}` } }, { "k4s-peer": standby.address, "k4s-peer-credential": "bm90LWEtcmVhbC1jcmVkZW50aWFs" });
      const err = await peer.ended;
      assert.equal(err?.code, Code.PermissionDenied, `a forged k4s-peer header on ${target === leader ? "the leader" : "the standby"}: ${err?.message ?? "accepted"}`);
      assert.match(err!.rawMessage, /the k4s-peer header is for the servers of this cluster/);
    }
    // A valid credential of a server that is no member now (a server whose lease lapsed while etcd
    // failed over, or one that left) is refused too, UNAVAILABLE: the process it relays tries again
    // rather than stopping, and nothing is held for the header.
    // A standby takes no relayed stream (only the leader does): it answers as a standby does.
    for (const [target, code, message] of [
      [leader, Code.Unavailable, /server "127\.0\.0\.1:1" is not a live member of this cluster now/],
      [standby, Code.Unavailable, /is standing by \(the leader is /],
    ] as const) {
      const peer = openRawPeer(target.address, hello, { "k4s-relayed-by": gone, "k4s-peer-credential": goneCredential });
      const err = await peer.ended;
      const on = target === leader ? "the leader" : "the standby";
      assert.equal(err?.code, code, `a valid credential of a server that is no member, on ${on}: ${err?.message ?? "accepted"}`);
      assert.match(err!.rawMessage, message);
      assert.equal(peer.pending("welcome").length, 0, `no member, on ${on}: no welcome`);
    }
    // The same form of credential, made for the standby's address, is believed: so the one above
    // was refused for naming no member, not for its form.
    const withKey = openRawPeer(leader.address, { case: "hello", value: { name: "key-holder", capacity: 1 } }, { "k4s-relayed-by": standby.address, "k4s-peer-credential": createHmac("sha256", key).update(`peer:${standby.address}`).digest("base64url") });
    await withKey.next("welcome", undefined, 30_000);
    withKey.cancel();
    // The same hello without the header is a host like any other, held by the leader it reached.
    const plain = openRawPeer(leader.address, hello);
    await plain.next("welcome", undefined, 30_000);
    const held = async () => Object.fromEntries((await leader.client.servers()).map((s) => [s.address, s.sessions.map((x) => x.name).sort().join(",")]));
    await eventually(async () => (await held())[leader.address] === "impostor", 30_000, "the plain host held by the leader");
    plain.cancel();
    // A host on the standby is relayed with the standby's own header and credential: the leader believes it.
    host = spawnK4s(["worker", "--server", standby.address, "--name", "host-s"]);
    // The refused sessions and the ended plain one are held by no server.
    await eventually(async () => (await held())[standby.address] === "host-s" && (await held())[leader.address] === "", 30_000, "the relayed host held by the standby, nothing by the leader");
    console.log(`# relayed-by header: ${Object.keys(attempts).length} forged forms refused PERMISSION_DENIED on both servers, a real credential of no member UNAVAILABLE on the leader; the standby's own relay of host-s believed`);
  } finally {
    await host?.kill();
    await cluster.stop();
  }
});

test("cluster TLS: each server has a certificate of its own, signed by the cluster's CA (--tls-ca); the peer links verify it: a request through a standby reaches a host relayed by it, and a server whose certificate the CA did not sign is not trusted", async () => {
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
  try {
    assert.notEqual(readFileSync(/--tls-cert (\S+)/.exec(leader.proc.child.spawnargs.join(" "))![1]!, "utf8"), readFileSync(/--tls-cert (\S+)/.exec(standby.proc.child.spawnargs.join(" "))![1]!, "utf8"));
    // A host on the standby, relayed to the leader over TLS, runs a container.
    host = spawnK4s(["worker", "--server", standby.address, "--tls-ca", ca.caFile, "--name", "tls-host"]);
    const held = async () => Object.fromEntries((await standby.client.servers()).map((s) => [s.address, s.sessions.map((x) => x.name).join(",")]));
    await eventually(async () => (await held())[standby.address] === "tls-host", 30_000, "the host relayed by the standby");
    await standby.client.apply("kind: Container\nmetadata: {name: tls-echo}\nspec: {module: workers, function: echo_worker}\n");
    await eventually(async () => (await standby.client.get("Container", "tls-echo")).status?.ready, 60_000, "tls-echo ready");
    // The standby's peer link carries the request to the leader, the relay carries it back to the host.
    assert.equal(await standby.client.request("tls-echo", "over tls", { timeoutMs: 20_000 }), "ECHO: over tls");

    // A leader whose certificate the CA did not sign: the standby that trusts the CA does not talk to it.
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
    assert.equal(rogue.leader, rogue.servers[0], "the first server leads");
    const err = await rogue.standbys[0]!.client.request("anything", "x", { timeoutMs: 20_000 }).then(
      () => assert.fail("a request went through a leader the CA did not sign"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(err.code, Code.Unavailable, err.message);
    assert.match(err.rawMessage, /certificate|self.signed|forwarded to the leader/i);
    console.log(`# per-server certificates under one CA: a request through the standby reached the host it relays (ECHO over TLS); a leader with a certificate outside the CA: "${err.rawMessage.slice(0, 160)}"`);
  } finally {
    await host?.kill();
    await cluster.stop();
    await rogue?.stop();
  }
});
