/**
 * The k4s command line, run as a real process against a real server: apply, get (tables,
 * -o json|yaml|name, -w), describe, scale, delete, send/request/logs with a real worker host,
 * error reporting, and `k4s server` keeping every acknowledged write across a SIGKILL.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { parse as parseYaml } from "yaml";
import { ServiceSchema } from "../src/gen/k4s/v1/resources_pb.js";
import type { K4sServer } from "../src/server/server.js";
import { Code, ConnectError } from "@connectrpc/connect";
import { parseDuration } from "../src/cli/duration.js";
import { CliError, formatError } from "../src/cli/errors.js";
import { humanDuration } from "../src/cli/duration.js";
import { renderTable } from "../src/cli/format.js";
import { eventually, runK4s, spawnK4s, startTestServer } from "./helpers.js";

let server: K4sServer;
let dir: string;

before(async () => {
  server = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), "k4s-cli-"));
});

after(async () => {
  await server.stop();
});

/** Runs the CLI against the test server. */
function k4s(args: string[], input?: string) {
  return runK4s([...args, "--server", server.address], {}, input);
}

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const app = (p: string) => `
kind: Container
metadata: {name: ${p}-tpl, labels: {app: ${p}}}
spec: {module: workers, function: echo_worker}
---
kind: ReplicaSet
metadata: {name: ${p}-rs}
spec: {replicas: 0, container: ${p}-tpl}
---
kind: Service
metadata: {name: ${p}-svc}
spec: {selector: "${p}-rs-*", strategy: random}
`;

test("apply -f FILE prints <kind>/<name> <action>; get prints tables and kubectl-shaped JSON/YAML", async () => {
  const path = file("app.yaml", app("one"));
  let r = await k4s(["apply", "-f", path]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "container/one-tpl created\nreplicaset/one-rs created\nservice/one-svc created\n");
  // Independent reads run at once: each is a process start, and the machine is small.
  const [again, cs, rsTable, svcTable, rsJson, svcYaml, cYaml, names, none, many] = await Promise.all([
    k4s(["apply", "-f", path]),
    k4s(["get", "containers", "-l", "app=one"]),
    k4s(["get", "rs", "one-rs"]),
    k4s(["get", "svc"]),
    k4s(["get", "replicaset/one-rs", "-o", "json"]),
    k4s(["get", "svc", "one-svc", "-o", "yaml"]),
    k4s(["get", "c", "-o", "yaml"]),
    k4s(["get", "services", "one-*", "-o", "name"]),
    k4s(["get", "rs", "-l", "nobody=here"]),
    k4s(["get", "rs,svc", "one-*"]),
  ]);
  // Several kinds: names carry their kind, as in kubectl's `get all`.
  assert.match(many.stdout, /^NAME\s+DESIRED\s+CURRENT\s+READY\s+AGE\nreplicaset\/one-rs\s.*\n\nNAME\s+SELECTOR\s+STRATEGY\s+ENDPOINTS\s+AGE\nservice\/one-svc\s/);
  assert.equal(again.stdout, "container/one-tpl unchanged\nreplicaset/one-rs unchanged\nservice/one-svc unchanged\n");

  assert.equal(cs.code, 0, cs.stderr);
  const [header, ...rows] = cs.stdout.trimEnd().split("\n");
  assert.match(header!, /^NAME\s+PHASE\s+READY\s+RESTARTS\s+HOST\s+AGE/);
  assert.ok(rows.some((row) => /^one-tpl\s+\S+\s+[01]\/1\s+0\s+/.test(row)), cs.stdout);

  assert.match(rsTable.stdout, /^NAME\s+DESIRED\s+CURRENT\s+READY\s+AGE\none-rs\s+0\s+0\s+0\s+\d+s\n$/);
  assert.match(svcTable.stdout, /^NAME\s+SELECTOR\s+STRATEGY\s+ENDPOINTS\s+AGE\n/);
  assert.match(svcTable.stdout, /\none-svc\s+one-rs-\*\s+random\s+<none>\s+\d+s\n/);

  const rs = JSON.parse(rsJson.stdout);
  assert.deepEqual(Object.keys(rs).slice(0, 3), ["apiVersion", "kind", "metadata"]);
  assert.equal(rs.apiVersion, "k4s/v1");
  assert.equal(rs.kind, "ReplicaSet");
  assert.equal(rs.metadata.name, "one-rs");
  assert.equal(rs.metadata.generation, 1);
  assert.equal(rs.spec.container, "one-tpl");

  const svc = parseYaml(svcYaml.stdout);
  assert.equal(svc.kind, "Service");
  assert.equal(svc.spec.selector, "one-rs-*");

  const list = parseYaml(cYaml.stdout);
  assert.equal(list.kind, "List");
  assert.ok(list.items.some((i: { metadata: { name: string } }) => i.metadata.name === "one-tpl"));

  assert.equal(names.stdout, "service/one-svc\n");
  assert.equal(none.code, 0);
  assert.equal(none.stdout, "");
  assert.equal(none.stderr, "No resources found.\n");
});

test("apply reads a directory and stdin; --dry-run writes nothing", async () => {
  const d = join(dir, "manifests");
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, "a.yaml"), "kind: Service\nmetadata: {name: dir-a}\nspec: {selector: 'a-*'}\n");
  writeFileSync(join(d, "b.json"), JSON.stringify({ kind: "Service", metadata: { name: "dir-b" }, spec: { selector: "b-*" } }));
  writeFileSync(join(d, "ignored.txt"), "not a manifest");
  let r = await k4s(["apply", "-f", d]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "service/dir-a created\nservice/dir-b created\n");

  r = await k4s(["apply", "-f", "-", "--dry-run"], "kind: Service\nmetadata: {name: dry-svc}\nspec: {selector: 'x-*'}\n");
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "service/dry-svc created (dry run)\n");
  assert.equal(await server.resources.get("Service", "dry-svc"), undefined);

  r = await k4s(["apply", "-f", "-"], "kind: Service\nmetadata: {name: stdin-svc}\nspec: {selector: 'x-*'}\n");
  assert.equal(r.stdout, "service/stdin-svc created\n");
});

test("scale and delete print kubectl's lines and change the stored objects", async () => {
  const path = file("scale.yaml", app("two"));
  assert.equal((await k4s(["apply", "-f", path])).code, 0);

  let r = await k4s(["scale", "rs", "two-rs", "--replicas", "2"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "replicaset/two-rs scaled\n");
  assert.equal((await server.resources.get("ReplicaSet", "two-rs"))?.spec?.replicas, 2);
  r = await k4s(["scale", "replicaset/two-rs", "--replicas", "0"]);
  assert.equal(r.stdout, "replicaset/two-rs scaled\n");
  assert.equal((await server.resources.get("ReplicaSet", "two-rs"))?.spec?.replicas, 0);

  r = await k4s(["delete", "svc", "two-svc"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "service/two-svc deleted\n");
  assert.equal(await server.resources.get("Service", "two-svc"), undefined);

  r = await k4s(["delete", "-f", path, "--ignore-not-found"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "replicaset/two-rs deleted\ncontainer/two-tpl deleted\n");
  await eventually(async () => !(await server.resources.get("Container", "two-tpl")), 5000, "two-tpl gone");
});

test("get -w prints the table, then a row for each change as it happens", async () => {
  await server.resources.create(create(ServiceSchema, { metadata: { name: "watch-a" }, spec: { selector: "wa-*" } }));
  const w = spawnK4s(["get", "svc", "-w", "--server", server.address]);
  try {
    await w.waitFor(/NAME\s+SELECTOR[^]*\nwatch-a\s+wa-\*/);
    let r = await k4s(["apply", "-f", "-"], "kind: Service\nmetadata: {name: watch-b}\nspec: {selector: 'wb-*'}\n");
    assert.equal(r.code, 0, r.stderr);
    await w.waitFor(/\nwatch-b\s+wb-\*\s+round-robin/);
    r = await k4s(["apply", "-f", "-"], "kind: Service\nmetadata: {name: watch-b}\nspec: {selector: 'changed-*'}\n");
    await w.waitFor(/\nwatch-b\s+changed-\*/);
    assert.equal(w.stdout().split("\n").filter((l) => l.startsWith("NAME")).length, 1, "one header");
  } finally {
    assert.equal(await w.kill("SIGINT"), 0, "get -w ends cleanly on Ctrl-C");
  }
});

test("every error exits 1 with one line on stderr", async () => {
  const bad = file("bad.yaml", "kind: Container\nmetadata: {name: Not_Valid}\nspec: {module: workers}\n");
  const cases: [string[], RegExp][] = [
    [["get", "c", "missing"], /^error: NOT_FOUND: .*missing/],
    [["get", "gadgets"], /^error: INVALID_ARGUMENT: unknown kind "gadgets"/],
    [["scale", "svc", "x", "--replicas", "1"], /^error: cannot scale a Service/],
    [["scale", "rs", "x", "--replicas", "many"], /^error: option '--replicas <n>' argument 'many' is invalid/],
    [["apply", "-f", join(dir, "nope.yaml")], /^error: cannot read .*nope\.yaml: no such file/],
    [["apply", "-f", bad], /^error: INVALID_ARGUMENT: .*name/],
    [["send", "x", "{not json"], /^error: message is not valid JSON/],
    [["request", "container/nowhere", "1"], /^error: NOT_FOUND: /],
    [["frobnicate"], /^error: unknown command 'frobnicate'/],
  ];
  const results = await Promise.all(cases.map(([args]) => k4s(args)));
  const unreachable = await runK4s(["get", "c", "--server", "127.0.0.1:1"]);
  results.push(unreachable);
  cases.push([["get", "c", "--server", "127.0.0.1:1"], /^error: UNAVAILABLE: .*is a k4s server running at 127\.0\.0\.1:1\?/]);
  results.forEach((r, i) => {
    const [args, pattern] = cases[i]!;
    assert.equal(r.code, 1, `k4s ${args.join(" ")} exits 1`);
    assert.match(r.stderr, pattern, `k4s ${args.join(" ")}`);
    assert.equal(r.stderr.trimEnd().split("\n").filter((l) => l.startsWith("error:")).length, 1, `one error line for ${args.join(" ")}`);
    if (!/unknown (command|option)/.test(r.stderr)) assert.equal(r.stderr.trimEnd().split("\n").length, 1, `one line for ${args.join(" ")}`);
  });
});

test("with a worker host: apply --wait, request, send, logs, describe; --wait times out naming what is not ready", async () => {
  const host = spawnK4s(["worker", "--server", server.address, "--name", "cli-host"]);
  try {
    const path = file(
      "echo.yaml",
      "kind: Container\nmetadata: {name: cli-echo}\nspec: {module: workers, function: echo_worker, parameters: {prefix: CLI}}\n" +
        "---\nkind: Container\nmetadata: {name: cli-calc}\nspec: {module: workers, function: calculator_worker}\n",
    );
    let r = await k4s(["apply", "-f", path, "--wait", "--timeout", "20s"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^container\/cli-echo created\ncontainer\/cli-calc created\n/);
    assert.match(r.stdout, /container\/cli-echo ready/);
    assert.match(r.stdout, /container\/cli-calc ready/);

    const follow = spawnK4s(["logs", "cli-echo", "-f", "--server", server.address]);
    const [hi, sum, modulo, sent] = await Promise.all([
      k4s(["request", "cli-echo", '"hi"']),
      k4s(["request", "container/cli-calc", '{"operation":"sum","operands":[1,2,3]}', "--timeout", "5s"]),
      k4s(["request", "cli-calc", '{"operation":"modulo","operands":[1]}']),
      k4s(["send", "cli-echo", '"yo"']),
    ]);
    assert.equal(hi.code, 0, hi.stderr);
    assert.equal(hi.stdout, "CLI: hi\n");
    assert.equal(sum.stdout, "6\n");
    assert.equal(modulo.code, 1);
    assert.match(modulo.stderr, /^error: INVALID_ARGUMENT: .*modulo/);
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(sent.stdout, "message queued at container/cli-echo\n");

    await eventually(() => server.logs.lines("cli-echo").some((l) => l.text === "CLI: yo"), 10_000, "the sent line logged");
    await follow.waitFor("CLI: yo");
    assert.equal(await follow.kill("SIGINT"), 0, "logs -f ends cleanly on Ctrl-C");
    const stuck = file("stuck.yaml", "kind: Container\nmetadata: {name: cli-stuck}\nspec: {module: nowhere, function: f}\n");
    const [logs, tail, wide, described, timedOut, events] = await Promise.all([
      k4s(["logs", "cli-echo"]),
      k4s(["logs", "cli-echo", "--tail", "1"]),
      k4s(["get", "c", "cli-echo", "-o", "wide"]),
      k4s(["describe", "c", "cli-echo"]),
      k4s(["apply", "-f", stuck, "--wait", "--timeout", "1s"]),
      k4s(["events", "--for", "container/cli-echo"]),
    ]);
    assert.match(events.stdout, /^LAST SEEN\s+TYPE\s+REASON\s+OBJECT\s+MESSAGE\n/);
    assert.match(events.stdout, /\n\d+s\s+Normal\s+\w+\s+container\/cli-echo\s+/);
    assert.doesNotMatch(events.stdout, /cli-calc/);
    assert.deepEqual(logs.stdout.trimEnd().split("\n").sort(), ["CLI: hi", "CLI: yo"]);
    assert.match(tail.stdout, /^CLI: (hi|yo)\n$/);
    assert.match(wide.stdout, /\ncli-echo\s+Running\s+1\/1\s+0\s+cli-host\S*\s+\d+s\s+workers\/echo_worker/);
    assert.equal(described.code, 0, described.stderr);
    assert.match(described.stdout, /^Name:\s+cli-echo\nKind:\s+Container\n/);
    assert.match(described.stdout, /\nStatus:\n(.*\n)*\s+phase: Running/);
    assert.match(described.stdout, /\nEvents:/);
    assert.equal(timedOut.code, 1);
    assert.match(timedOut.stderr, /^error: timed out after 1s waiting for container\/cli-stuck \(Pending/);
    const r2 = await k4s(["get", "c", "cli-stuck"]);
    assert.match(r2.stdout, /MESSAGE\ncli-stuck\s+Pending\s+0\/1\s+0\s+<none>\s+\d+s\s+\S+/, "get says why it is pending");
  } finally {
    await host.kill();
  }
});

test("k4s server --port 0 prints its address and keeps every acknowledged write across SIGKILL", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "k4s-data-"));
  const args = ["server", "--port", "0", "--data-dir", dataDir, "--no-local-worker"];
  let srv = spawnK4s(args);
  try {
    await srv.waitFor(/k4s server listening on \S+:\d+\n/);
    const address = /listening on (\S+)/.exec(srv.stdout())![1]!;
    assert.doesNotMatch(address, /:0$/);
    const run = (a: string[], input?: string) => runK4s([...a, "--server", address], {}, input);
    let r = await run(["apply", "-f", "-"], app("dur"));
    assert.equal(r.code, 0, r.stderr);
    const writes = await Promise.all([
      run(["scale", "rs", "dur-rs", "--replicas", "4"]),
      run(["delete", "svc", "dur-svc"]),
      run(["apply", "-f", "-"], "kind: Service\nmetadata: {name: dur-last}\nspec: {selector: 'z-*'}\n"),
    ]);
    assert.deepEqual(
      writes.map((w) => w.stdout),
      ["replicaset/dur-rs scaled\n", "service/dur-svc deleted\n", "service/dur-last created\n"],
    );
    assert.equal(await srv.kill("SIGKILL"), "SIGKILL");

    srv = spawnK4s(args);
    await srv.waitFor(/listening on \S+:\d+\n/);
    const again = /listening on (\S+)/.exec(srv.stdout())![1]!;
    const get = async (a: string[]) => JSON.parse((await runK4s([...a, "-o", "json", "--server", again])).stdout);
    const [rs, services, tpl] = await Promise.all([get(["get", "rs", "dur-rs"]), get(["get", "svc"]), get(["get", "c", "dur-tpl"])]);
    assert.equal(rs.spec.replicas, 4);
    assert.equal(rs.spec.container, "dur-tpl");
    assert.deepEqual(services.items.map((s: { metadata: { name: string } }) => s.metadata.name), ["dur-last"]);
    assert.equal(tpl.metadata.labels.app, "dur");
  } finally {
    await srv.kill("SIGKILL");
  }
});

test("--tls-ca reaches a TLS server for resources and messages; a plaintext call says TLS may be missing", async () => {
  const tlsDir = mkdtempSync(join(tmpdir(), "k4s-cli-tls-"));
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
    "-keyout", join(tlsDir, "key.pem"), "-out", join(tlsDir, "cert.pem"),
  ], { stdio: "ignore" });
  const tlsServer = await startTestServer({ tls: { cert: readFileSync(join(tlsDir, "cert.pem")), key: readFileSync(join(tlsDir, "key.pem")) } });
  try {
    const at = ["--server", tlsServer.address];
    const ca = ["--tls-ca", join(tlsDir, "cert.pem")];
    const [applied, request, plain] = await Promise.all([
      runK4s(["apply", "-f", "-", ...at, ...ca], {}, "kind: Service\nmetadata: {name: tls-svc}\nspec: {selector: 'x-*'}\n"),
      runK4s(["request", "container/nowhere", "1", ...at, ...ca]),
      runK4s(["get", "svc", ...at]),
    ]);
    assert.equal(applied.stdout, "service/tls-svc created\n", applied.stderr);
    assert.match(request.stderr, /^error: NOT_FOUND: /, "the messaging session spoke TLS too");
    assert.equal(plain.code, 1);
    assert.match(plain.stderr, /does the server use TLS\?/);
  } finally {
    await tlsServer.stop();
  }
});

test("helpers: durations, ages, tables and error lines", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("5s"), 5000);
  assert.equal(parseDuration("1.5m"), 90_000);
  assert.equal(parseDuration("1m30s"), 90_000);
  assert.equal(parseDuration("2h"), 7_200_000);
  assert.equal(parseDuration("0"), 0);
  for (const bad of ["", "5", "s", "5x", "1m 30s", "-1s"]) assert.throws(() => parseDuration(bad), CliError, bad);

  assert.equal(humanDuration(45_000), "45s");
  assert.equal(humanDuration(119_000), "119s");
  assert.equal(humanDuration(330_000), "5m30s");
  assert.equal(humanDuration(65 * 60_000), "65m");
  assert.equal(humanDuration(5 * 3_600_000 + 60_000), "5h1m");
  assert.equal(humanDuration(30 * 3_600_000), "30h");
  assert.equal(humanDuration(3 * 86_400_000 + 3_600_000), "3d1h");
  assert.equal(humanDuration(-5), "0s");

  assert.equal(
    renderTable({ header: ["NAME", "PHASE", "MESSAGE"], rows: [["a", "Running", ""], ["longer-name", "Pending", "no host"]] }),
    "NAME          PHASE     MESSAGE\na             Running\nlonger-name   Pending   no host",
  );


  assert.equal(formatError(new ConnectError('container "x" not found', Code.NotFound)), 'NOT_FOUND: container "x" not found');
  assert.equal(formatError(new ConnectError("slow", Code.DeadlineExceeded)), "DEADLINE_EXCEEDED: slow");
  assert.equal(formatError(new CliError("bad\nthing")), "bad; thing");
  assert.match(formatError(new ConnectError("connect ECONNREFUSED 127.0.0.1:9", Code.Unavailable), "127.0.0.1:9"), /is a k4s server running at 127\.0\.0\.1:9\?/);
});
