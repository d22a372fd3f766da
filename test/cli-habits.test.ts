/**
 * kubectl's small habits in the k4s command, run as a real process against a real server:
 * delete goes on past what is missing, get takes several names, watch rows stay aligned and say
 * deletions once, --help shows durations as durations, --version.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { K4sServer } from "../src/server/server.js";
import { inTerminal, K4S_BIN, runK4s, spawnK4s, startTestServer } from "./helpers.js";

let server: K4sServer;
let dir: string;

before(async () => {
  server = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), "k4s-habits-"));
});

after(async () => {
  await server.stop();
});

function k4s(args: string[], input?: string) {
  return runK4s([...args, "--server", server.address], {}, input);
}

const services = (...names: string[]) =>
  names.map((n) => `kind: Service\nmetadata: {name: ${n}}\nspec: {selector: "${n}-*"}\n`).join("---\n");

test("delete -f and delete KIND A B C go on past objects that do not exist, report each, and exit 1", async () => {
  const path = join(dir, "three.yaml");
  writeFileSync(path, services("del-a", "del-b", "del-c"));
  assert.equal((await k4s(["apply", "-f", path])).code, 0);
  assert.equal((await k4s(["delete", "svc", "del-b"])).code, 0);
  let r = await k4s(["delete", "-f", path]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "service/del-a deleted\nservice/del-c deleted\n");
  assert.equal(r.stderr, 'error: NOT_FOUND: Service "del-b" not found\n');

  assert.equal((await k4s(["apply", "-f", "-"], services("del-x", "del-z"))).code, 0);
  r = await k4s(["delete", "svc", "del-x", "del-y", "del-z", "del-w"]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "service/del-x deleted\nservice/del-z deleted\n");
  assert.equal(r.stderr, 'error: NOT_FOUND: Service "del-y" not found\nerror: NOT_FOUND: Service "del-w" not found\n');
});

test("get takes several names and KIND/NAMEs of several kinds; --show-labels; a missing name is reported and the rest printed", async () => {
  const applied = await k4s(
    ["apply", "-f", "-"],
    services("g-a", "g-b", "g-c").replace("name: g-a}", "name: g-a, labels: {app: a, tier: x}}") +
      "---\nkind: ReplicaSet\nmetadata: {name: g-rs}\nspec: {replicas: 0, template: {spec: {module: workers, function: echo_worker}}}\n",
  );
  assert.equal(applied.code, 0, applied.stderr);
  const [two, missing, kinds, labels, json] = await Promise.all([
    k4s(["get", "svc", "g-a", "g-c", "-o", "name"]),
    k4s(["get", "svc", "g-a", "g-missing", "g-c"]),
    k4s(["get", "svc/g-b", "rs/g-rs", "svc/g-c"]),
    k4s(["get", "svc", "g-a", "g-b", "--show-labels"]),
    k4s(["get", "services", "g-c", "g-b", "-o", "json"]),
  ]);
  assert.equal(two.stdout, "service/g-a\nservice/g-c\n", two.stderr);
  assert.equal(missing.code, 1);
  assert.match(missing.stdout, /^NAME\s+SELECTOR\s+STRATEGY\s+ENDPOINTS\s+AGE\ng-a\s+g-a-\*\s.*\ng-c\s+g-c-\*\s.*\n$/);
  assert.equal(missing.stderr, 'error: NOT_FOUND: Service "g-missing" not found\n');
  assert.match(kinds.stdout, /^NAME\s+SELECTOR.*\nservice\/g-b\s.*\nservice\/g-c\s.*\n\nNAME\s+DESIRED\s+CURRENT\s+READY\s+AGE\nreplicaset\/g-rs\s+0\s+0\s+0\s/);
  assert.match(labels.stdout, /^NAME\s+SELECTOR\s+STRATEGY\s+ENDPOINTS\s+AGE\s+LABELS\ng-a\s.*\s+app=a,tier=x\ng-b\s.*\s+<none>\n$/);
  const list = JSON.parse(json.stdout);
  assert.equal(list.kind, "List");
  assert.deepEqual(list.items.map((i: { metadata: { name: string } }) => i.metadata.name), ["g-b", "g-c"]);
});

/** The column at which a header's title starts, and the same column in every row below. */
function assertAligned(text: string, title: string): void {
  const lines = text.split("\n").filter((l) => l !== "");
  const header = lines.findIndex((l) => l.startsWith("NAME") || l.startsWith("EVENT"));
  const at = lines[header]!.indexOf(title);
  assert.ok(at > 0, `${title} in ${lines[header]}`);
  for (const l of lines.slice(header + 1)) {
    if (l.startsWith("NAME") || l.startsWith("EVENT")) break;
    if (l.length <= at) continue; // an empty last column
    assert.equal(l[at - 1], " ", `column ${title} at ${at} in:\n${text}`);
    assert.notEqual(l[at], " ", `column ${title} at ${at} in:\n${text}`);
  }
}

test("with a worker host: get -w prints a row only when it shows something new, a deletion once, columns in line; colour only on a terminal", async () => {
  const host = spawnK4s(["worker", "--server", server.address, "--name", "habits-host"]);
  try {
    const one = "kind: Container\nmetadata: {name: w1}\nspec: {module: workers, function: echo_worker}\n";
    let r = await k4s(["apply", "-f", "-", "--wait", "--timeout", "30s"], one);
    assert.equal(r.code, 0, r.stderr);
    const w = spawnK4s(["get", "c", "w1", "watch-a-much-longer-name", "-w", "--server", server.address]);
    const events = spawnK4s(["get", "c", "-w", "--output-watch-events", "--server", server.address]);
    try {
      await w.waitFor(/\nw1\s+Running\s/);
      await events.waitFor(/\nADDED\s+w1\s+Running\s/);
      r = await k4s(["apply", "-f", "-", "--wait", "--timeout", "30s"], one.replace("w1", "watch-a-much-longer-name"));
      assert.equal(r.code, 0, r.stderr);
      await w.waitFor(/\nwatch-a-much-longer-name\s+Running\s/);
      r = await k4s(["delete", "c", "w1"]);
      assert.equal(r.code, 0, r.stderr);
      await w.waitFor(/\nw1\s+Deleted\s/);
      await events.waitFor(/\nDELETED\s+w1\s+Deleted\s/);
      const out = w.stdout();
      assert.equal(out.match(/\nw1\s+Terminating\s/g)?.length ?? 0, 1, `one Terminating row:\n${out}`);
      assert.equal(out.match(/\nw1\s+Deleted\s/g)?.length, 1, `one Deleted row:\n${out}`);
      assert.equal(out.match(/\nw1\s+Running\s/g)?.length, 1, `status updates that change nothing shown print nothing:\n${out}`);
      for (const title of ["PHASE", "READY", "RESTARTS", "HOST", "AGE", "MESSAGE"]) assertAligned(out, title);
      assert.match(events.stdout(), /^EVENT\s+NAME\s+PHASE/);
      for (const title of ["NAME", "PHASE", "AGE"]) assertAligned(events.stdout(), title);
    } finally {
      await w.kill("SIGINT");
      await events.kill("SIGINT");
    }

    // A terminal gets colour (through `script`, which gives the command a pseudo-terminal); a
    // pipe and NO_COLOR get none.
    const viaTerminal = (env: Record<string, string>) =>
      inTerminal(`${process.execPath} ${K4S_BIN} get c watch-a-much-longer-name --server ${server.address}`, env);
    const [tty, noColour, piped] = await Promise.all([viaTerminal({}), viaTerminal({ NO_COLOR: "1" }), k4s(["get", "c", "watch-a-much-longer-name"])]);
    assert.match(tty.stdout, /\x1b\[32mRunning\x1b\[39m/, JSON.stringify(tty.stdout));
    assert.match(noColour.stdout, /watch-a-much-longer-name\s+Running\s/);
    assert.doesNotMatch(noColour.stdout, /\x1b\[/);
    assert.doesNotMatch(piped.stdout, /\x1b\[/);
  } finally {
    await host.kill();
  }
});

test("get all -w follows every kind with kind-prefixed names; --watch-only prints changes only", async () => {
  assert.equal((await k4s(["apply", "-f", "-"], services("wo-old"))).code, 0);
  const all = spawnK4s(["get", "all", "-w", "--server", server.address]);
  const only = spawnK4s(["get", "svc", "--watch-only", "--server", server.address]);
  try {
    await all.waitFor(/\nservice\/wo-old\s/);
    // --watch-only prints nothing until a change; make changes until one shows.
    for (let i = 0; !/\nwo-new-\d/.test(only.stdout()); i++) {
      assert.ok(i < 30, `no change shown by --watch-only:\n${only.stdout()}${only.stderr()}`);
      assert.equal((await k4s(["apply", "-f", "-"], services(`wo-new-${i}`))).code, 0);
      await only.waitFor(/\nwo-new-\d/, 2000).catch(() => {});
    }
    assert.match(only.stdout(), /^NAME\s+SELECTOR\s+STRATEGY\s+ENDPOINTS\s+AGE\nwo-new-\d/);
    assert.doesNotMatch(only.stdout(), /wo-old/);
    await all.waitFor(/\nservice\/wo-new-0\s/);
    const rs = "kind: ReplicaSet\nmetadata: {name: wo-rs}\nspec: {replicas: 0, template: {spec: {module: workers, function: echo_worker}}}\n";
    assert.equal((await k4s(["apply", "-f", "-"], rs)).code, 0);
    await all.waitFor(/\n\nNAME\s+DESIRED\s+CURRENT\s+READY\s+AGE\n(.*\n)*replicaset\/wo-rs\s+0\s/);
  } finally {
    assert.equal(await all.kill("SIGINT"), 0);
    assert.equal(await only.kill("SIGINT"), 0);
  }
});

test("--help shows durations as durations and the full command name; k4s --version prints the package version", async () => {
  const version = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")).version as string;
  const [apply, request, example, demo, v] = await Promise.all([
    runK4s(["apply", "--help"]),
    runK4s(["request", "--help"]),
    runK4s(["example", "--help"]),
    runK4s(["demo", "--help"]),
    runK4s(["--version"]),
  ]);
  assert.equal(apply.code, 0);
  // Help text wraps at the terminal's width: compare it with spaces collapsed.
  const flat = (text: string) => text.replace(/\s+/g, " ");
  assert.match(flat(apply.stdout), /--timeout <duration> how long --wait waits, e\.g\. 30s, 2m \(default: 1m\)/);
  assert.doesNotMatch(apply.stdout, /60000/);
  assert.match(flat(request.stdout), /--timeout <duration> how long to wait for the reply, e\.g\. 500ms, 5s \(default: 30s\)/);
  assert.match(example.stdout, /^Usage: k4s example \[options\]\n/);
  assert.match(demo.stdout, /^Usage: k4s demo \[options\]\n/);
  assert.equal(v.code, 0);
  assert.equal(v.stdout, `${version}\n`);
});
