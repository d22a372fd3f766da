/**
 * kubectl's habits in the k4s command, run as a real process against a real server: version,
 * completion, label and annotate, edit, diff, explain, rollout restart, logs of several
 * containers, progress on long waits.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createClient } from "../src/client/client.js";
import type { K4sServer } from "../src/server/server.js";
import { eventually, inTerminal, K4S_BIN, runK4s, spawnInTerminal, spawnK4s, startTestServer, WORKERS_SDK_JS } from "./helpers.js";

let server: K4sServer;

before(async () => {
  server = await startTestServer();
});

after(async () => {
  await server.stop();
});

function k4s(args: string[], input?: string, env: Record<string, string> = {}) {
  return runK4s([...args, "--server", server.address], env, input);
}

const VERSION = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")).version as string;

test("k4s version prints this command's and the server's versions; --client needs no server", async () => {
  const [both, json, clientOnly, noServer] = await Promise.all([
    k4s(["version"]),
    k4s(["version", "-o", "json"]),
    runK4s(["version", "--client", "--server", "127.0.0.1:1"]),
    runK4s(["version", "--server", "127.0.0.1:1"]),
  ]);
  const platform = `${process.platform}/${process.arch}`;
  assert.equal(both.code, 0, both.stderr);
  assert.equal(
    both.stdout,
    `Client Version: ${VERSION} (node ${process.version}, ${platform})\nServer Version: ${VERSION} (node ${process.version}, ${platform}), API k4s/v1\n`,
  );
  const parsed = JSON.parse(json.stdout);
  assert.deepEqual(parsed.serverVersion, { version: VERSION, apiVersion: "k4s/v1", runtimeVersion: process.version, platform });
  assert.equal(parsed.clientVersion.version, VERSION);
  assert.equal(clientOnly.code, 0);
  assert.equal(clientOnly.stdout, `Client Version: ${VERSION} (node ${process.version}, ${platform})\n`);
  assert.equal(noServer.code, 1);
  assert.match(noServer.stdout, /^Client Version: /);
  assert.match(noServer.stderr, /^error: UNAVAILABLE: .*is a k4s server running at 127\.0\.0\.1:1\?/);
});

test("k4s completion bash|zsh|fish: commands, flags, kinds and the server's object names complete in each shell", async () => {
  const applied = await k4s(["apply", "-f", "-"], "kind: Service\nmetadata: {name: comp-one}\nspec: {selector: 'a-*'}\n---\nkind: Service\nmetadata: {name: comp-two}\nspec: {selector: 'b-*'}\n");
  assert.equal(applied.code, 0, applied.stderr);
  // The scripts call `k4s` from PATH, as an installed command.
  const bin = mkdtempSync(join(tmpdir(), "k4s-bin-"));
  symlinkSync(K4S_BIN, join(bin, "k4s"));
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}`, K4S_ADDRESS: server.address };
  const shell = (cmd: string, args: string[]) => promisify(execFile)(cmd, args, { env }).then((r) => r.stdout.split("\n").filter(Boolean).sort());
  const bash = (line: string[]) =>
    shell("bash", ["-c", `source <(k4s completion bash); COMP_WORDS=(${line.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${line.length - 1}; _k4s; printf '%s\\n' "\${COMPREPLY[@]}"`]);
  const zsh = (line: string[]) =>
    shell("zsh", ["-c", `compadd() { shift; print -l -- "$@"; }; _files() { print FILES; }; source <(k4s completion zsh); words=(${line.map((w) => `'${w}'`).join(" ")}); CURRENT=${line.length}; _k4s`]);
  const fish = (line: string) => shell("fish", ["-c", `k4s completion fish | source; complete -C '${line}'`]).then((l) => l.map((c) => c.split("\t")[0]!));

  assert.deepEqual(await bash(["k4s", "ge"]), ["get"]);
  assert.deepEqual(await bash(["k4s", "get", ""]), ["all", "containers", "replicasets", "services"]);
  assert.deepEqual(await bash(["k4s", "get", "svc", "comp-"]), ["comp-one", "comp-two"]);
  assert.deepEqual(await bash(["k4s", "get", "svc/comp-t"]), ["svc/comp-two"]);
  assert.deepEqual(await bash(["k4s", "get", "svc", "--show-l"]), ["--show-labels"]);
  assert.deepEqual(await bash(["k4s", "get", "c", "-o", "y"]), ["yaml"]);
  assert.deepEqual(await bash(["k4s", "completion", ""]), ["bash", "fish", "zsh"]);
  assert.deepEqual(await bash(["k4s", "edit", "svc", "comp-o"]), ["comp-one"]);
  assert.deepEqual(await bash(["k4s", "rollout", ""]), ["restart", "status"]);
  assert.deepEqual(await bash(["k4s", "explain", "re"]), ["replicasets"]);
  assert.deepEqual(await bash(["k4s", "get", "c", "--color", ""]), ["always", "auto", "never"]);
  assert.deepEqual(await zsh(["k4s", "describe", "services", ""]), ["comp-one", "comp-two"]);
  assert.deepEqual(await zsh(["k4s", "apply", "-f", ""]), ["FILES"], "file names where a file is wanted");
  assert.deepEqual(await fish("k4s get services comp"), ["comp-one", "comp-two"]);
  assert.ok((await fish("k4s sc")).includes("scale"));
});

test("k4s label and annotate set and remove keys, refuse to change a value without --overwrite, take -l and --all", async () => {
  const svc = (n: string) => `kind: Service\nmetadata: {name: ${n}}\nspec: {selector: '${n}-*'}\n`;
  assert.equal((await k4s(["apply", "-f", "-"], [svc("lab-a"), svc("lab-b"), svc("lab-c")].join("---\n"))).code, 0);
  let r = await k4s(["label", "svc", "lab-a", "lab-b", "app=web", "tier=front"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "service/lab-a labeled\nservice/lab-b labeled\n");
  r = await k4s(["label", "svc/lab-a", "app=db"]);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, "error: 'app' already has a value (web), and --overwrite is false\n");
  r = await k4s(["label", "svc/lab-a", "app=db", "tier-", "--overwrite"]);
  assert.equal(r.stdout, "service/lab-a labeled\n", r.stderr);
  r = await k4s(["label", "svc", "-l", "app=web", "seen=yes"]);
  assert.equal(r.stdout, "service/lab-b labeled\n", r.stderr);
  r = await k4s(["label", "svc", "--all", "env=test"]);
  // Every Service of the server, other tests' too.
  for (const n of ["lab-a", "lab-b", "lab-c"]) assert.match(r.stdout, new RegExp(`^service/${n} labeled$`, "m"));
  r = await k4s(["label", "svc", "lab-c", "env=test"]);
  assert.equal(r.stdout, "service/lab-c unchanged\n");
  r = await k4s(["get", "svc", "lab-a", "lab-b", "lab-c", "--show-labels", "-o", "wide"]);
  assert.match(r.stdout, /\nlab-a\s.*\sapp=db,env=test\nlab-b\s.*\sapp=web,env=test,seen=yes,tier=front\nlab-c\s.*\senv=test\n$/);
  r = await k4s(["label", "svc", "lab-a", "lab-missing", "x=1"]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "service/lab-a labeled\n");
  assert.equal(r.stderr, 'error: NOT_FOUND: Service "lab-missing" not found\n');
  r = await k4s(["label", "svc", "lab-a", "bad key=1"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: INVALID_ARGUMENT: .*metadata\.labels.*bad key/);

  r = await k4s(["annotate", "svc", "lab-c", "note=hello world", "owner=team-a"]);
  assert.equal(r.stdout, "service/lab-c annotated\n", r.stderr);
  r = await k4s(["annotate", "svc", "lab-c", "owner-", "--list"]);
  assert.equal(r.stdout, "note=hello world\nowner=team-a\n", "--list prints and changes nothing");
  r = await k4s(["annotate", "svc", "lab-c", "owner-"]);
  assert.equal(r.stdout, "service/lab-c annotated\n");
  const obj = JSON.parse((await k4s(["get", "svc", "lab-c", "-o", "json"])).stdout);
  assert.deepEqual(obj.metadata.annotations, { note: "hello world" });
});

/** Writes an editor script (run as `sh SCRIPT FILE`) and returns the EDITOR value that runs it. */
function editorScript(body: string): string {
  const dir = mkdtempSync(join(tmpdir(), "k4s-editor-"));
  const path = join(dir, "editor.sh");
  writeFileSync(path, `set -e\n${body}\n`);
  return `sh ${path}`;
}

test("k4s edit saves what the editor wrote, conditional on the version read; a refused save reopens with the error and keeps the file", async () => {
  const svc = (n: string) => `kind: Service\nmetadata: {name: ${n}}\nspec: {selector: '${n}-*'}\n`;
  assert.equal((await k4s(["apply", "-f", "-"], svc("ed-a"))).code, 0);
  let r = await k4s(["edit", "svc", "ed-a"], undefined, { EDITOR: "true" });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "Edit cancelled, no changes made.\n");

  const seen = join(mkdtempSync(join(tmpdir(), "k4s-edit-seen-")), "first");
  r = await k4s(["edit", "svc/ed-a"], undefined, { EDITOR: editorScript(`cp "$1" ${seen}; sed -i "s/selector: ed-a-\\*/selector: ed-b-*/" "$1"`) });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "service/ed-a edited\n");
  assert.match(readFileSync(seen, "utf8"), /^# Please edit the object below\.[^]*\nkind: Service\n[^]*\n {2}name: ed-a\n[^]*\n {2}selector: ed-a-\*\n/);
  assert.equal(JSON.parse((await k4s(["get", "svc", "ed-a", "-o", "json"])).stdout).spec.selector, "ed-b-*");

  // Another writer changes the object while the editor is open: the save is refused, the file
  // reopens with the error on top; saving it unchanged gives up and keeps the file.
  const marker = join(mkdtempSync(join(tmpdir(), "k4s-edit-mark-")), "labelled");
  const label = `node ${K4S_BIN} label svc ed-a meanwhile=yes --server ${server.address}`;
  const editor = editorScript(
    `sed -i "s/selector: ed-b-\\*/selector: ed-c-*/" "$1"; if [ ! -e ${marker} ]; then touch ${marker}; ${label} >/dev/null; else cp "$1" ${marker}; fi`,
  );
  r = await k4s(["edit", "svc", "ed-a"], undefined, { EDITOR: editor });
  assert.equal(r.code, 1);
  const kept = /^A copy of your changes has been stored to "([^"]+)"\n/.exec(r.stderr)?.[1];
  assert.ok(kept, r.stderr);
  assert.match(r.stderr, /\nerror: edit cancelled, no valid changes were saved \(last error: ABORTED: .*\)\n$/);
  assert.match(readFileSync(kept, "utf8"), /selector: ed-c-\*/);
  assert.match(readFileSync(marker, "utf8"), /^# The edit could not be saved:\n# \* ABORTED: /m, "the reopened file shows the error");
  const after = JSON.parse((await k4s(["get", "svc", "ed-a", "-o", "json"])).stdout);
  assert.equal(after.spec.selector, "ed-b-*", "the refused edit changed nothing");
  assert.equal(after.metadata.labels.meanwhile, "yes");

  // An invalid edit shows the validation error in the reopened file; fixing it there saves.
  r = await k4s(["edit", "svc", "ed-a", "-o", "json"], undefined, {
    EDITOR: editorScript(`if grep -q "could not be saved" "$1"; then sed -i 's/"strategy": "bogus"/"strategy": "round-robin"/' "$1"; else sed -i 's/"selector": "ed-b-\\*"/"selector": "ed-b-*", "strategy": "bogus"/' "$1"; fi`),
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "service/ed-a edited\n");
  r = await k4s(["edit", "svc", "ed-missing"], undefined, { EDITOR: "true" });
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'error: NOT_FOUND: Service "ed-missing" not found\n');
});

test("k4s diff -f shows what apply would change as a unified diff; exit 0 none, 1 differences, 2 error; nothing is written", async () => {
  const dir = mkdtempSync(join(tmpdir(), "k4s-diff-"));
  const file = join(dir, "svc.yaml");
  writeFileSync(file, "kind: Service\nmetadata: {name: df-a}\nspec: {selector: 'df-a-*'}\n");
  let r = await k4s(["diff", "-f", file]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stdout, /^--- live\/service\/df-a\n\+\+\+ merged\/service\/df-a\n@@ -0,0 \+1,\d+ @@\n\+apiVersion: k4s\/v1\n\+kind: Service\n\+metadata:\n\+ {2}name: df-a\n/);
  assert.equal((await k4s(["get", "svc", "df-a"])).code, 1, "diff wrote nothing");
  assert.equal((await k4s(["apply", "-f", file])).code, 0);
  r = await k4s(["diff", "-f", file]);
  assert.deepEqual([r.code, r.stdout, r.stderr], [0, "", ""]);

  writeFileSync(file, "kind: Service\nmetadata: {name: df-a, labels: {tier: web}}\nspec: {selector: 'df-b-*'}\n---\nkind: Service\nmetadata: {name: df-new}\nspec: {selector: 'x-*'}\n");
  r = await k4s(["diff", "-f", file]);
  assert.equal(r.code, 1, r.stderr);
  const [changed, created] = r.stdout.split(/(?=^--- )/m);
  assert.match(changed!, /^--- live\/service\/df-a\n\+\+\+ merged\/service\/df-a\n@@ [^\n]+ @@\n/);
  assert.match(changed!, /\n\+ {2}labels:\n\+ {4}tier: web\n/);
  assert.match(changed!, /\n- {2}generation: 1\n\+ {2}generation: 2\n/);
  assert.match(changed!, /\n- {2}selector: df-a-\*\n\+ {2}selector: df-b-\*\n/);
  assert.match(created!, /^--- live\/service\/df-new\n\+\+\+ merged\/service\/df-new\n@@ -0,0 /);
  assert.equal(JSON.parse((await k4s(["get", "svc", "df-a", "-o", "json"])).stdout).spec.selector, "df-a-*");

  r = await k4s(["diff", "-f", "-"], "kind: Service\nmetadata: {name: df-a}\nspec: {selector: 'df-a-*', strategy: bogus}\n");
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^error: INVALID_ARGUMENT: .*spec\.strategy: must be one of/);
  r = await k4s(["diff", "-f", join(dir, "missing.yaml")]);
  assert.equal(r.code, 2);
  r = await runK4s(["diff", "-f", file, "--server", "127.0.0.1:1"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^error: UNAVAILABLE: .*is a k4s server running at 127\.0\.0\.1:1\?/);
});

test("k4s explain KIND[.field] prints the proto comments of the kind, the field and the fields below, as kubectl does", async () => {
  const proto = readFileSync(new URL("../proto/k4s/v1/resources.proto", import.meta.url), "utf8");
  /** The comment right above a line of the proto file, as explain prints it (indented 4). */
  const commentAbove = (line: string) => {
    const lines = proto.split("\n");
    const at = lines.findIndex((l) => l.trim() === line);
    assert.ok(at > 0, line);
    const comment: string[] = [];
    for (let i = at - 1; lines[i]!.trim().startsWith("//"); i--) comment.unshift(`    ${lines[i]!.trim().replace(/^\/\/ ?/, "")}`);
    return comment.join("\n");
  };
  const [kind, field, nested, recursive, unknown, scalar, badKind] = await Promise.all([
    k4s(["explain", "rs"]),
    k4s(["explain", "svc.spec.strategy"]),
    k4s(["explain", "containers.spec"]),
    k4s(["explain", "rs.spec", "--recursive"]),
    k4s(["explain", "c.spec.nope"]),
    k4s(["explain", "c.metadata.name.x"]),
    k4s(["explain", "pods"]),
  ]);
  assert.equal(kind.code, 0, kind.stderr);
  assert.ok(kind.stdout.startsWith(`KIND:       ReplicaSet\nVERSION:    k4s/v1\n\nDESCRIPTION:\n${commentAbove("message ReplicaSet {")}\n\nFIELDS:\n  apiVersion\t<string>\n`), kind.stdout);
  assert.ok(kind.stdout.includes(`  spec\t<ReplicaSetSpec>\n    The desired state.\n`));
  assert.equal(field.stdout, `KIND:       Service\nVERSION:    k4s/v1\n\nFIELD: strategy <string>\n\nDESCRIPTION:\n${commentAbove("string strategy = 3;")}\n`);
  assert.match(nested.stdout, /^KIND: {7}Container\nVERSION: {4}k4s\/v1\n\nFIELD: spec <ContainerSpec>\n\nDESCRIPTION:\n {4}The desired state\.\n\n {4}ContainerSpec is the desired state/);
  assert.ok(nested.stdout.includes(`  module\t<string>\n${commentAbove("string module = 1;")}\n`), nested.stdout);
  assert.match(nested.stdout, /\n {2}env\t<map\[string\]string>\n/);
  assert.match(recursive.stdout, /\nFIELDS:\n {2}replicas\t<integer>\n(.*\n)* {2}template\t<\w+>\n {4}metadata\t<ObjectMeta>\n {6}name\t<string>\n/);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /^error: field "nope" does not exist in Container\.spec \(fields: module, function, /);
  assert.equal(scalar.stderr, "error: Container.metadata.name is <string> and has no fields\n");
  assert.match(badKind.stderr, /unknown kind "pods"/);
});

test("k4s logs of rs/NAME, svc/NAME and -l prefix each line with its container; --since; --previous after a restart; -f of several", async () => {
  let host = spawnK4s(["worker", "--server", server.address, "--name", "logs-host-1"]);
  try {
    const manifest =
      "kind: ReplicaSet\nmetadata: {name: lg}\nspec: {replicas: 2, template: {metadata: {labels: {app: lg}}, spec: {module: workers, function: echo_worker, parameters: {prefix: LG}}}}\n" +
      "---\nkind: Service\nmetadata: {name: lg-svc}\nspec: {selector: 'lg-*'}\n";
    let r = await k4s(["apply", "-f", "-", "--wait", "--timeout", "60s"], manifest);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await k4s(["request", "container/lg-0", '"one"'])).code, 0);
    assert.equal((await k4s(["request", "container/lg-1", '"two"'])).code, 0);
    const expected = /^\[lg-0\] LG: .*one\n\[lg-1\] LG: .*two\n$/;
    const [byRs, bySvc, bySelector, one, none, notRestarted] = await Promise.all([
      k4s(["logs", "rs/lg"]),
      k4s(["logs", "svc/lg-svc"]),
      k4s(["logs", "-l", "app=lg"]),
      k4s(["logs", "lg-0"]),
      k4s(["logs", "-l", "app=nothing"]),
      k4s(["logs", "lg-0", "--previous"]),
    ]);
    assert.match(byRs.stdout, expected, byRs.stderr);
    assert.match(bySvc.stdout, expected, bySvc.stderr);
    assert.match(bySelector.stdout, expected, bySelector.stderr);
    assert.match(one.stdout, /^LG: .*one\n$/, "one container: no prefix");
    assert.deepEqual([none.code, none.stdout, none.stderr], [0, "", "No containers found for -l app=nothing.\n"]);
    assert.equal(notRestarted.code, 1);
    assert.equal(notRestarted.stderr, "error: no previous run: container lg-0 has not been restarted\n");

    // --since: a line older than the window is left out, a new one kept. The old lines are 10 s
    // old and the window 9 s, so the new line is in it however long (up to 9 s) the request and
    // the command take to start on a loaded machine (a 6 s gap and a 5 s window missed it).
    await new Promise((resolve) => setTimeout(resolve, 10_000));
    assert.equal((await k4s(["request", "container/lg-1", '"three"'])).code, 0);
    r = await k4s(["logs", "rs/lg", "--since", "9s"]);
    assert.match(r.stdout, /^\[lg-1\] LG: .*three\n$/, r.stderr);

    const follow = spawnK4s(["logs", "-l", "app=lg", "-f", "--server", server.address]);
    await follow.waitFor("three");
    assert.equal((await k4s(["request", "container/lg-0", '"four"'])).code, 0);
    await follow.waitFor(/\[lg-0\] LG: .*four\n/);
    assert.equal(await follow.kill("SIGINT"), 0);

    // The host dies and another takes the replicas over: a restart; --previous shows the lines
    // of the run before it, not the new ones.
    await host.kill("SIGKILL");
    host = spawnK4s(["worker", "--server", server.address, "--name", "logs-host-2"]);
    await eventually(async () => {
      const rs = JSON.parse((await k4s(["get", "c", "lg-0", "-o", "json"])).stdout);
      return rs.status.restarts === 1 && rs.status.ready;
    }, 60_000, "lg-0 restarted on logs-host-2");
    assert.equal((await k4s(["request", "container/lg-0", '"five"'])).code, 0);
    let [previous, current] = await Promise.all([k4s(["logs", "lg-0", "--previous"]), k4s(["logs", "lg-0"])]);
    assert.match(previous.stdout, /^LG: .*one\nLG: .*four\n$/, previous.stderr);
    assert.match(current.stdout, /^LG: .*one\nLG: .*four\nLG: .*five\n$/);
    // Once more: --previous is the run just before the current one, not every earlier one.
    await host.kill("SIGKILL");
    host = spawnK4s(["worker", "--server", server.address, "--name", "logs-host-3"]);
    await eventually(async () => {
      const c = JSON.parse((await k4s(["get", "c", "lg-0", "-o", "json"])).stdout);
      return c.status.restarts === 2 && c.status.ready;
    }, 60_000, "lg-0 restarted on logs-host-3");
    assert.equal((await k4s(["request", "container/lg-0", '"six"'])).code, 0);
    [previous, current] = await Promise.all([k4s(["logs", "lg-0", "--previous"]), k4s(["logs", "rs/lg", "--previous"])]);
    assert.match(previous.stdout, /^LG: .*five\n$/, previous.stderr);
    assert.match(current.stdout, /^(\[lg-[01]\] .*\n)*\[lg-0\] LG: .*five\n(\[lg-1\] .*\n)*$/, "rs/ prefixes the previous runs of each replica");
  } finally {
    await host.kill("SIGKILL");
  }
});

test("k4s rollout restart rs replaces the replicas one by one: the Service over them always has a ready endpoint and every request is answered", async () => {
  const host = spawnK4s(["worker", "--server", server.address, "--name", "rollout-host"]);
  const client = createClient({ address: server.address });
  const stop = new AbortController();
  try {
    const manifest =
      "kind: ReplicaSet\nmetadata: {name: ro}\nspec: {replicas: 2, template: {spec: {module: workers, function: echo_worker, parameters: {prefix: RO}}}}\n" +
      "---\nkind: Service\nmetadata: {name: ro-svc}\nspec: {selector: 'ro-*'}\n";
    let r = await k4s(["apply", "-f", "-", "--wait", "--timeout", "60s"], manifest);
    assert.equal(r.code, 0, r.stderr);
    const before = (await client.list("Container", { nameGlob: "ro-*" })).items.map((c) => c.metadata!.name).sort();
    assert.deepEqual(before, ["ro-0", "ro-1"]);

    // The Service's endpoints as they change, and a request loop through it, all along.
    const endpointCounts: number[] = [];
    const watching = (async () => {
      for await (const ev of client.watch({ kind: "Service", nameGlob: "ro-svc", signal: stop.signal })) endpointCounts.push(ev.object.status?.endpoints.length ?? 0);
    })().catch((err) => assert.ok(stop.signal.aborted, String(err)));
    const failures: string[] = [];
    let answered = 0;
    const requests = (async () => {
      for (let i = 0; !stop.signal.aborted; i++) {
        try {
          assert.match(String(await client.request("service/ro-svc", `n${i}`, { timeoutMs: 20_000 })), new RegExp(`^RO: .*n${i}`));
          answered++;
        } catch (err) {
          failures.push(String(err));
        }
      }
    })();

    r = await k4s(["rollout", "restart", "rs/ro", "--wait", "--timeout", "120s"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^replicaset\/ro restarted\n(waiting for replicaset\/ro: .*\n)*replicaset\/ro successfully rolled out \(2 of 2 updated replicas ready\)\n$/);
    const rs = await client.get("ReplicaSet", "ro");
    const after = (await client.list("Container", { nameGlob: "ro-*" })).items.filter((c) => !c.metadata?.deletionTimestamp);
    assert.equal(after.length, 2);
    for (const c of after) {
      assert.ok(!before.includes(c.metadata!.name), `${c.metadata!.name} is a new replica`);
      assert.equal(c.metadata!.annotations["k4s.io/restartedAt"], rs.spec!.template!.metadata!.annotations["k4s.io/restartedAt"]);
      assert.ok(c.status?.ready);
    }
    const events = (await k4s(["events", "--for", "rs/ro"])).stdout;
    // One replica at a time: each old one deleted only after one more was created.
    const steps = [...events.matchAll(/(Created|Deleted) container: (ro-\d+)/g)].map((m) => m[1]);
    assert.deepEqual(steps.slice(-4), ["Created", "Deleted", "Created", "Deleted"], events);

    stop.abort();
    await requests;
    await watching;
    assert.deepEqual(failures, [], "no request failed during the rollout");
    assert.ok(answered > 0);
    assert.ok(endpointCounts.length > 2, `endpoint changes seen: ${endpointCounts}`);
    assert.ok(endpointCounts.every((n) => n >= 1), `the Service always had a ready endpoint: ${endpointCounts}`);

    r = await k4s(["rollout", "restart", "svc", "ro-svc"]);
    assert.equal(r.stderr, "error: cannot rollout restart a Service: only ReplicaSets (rs) have replicas to restart\n");
    r = await k4s(["rollout", "restart", "rs", "ro-missing"]);
    assert.equal(r.stderr, 'error: NOT_FOUND: ReplicaSet "ro-missing" not found\n');
  } finally {
    stop.abort();
    await client.close();
    await host.kill("SIGKILL");
  }
});

test("long waits draw a progress bar on a terminal's stderr and plain lines when piped; --color=always|never", async () => {
  // The replicas run a module that no host serves until the test starts one, once each command
  // has shown that it waits: the waits are long on any machine, however fast.
  const dir = mkdtempSync(join(tmpdir(), "k4s-progress-"));
  writeFileSync(join(dir, "pgl.mjs"), `import { defineWorker } from ${JSON.stringify(WORKERS_SDK_JS)};\nexport const echo = defineWorker(async (ctx) => { await ctx.handle((msg) => msg.value); });\n`);
  const rsOf = (name: string, replicas: number) =>
    `kind: ReplicaSet\nmetadata: {name: ${name}}\nspec: {replicas: ${replicas}, template: {spec: {module: pgl, function: echo}}}\n`;
  writeFileSync(join(dir, "pga.yaml"), rsOf("pga", 1));
  let r = await k4s(["apply", "-f", "-"], rsOf("pgb", 0));
  assert.equal(r.code, 0, r.stderr);
  let host: ReturnType<typeof spawnK4s> | undefined;
  try {
    // Piped: a plain line each time the words change; no escapes.
    const piped = spawnK4s(["apply", "-f", join(dir, "pga.yaml"), "--wait", "--timeout", "60s", "--server", server.address]);
    // On a terminal (script gives the command one; it shows stdout and stderr together): a bar.
    const tty = spawnInTerminal(`${process.execPath} ${K4S_BIN} scale rs pgb --replicas 3 --wait --timeout 60s --server ${server.address}`, {});
    await piped.waitFor("waiting for replicaset/pga: 0 of 1 replicas ready", 30_000);
    await tty.waitFor(/\[-+\] 0\/3 waiting for replicaset\/pgb: 0 of 3 replicas ready/, 30_000);
    host = spawnK4s(["worker", "--server", server.address, "--name", "progress-host", "--module", `pgl=${join(dir, "pgl.mjs")}`]);
    assert.equal(await piped.exited, 0, piped.stderr());
    assert.match(piped.stdout(), /^replicaset\/pga created\n(waiting for replicaset\/pga: .*\n)+replicaset\/pga ready \(1 of 1 replicas ready\)\n$/);
    assert.doesNotMatch(piped.stdout() + piped.stderr(), /\x1b|#/, "piped: no bar, no colour");
    assert.equal(await tty.exited, 0, tty.stdout());
    await eventually(() => /ready \(3 of 3 replicas ready\)\r\n$/.test(tty.stdout()), 10_000, "the terminal's last line");
    const shown = tty.stdout();
    assert.match(shown, /^replicaset\/pgb scaled\r\n/, JSON.stringify(shown));
    assert.match(shown, /\r\x1b\[2K\[-{20}\] 0\/3 waiting for replicaset\/pgb: 0 of 3 replicas ready/, JSON.stringify(shown));
    assert.match(shown, /\r\x1b\[2Kreplicaset\/pgb ready \(3 of 3 replicas ready\)\r\n$/, JSON.stringify(shown));
    assert.doesNotMatch(shown, /\nwaiting for/, "no plain progress lines on a terminal");

    r = await k4s(["scale", "rs/pgb", "--replicas", "1", "--wait", "--timeout", "60s"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^replicaset\/pgb scaled\n(waiting for replicaset\/pgb: .*\n)*replicaset\/pgb ready \(1 of 1 replicas ready\)\n$/);
    assert.doesNotMatch(r.stdout + r.stderr, /\x1b|#/, "piped: no bar, no colour");

    const [always, never, noColour] = await Promise.all([
      k4s(["get", "c", "pga-0", "--color=always"]),
      inTerminal(`${process.execPath} ${K4S_BIN} get c pga-0 --color never --server ${server.address}`, {}),
      inTerminal(`${process.execPath} ${K4S_BIN} get c pga-0 --server ${server.address}`, { NO_COLOR: "1" }),
    ]);
    assert.match(always.stdout, /\x1b\[32mRunning\x1b\[39m/);
    assert.match(never.stdout, /pga-0\s+Running\s/);
    assert.doesNotMatch(never.stdout, /\x1b\[/);
    assert.doesNotMatch(noColour.stdout, /\x1b\[/);
    r = await k4s(["get", "c", "--color=sometimes"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--color <when>' argument 'sometimes' is invalid\. Allowed choices are auto, always, never/);
  } finally {
    await k4s(["delete", "rs", "pga", "pgb"]);
    await host?.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
