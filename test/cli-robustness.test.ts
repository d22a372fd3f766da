/**
 * The k4s command where things go wrong around it, run as a real process: its output closed
 * early (`| head`), bad server addresses, no server at all, and a send that cannot be
 * delivered yet.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { normalizeAddress, normalizeAddresses } from "../src/api/address.js";
import { freePorts } from "./etcd.js";
import type { K4sServer } from "../src/server/server.js";
import { K4S_BIN, runK4s, spawnK4s, startTestServer } from "./helpers.js";

let server: K4sServer;

before(async () => {
  server = await startTestServer();
});

after(async () => {
  await server.stop();
});

/** Runs `k4s ARGS | head -N` in a shell; returns the shell's stderr (k4s's and head's) and head's output. */
function pipedToHead(args: string[], lines: number): Promise<{ stdout: string; stderr: string; k4sStatus: string }> {
  // PIPESTATUS is bash's: the k4s side's own exit status, not head's.
  const quoted = args.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ");
  const script = `"${process.execPath}" "${K4S_BIN}" ${quoted} | head -${lines}; echo "k4s=\${PIPESTATUS[0]}" >&2`;
  return new Promise((resolve) => {
    const sh = spawn("bash", ["-c", script], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    sh.stdout.on("data", (d) => (stdout += d));
    sh.stderr.on("data", (d) => (stderr += d));
    sh.on("close", () => {
      const status = /k4s=(\d+)\n$/.exec(stderr)?.[1] ?? "?";
      resolve({ stdout, stderr: stderr.replace(/k4s=\d+\n$/, ""), k4sStatus: status });
    });
  });
}

test("k4s events | head and k4s logs NAME | head end quietly when head closes the pipe", async () => {
  const long = "x".repeat(200);
  // Enough output (> 64 KiB, a pipe's buffer) that k4s is still writing when head exits.
  for (let i = 0; i < 1000; i++) server.events.record({ reason: "Testing", kind: "Container", name: `pipe-${i}`, message: long });
  server.logs.append("pipe-logs", "stdout", Array.from({ length: 1000 }, (_, i) => `line ${i} ${long}`));
  const [events, logs] = await Promise.all([
    pipedToHead(["events", "--server", server.address], 5),
    pipedToHead(["logs", "pipe-logs", "--server", server.address], 2),
  ]);
  assert.equal(events.stdout.split("\n").length, 6, events.stdout);
  assert.equal(events.stderr, "", "no EPIPE trace from events");
  assert.equal(events.k4sStatus, "0");
  assert.match(logs.stdout, /^line 0 x+\nline 1 x+\n$/);
  assert.equal(logs.stderr, "", "no EPIPE trace from logs");
  assert.equal(logs.k4sStatus, "0");

  // A follower whose reader went away ends at its next line instead of writing into nothing.
  const w = spawnK4s(["events", "-w", "--server", server.address]);
  await w.waitFor(/LAST SEEN/);
  w.child.stdout!.destroy();
  server.events.record({ reason: "AfterClose", kind: "Container", name: "pipe-late", message: long });
  assert.equal(await w.exited, 0);
  assert.equal(w.stderr(), "");
});

test("bad server addresses are one line naming the address; a host without a port means port 50051; an --advertise with \"/\" is refused", async () => {
  const [tooBig, noPort, empty, serverPort, serverPortNeg] = await Promise.all([
    runK4s(["get", "c", "--server", "127.0.0.1:99999"]),
    runK4s(["get", "c", "--server", "127.0.0.1"]),
    runK4s(["get", "c", "--server", ":50051"]),
    runK4s(["server", "--port", "70000", "--memory"]),
    runK4s(["server", "--port", "-1", "--memory"]),
  ]);
  const slash = await runK4s(["server", "--memory", "--advertise", "host/x:7000"]);
  assert.equal(slash.code, 1);
  assert.equal(slash.stderr, `error: option '--advertise <host:port>' argument 'host/x:7000' is invalid. expected host:port, with no "/" or spaces (it names this server in etcd keys)\n`);
  assert.equal(tooBig.code, 1);
  assert.equal(tooBig.stderr, 'error: invalid server address "127.0.0.1:99999": port 99999 is not between 1 and 65535\n');
  assert.equal(empty.stderr, 'error: invalid server address ":50051": no host before the port\n');
  // Whether or not a server runs on this machine's default port, the default port is the one tried.
  assert.doesNotMatch(noPort.stderr, /:80\b/);
  if (noPort.code !== 0) assert.match(noPort.stderr, /^error: UNAVAILABLE: connect ECONNREFUSED 127\.0\.0\.1:50051 \(is a k4s server running at 127\.0\.0\.1:50051\?\)\n$/);
  assert.equal(serverPort.code, 1);
  assert.equal(serverPort.stderr, "error: option '--port <n>' argument '70000' is invalid. expected a whole number between 0 and 65535\n");
  assert.equal(serverPortNeg.code, 1);
  assert.match(serverPortNeg.stderr, /^error: option '--port <n>' argument '-1' is invalid/);
});

test("every client command says the same one line when no server runs", async () => {
  const at = ["--server", "127.0.0.1:1"];
  const commands: [string[], string?][] = [
    [["get", "c"]],
    [["get", "all"]],
    [["describe", "c", "x"]],
    [["delete", "c", "x"]],
    [["scale", "rs", "x", "--replicas", "1"]],
    [["apply", "-f", "-"], "kind: Service\nmetadata: {name: s}\nspec: {selector: 'x-*'}\n"],
    [["send", "x", "1"]],
    [["request", "x", "1"]],
    [["logs", "x"]],
    [["events"]],
  ];
  const results = await Promise.all(commands.map(([args, input]) => runK4s([...args, ...at], {}, input)));
  results.forEach((r, i) => {
    const what = `k4s ${commands[i]![0].join(" ")}`;
    assert.equal(r.code, 1, what);
    assert.equal(r.stderr, "error: UNAVAILABLE: connect ECONNREFUSED 127.0.0.1:1 (is a k4s server running at 127.0.0.1:1?)\n", what);
  });
});

test("normalizeAddress completes and checks server addresses", () => {
  assert.equal(normalizeAddress("127.0.0.1"), "127.0.0.1:50051");
  assert.equal(normalizeAddress("localhost:7000"), "localhost:7000");
  assert.equal(normalizeAddress("http://k4s.example:80/"), "k4s.example:80");
  assert.equal(normalizeAddress("https://k4s.example"), "k4s.example:50051");
  assert.equal(normalizeAddress("[::1]:9"), "[::1]:9");
  assert.equal(normalizeAddress("[::1]"), "[::1]:50051");
  assert.equal(normalizeAddress("::1"), "[::1]:50051");
  for (const [bad, why] of [
    ["", /it is empty/],
    ["h:0", /port 0 is not between 1 and 65535/],
    ["h:", /port \(empty\) is not between/],
    ["h:12x", /port 12x/],
    ["[]:1", /no host between the brackets/],
    ["a b:1", /"a b" is not a host name/],
  ] as const) {
    assert.throws(() => normalizeAddress(bad), why, bad);
  }
});

test("normalizeAddresses reads the servers of a cluster from a comma list or an array", () => {
  assert.deepEqual(normalizeAddresses("a:1,b, [::1]:3"), ["a:1", "b:50051", "[::1]:3"]);
  assert.deepEqual(normalizeAddresses(["a:1", "b:2,c:3", "a:1"]), ["a:1", "b:2", "c:3"]);
  assert.throws(() => normalizeAddresses(" , "), /it is empty/);
  assert.throws(() => normalizeAddresses("a:1,b:0"), /port 0 is not between 1 and 65535/);
});

test("k4s get with --server a,b: a server that is gone is skipped", async () => {
  const [gone] = await freePorts(1);
  const r = await runK4s(["get", "svc", "--server", `127.0.0.1:${gone},${server.address}`]);
  assert.equal(r.code, 0, r.stderr);
});

test("send and request to a service with no endpoint say so on stderr while they wait; send takes --timeout", async () => {
  const applied = await runK4s(["apply", "-f", "-", "--server", server.address], {}, "kind: Service\nmetadata: {name: nobody-home}\nspec: {selector: 'none-*'}\n");
  assert.equal(applied.code, 0, applied.stderr);
  const [sent, asked] = await Promise.all([
    runK4s(["send", "service/nobody-home", "1", "--timeout", "3s", "--server", server.address]),
    runK4s(["request", "nobody-home", "1", "--timeout", "3s", "--server", server.address]),
  ]);
  for (const r of [sent, asked]) {
    assert.equal(r.code, 1);
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 2, r.stderr);
    assert.match(lines[0]!, /^waiting for service\/nobody-home: no ready endpoint yet \(gives up after 3s\)$/);
    assert.equal(lines[1], 'error: UNAVAILABLE: no endpoint of service "nobody-home" became ready before the deadline');
  }
  const bad = await runK4s(["send", "x", "1", "--timeout", "soon", "--server", server.address]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^error: option '--timeout <duration>' argument 'soon' is invalid/);
});
