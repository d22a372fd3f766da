/**
 * Label selectors in kubectl's forms: the parser and matcher alone, then `k4s get -l` through
 * the real command against a real server (the server evaluates them, for List and Watch).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { matchesLabelSelector, parseLabelSelector } from "../src/api/label-selector.js";
import type { K4sServer } from "../src/server/server.js";
import { createClient } from "../src/client/client.js";
import { runK4s, spawnK4s, startTestServer } from "./helpers.js";

test("parseLabelSelector reads kubectl's forms and matches as Kubernetes does", () => {
  const m = (sel: string, labels: Record<string, string>) => matchesLabelSelector(labels, parseLabelSelector(sel));
  const web = { app: "web", tier: "front" };
  const db = { app: "db" };
  const none = {};
  assert.ok(m("app=web", web) && !m("app=web", db) && !m("app=web", none));
  assert.ok(m("app==web", web) && !m("app==web", db));
  assert.ok(!m("app!=web", web) && m("app!=web", db) && m("app!=web", none), "!= selects objects without the key too");
  assert.ok(m("app in (web, db)", web) && m("app in (web,db)", db) && !m("app in (web,db)", none));
  assert.ok(!m("app notin (web)", web) && m("app notin (web)", db) && m("app notin (web)", none));
  assert.ok(m("tier", web) && !m("tier", db));
  assert.ok(!m("!tier", web) && m("!tier", db) && m("!tier", none));
  assert.ok(m("app=web,tier", web) && !m("app=web,!tier", web), "every requirement must hold");
  assert.ok(m(" app = web , tier ", web), "spaces around operators are allowed");
  assert.ok(m("app=", { app: "" }) && !m("app=", web), "an empty value selects the empty label");
  assert.ok(m("example.com/team=a", { "example.com/team": "a" }));
  assert.ok(m("", web) && m("", none), "empty selects everything");
  assert.deepEqual(parseLabelSelector("a in (x,y),!b").requirements, [
    { key: "a", op: "in", values: ["x", "y"] },
    { key: "b", op: "!exists" },
  ]);

  const bad: [string, RegExp][] = [
    ["app!", /label selector "app!": unexpected "!" after "app"/],
    ["=x", /expected a label key before "="/],
    ["app=a b", /expected "," between requirements, got "b"/],
    ["app in web", /expected \( after in\/notin/],
    ["app in (a,b", /expected , or \) in a value set/],
    ["app>1", /">" is not supported: use =, ==, !=, in, notin, KEY or !KEY/],
    ["app foo", /unexpected "foo" after "app"/],
    ["Bad Key=1", /unexpected "Key"/],
    ["-x=1", /key "-x"/],
    ["a=b=c", /expected "," between requirements, got "="/],
    ["a=" + "v".repeat(64), /must be at most 63 characters/],
  ];
  for (const [sel, re] of bad) {
    assert.throws(
      () => parseLabelSelector(sel),
      (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument && re.test(e.rawMessage),
      sel,
    );
  }
});

let server: K4sServer;

before(async () => {
  server = await startTestServer();
});

after(async () => {
  await server.stop();
});

async function names(selector: string): Promise<{ code: number | string; names: string[]; stderr: string }> {
  const r = await runK4s(["get", "svc", "-l", selector, "-o", "name", "--server", server.address]);
  return { code: r.code, names: r.stdout.split("\n").filter(Boolean), stderr: r.stderr };
}

test("k4s get -l takes every kubectl selector form; the server evaluates it; a bad one is one clear line", async () => {
  const client = createClient({ address: server.address });
  try {
    await client.apply(
      ["web", "db", "plain"]
        .map((n) => {
          const labels = n === "web" ? "{app: web, tier: front}" : n === "db" ? "{app: db}" : "{}";
          return `kind: Service\nmetadata: {name: sel-${n}, labels: ${labels}}\nspec: {selector: "x-*"}\n`;
        })
        .join("---\n"),
    );
    const cases: [string, string[]][] = [
      ["app=web", ["service/sel-web"]],
      ["app==db", ["service/sel-db"]],
      ["app!=web", ["service/sel-db", "service/sel-plain"]],
      ["app in (web,db)", ["service/sel-db", "service/sel-web"]],
      ["app notin (web)", ["service/sel-db", "service/sel-plain"]],
      ["tier", ["service/sel-web"]],
      ["!app", ["service/sel-plain"]],
      ["app,!tier", ["service/sel-db"]],
    ];
    const results = await Promise.all(cases.map(([sel]) => names(sel)));
    results.forEach((r, i) => {
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.names, cases[i]![1], `-l '${cases[i]![0]}'`);
    });
    // Two -l flags are ANDed, as one comma-separated selector.
    const two = await runK4s(["get", "svc", "-l", "app", "-l", "tier=front", "-o", "name", "--server", server.address]);
    assert.equal(two.stdout, "service/sel-web\n");

    const bad = await runK4s(["get", "svc", "-l", "app>1", "--server", server.address]);
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr, 'error: INVALID_ARGUMENT: label selector "app>1": ">" is not supported: use =, ==, !=, in, notin, KEY or !KEY\n');

    // The SDK takes the same text, and watches filter by it too.
    const listed = await client.list("Service", { labelSelector: "app notin (db)" });
    assert.deepEqual(listed.items.map((s) => s.metadata?.name), ["sel-plain", "sel-web"]);
    const w = spawnK4s(["get", "svc", "-w", "-l", "app!=web", "--server", server.address]);
    try {
      await w.waitFor(/\nsel-plain\s/);
      await client.apply('kind: Service\nmetadata: {name: sel-new, labels: {app: web}}\nspec: {selector: "y-*"}\n');
      await client.apply('kind: Service\nmetadata: {name: sel-other, labels: {app: other}}\nspec: {selector: "y-*"}\n');
      await w.waitFor(/\nsel-other\s/);
      assert.doesNotMatch(w.stdout(), /sel-new|sel-web/);
    } finally {
      await w.kill("SIGINT");
    }
  } finally {
    await client.close();
  }
});
