/**
 * Manifest parsing and object validation: the seed's YAML, JSON, both field spellings, free
 * parameters, round-trip of server output, and every kind of rejected input with a message
 * naming the document, the field and the reason.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create, toJson } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { stringify } from "yaml";
import { parseManifest, parseManifestDocuments, validateObject, MAX_MANIFEST_BYTES } from "../src/api/manifest.js";
import { matchesSelector, isValidGlob } from "../src/api/selector.js";
import { validateLabelKey, validateLabelValue, validateName } from "../src/api/names.js";
import { assertValid, formatIssues } from "../src/api/validate.js";
import { kindOf } from "../src/api/kinds.js";
import { fieldViolations } from "../src/api/bad-request.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { JsonObject } from "@bufbuild/protobuf";
import { ContainerSpecSchema, ContainerSchema, ReplicaSetSchema, ServiceSchema, type Container, type ReplicaSet, type Service } from "../src/gen/k4s/v1/resources_pb.js";

function rejects(text: string, re: RegExp): string {
  try {
    parseManifest(text);
  } catch (e) {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${String(e)}`);
    assert.equal(e.code, Code.InvalidArgument);
    assert.match(e.rawMessage, re);
    return e.rawMessage;
  }
  assert.fail(`manifest was accepted, expected ${re}`);
}

const SEED = `
kind: Container
metadata:
  name: my-worker
spec:
  module: workers
  function: echo_worker
  parameters:
    prefix: "HELLO"
---
# a comment-only document is skipped
---
kind: ReplicaSet
metadata:
  name: calculator-rs
  labels: {app: calc}
spec:
  replicas: 3
  container: calculator-template
---
kind: Service
metadata:
  name: calculator-svc
spec:
  selector: "calculator-rs-*"
  strategy: round-robin
`;

test("parses the seed's multi-document YAML into typed objects, skipping empty documents", () => {
  const docs = parseManifestDocuments(SEED);
  assert.deepEqual(
    docs.map((d) => [d.index, kindOf(d.object), d.object.metadata!.name]),
    [
      [1, "Container", "my-worker"],
      [3, "ReplicaSet", "calculator-rs"],
      [4, "Service", "calculator-svc"],
    ],
  );
  const c = docs[0]!.object as Container;
  assert.equal(c.apiVersion, "k4s/v1");
  assert.equal(c.kind, "Container");
  assert.equal(c.spec!.function, "echo_worker");
  assert.deepEqual(c.spec!.parameters, { prefix: "HELLO" });
  const rs = docs[1]!.object as ReplicaSet;
  assert.equal(rs.spec!.replicas, 3);
  assert.deepEqual(rs.metadata!.labels, { app: "calc" });
  assert.deepEqual(parseManifest(""), []);
  assert.deepEqual(parseManifest("---\n# nothing\n---\n"), []);
});

test("accepts JSON, camelCase and snake_case names, and keeps parameter keys as given", () => {
  const [c] = parseManifest(
    JSON.stringify({
      apiVersion: "k4s/v1",
      kind: "Container",
      metadata: { name: "proc" },
      spec: {
        module: "workers",
        function: "processor",
        restart_policy: "OnFailure",
        queueLimit: 10,
        termination_grace_seconds: 3,
        parameters: { forward_to: "agg", window_size: 5, nested: { a: [1, "b", true, null] } },
      },
    }),
  ) as [Container];
  assert.equal(c.spec!.restartPolicy, "OnFailure");
  assert.equal(c.spec!.queueLimit, 10);
  assert.equal(c.spec!.terminationGraceSeconds, 3);
  const params = (toJson(ContainerSchema, c) as { spec: { parameters: unknown } }).spec;
  assert.deepEqual(params.parameters, { forward_to: "agg", window_size: 5, nested: { a: [1, "b", true, null] } });
  const [rs] = parseManifest(
    "kind: ReplicaSet\nmetadata: {name: calc}\nspec:\n  template:\n    metadata: {labels: {app: calc}}\n    spec: {command: [python3, w.py], env: {MODE: fast}}\n",
  ) as [ReplicaSet];
  assert.equal(rs.spec!.replicas, undefined, "unset replicas stays unset (the default 1 applies)");
  assert.deepEqual(rs.spec!.template!.spec!.command, ["python3", "w.py"]);
  assert.deepEqual(rs.spec!.template!.metadata!.labels, { app: "calc" });
  const [svc] = parseManifest("kind: Service\nmetadata: {name: s}\nspec: {match_labels: {app: calc}}\n") as [Service];
  assert.deepEqual(svc.spec!.matchLabels, { app: "calc" });
});

test("server output round-trips: status and server-set metadata are accepted and ignored", () => {
  const stored = create(ReplicaSetSchema, {
    apiVersion: "k4s/v1",
    kind: "ReplicaSet",
    metadata: {
      name: "calc",
      uid: "0b5c1d8e-0000-4000-8000-000000000000",
      resourceVersion: "42",
      generation: 3n,
      creationTimestamp: timestampNow(),
      deletionTimestamp: timestampNow(),
      labels: { app: "calc" },
    },
    spec: { replicas: 2, container: "calc-template" },
    status: { replicas: 2, readyReplicas: 1, observedGeneration: 3n },
  });
  const yaml = stringify(toJson(ReplicaSetSchema, stored));
  assert.match(yaml, /generation: "3"/, "64-bit integers print as strings in protobuf JSON");
  const [back] = parseManifest(yaml) as [ReplicaSet];
  assert.equal(back.metadata!.uid, "");
  assert.equal(back.metadata!.resourceVersion, "");
  assert.equal(back.metadata!.generation, 0n);
  assert.equal(back.metadata!.creationTimestamp, undefined);
  assert.equal(back.status, undefined);
  assert.deepEqual(back.metadata!.labels, { app: "calc" });
  assert.equal(back.spec!.replicas, 2);
  assert.equal(back.spec!.container, "calc-template");
});

test("accepts a List of objects (what `get -o yaml` prints for several), naming items in errors", () => {
  const list = {
    apiVersion: "k4s/v1",
    kind: "List",
    items: [
      toJson(ContainerSchema, create(ContainerSchema, { apiVersion: "k4s/v1", kind: "Container", metadata: { name: "a", uid: "u1" }, status: { phase: "Running" } })),
      toJson(ServiceSchema, create(ServiceSchema, { apiVersion: "k4s/v1", kind: "Service", metadata: { name: "s" }, spec: { selector: "a*" } })),
    ],
  };
  const docs = parseManifestDocuments(`kind: Container\nmetadata: {name: first}\n---\n${stringify(list)}`);
  assert.deepEqual(
    docs.map((d) => `${d.index} ${kindOf(d.object)}/${d.object.metadata!.name}`),
    ["1 Container/first", "2 Container/a", "2 Service/s"],
  );
  rejects(
    "kind: List\nitems:\n- kind: Container\n  metadata: {name: ok}\n- kind: Container\n  metadata: {name: Bad}\n",
    /^document 1 items\[1\] \(Container "Bad"\): metadata\.name: /,
  );
  rejects("kind: List\nitems:\n- kind: Container\n  metadata: {name: a}\n- kind: Container\n  metadata: {name: a}\n", /^document 1 items\[1\] \(Container "a"\): duplicate of document 1 items\[0\]/);
  rejects("kind: List\nitems: {a: 1}\n", /^document 1 \(List\): items: expected a list, got a mapping$/);
});

test("rejects YAML syntax errors, naming the document and the line", () => {
  rejects("kind: Container\nmetadata: {name: a}\n---\nkind: Container\nmetadata: {name: b\n", /^document 2: invalid YAML: .*line \d+, column \d+/);
  rejects("kind: Container\nkind: Container\nmetadata: {name: a}\n", /^document 1: invalid YAML: Map keys must be unique/);
});

test("rejects unknown kinds, a missing kind and a wrong apiVersion", () => {
  rejects("kind: Pod\nmetadata: {name: a}\n", /^document 1: kind: unknown kind string "Pod", expected one of Container, ReplicaSet, Service$/);
  rejects("metadata: {name: a}\n", /^document 1: kind: required/);
  rejects("kind: replicaset\nmetadata: {name: a}\n", /^document 1: kind: unknown kind string "replicaset" \(did you mean "ReplicaSet"\?\), expected one of/);
  rejects("apiVersion: apps/v1\nkind: Container\nmetadata: {name: a}\n", /^document 1 \(Container "a"\): apiVersion: must be k4s\/v1, got string "apps\/v1"$/);
  rejects("- kind: Container\n", /^document 1: expected a mapping with kind, metadata and spec, got a list$/);
});

test("rejects unknown fields with a suggestion, and wrong types with the expected one", () => {
  rejects("kind: Container\nmetadata: {name: a}\nspec: {modul: workers}\n", /^document 1 \(Container "a"\): spec\.modul: unknown field "modul" \(did you mean "module"\?\)$/);
  rejects("kind: Container\nmetadata: {name: a, nme: x}\n", /metadata\.nme: unknown field "nme"/);
  rejects("kind: Container\nmetadata: {name: a}\nfoo: 1\n", /^document 1 \(Container "a"\): foo: unknown field "foo" \(known: /);
  rejects(
    "kind: ReplicaSet\nmetadata: {name: calc}\nspec: {replicas: three, container: x}\n",
    /^document 1 \(ReplicaSet "calc"\): spec\.replicas: expected an integer, got string "three"$/,
  );
  rejects("kind: Container\nmetadata: {name: a}\nspec: {command: python3}\n", /spec\.command: expected a list, got string "python3"/);
  rejects("kind: Container\nmetadata: {name: a, labels: {version: 1}}\n", /metadata\.labels\.version: expected a string \(quote the value\), got number 1/);
  rejects("kind: Container\nmetadata: {name: a}\nspec: {concurrency: 1.5}\n", /spec\.concurrency: expected an integer, got number 1\.5/);
  rejects("kind: Container\nmetadata: {name: a}\nspec: {parameters: [1]}\n", /spec\.parameters: expected a mapping, got a list/);
  rejects("kind: Container\nmetadata: [a]\n", /^document 1 \(Container\): metadata: expected a mapping, got a list$/);
  rejects("kind: Container\nmetadata: {name: a}\nspec: {restartPolicy: Always, restart_policy: Never}\n", /spec\.restartPolicy: given twice/);
});

test("rejects bad names, and checks the semantic rules of each kind", () => {
  rejects("kind: Container\nmetadata: {name: Bad_Name}\n", /^document 1 \(Container "Bad_Name"\): metadata\.name: "Bad_Name" is not a valid name/);
  rejects("kind: Container\nmetadata: {}\n", /^document 1 \(Container\): metadata\.name: required$/);
  rejects(`kind: Container\nmetadata: {name: ${"a".repeat(64)}}\n`, /metadata\.name: must be at most 63 characters, got 64/);
  rejects(
    "kind: Container\nmetadata: {name: a}\n---\nkind: ReplicaSet\nmetadata: {name: calc}\nspec: {replicas: -1, container: a}\n",
    /^document 2 \(ReplicaSet "calc"\): spec\.replicas: must be between 0 and 10000, got -1$/,
  );
  rejects("kind: ReplicaSet\nmetadata: {name: calc}\nspec: {replicas: 1}\n", /spec: set exactly one of spec\.container .* or spec\.template/);
  rejects(
    "kind: ReplicaSet\nmetadata: {name: calc}\nspec: {container: a, template: {spec: {}}}\n",
    /spec: set exactly one of spec\.container/,
  );
  rejects(
    "kind: ReplicaSet\nmetadata: {name: calc}\nspec: {template: {spec: {module: m, function: f, command: [x]}}}\n",
    /spec\.template\.spec\.command: set either module and function, or command, not both/,
  );
  rejects("kind: Container\nmetadata: {name: a}\nspec: {module: workers}\n", /spec\.function: required when module is set/);
  rejects("kind: Container\nmetadata: {name: a}\nspec: {restartPolicy: Sometimes}\n", /spec\.restartPolicy: must be one of Always, OnFailure, Never, got "Sometimes"/);
  rejects("kind: Container\nmetadata: {name: a}\nspec: {delivery: persistent}\n", /spec\.delivery: must be one of memory, durable, got "persistent"/);
  rejects(
    "kind: ReplicaSet\nmetadata: {name: rs}\nspec: {replicas: 1, template: {spec: {module: m, function: f, delivery: Durable}}}\n",
    /spec\.template\.spec\.delivery: must be one of memory, durable, got "Durable"/,
  );
  rejects("kind: Container\nmetadata: {name: a}\nspec: {concurrency: 1001}\n", /spec\.concurrency: must be between 0 and 1000, got 1001/);
  rejects("kind: Container\nmetadata: {name: a}\nspec: {queueLimit: 1000001}\n", /spec\.queueLimit: must be between 0 and 1000000/);
  rejects("kind: Container\nmetadata: {name: a}\nspec: {terminationGraceSeconds: -1}\n", /spec\.terminationGraceSeconds: must be between 0 and 3600, got -1/);
  rejects("kind: Container\nmetadata: {name: a, labels: {'bad key!': x}}\n", /metadata\.labels: key "bad key!"/);
  rejects("kind: Service\nmetadata: {name: s}\nspec: {strategy: random}\n", /spec\.selector: set spec\.selector .* and\/or spec\.matchLabels/);
  rejects("kind: Service\nmetadata: {name: s}\nspec: {selector: 'a/b'}\n", /spec\.selector: "a\/b" is not a valid glob/);
  rejects("kind: Service\nmetadata: {name: s}\nspec: {selector: 'a*', strategy: fastest}\n", /spec\.strategy: must be one of random, round-robin, least-in-flight, got "fastest"/);
  // Several problems of one document are reported together.
  const msg = rejects(
    "kind: Container\nmetadata: {name: a}\nspec: {concurrency: -1, queueLimit: -1}\n",
    /spec\.concurrency: must be between 0 and 1000, got -1; spec\.queueLimit: must be between 0 and 1000000, got -1/,
  );
  assert.ok(msg.startsWith('document 1 (Container "a"): '));
});

test("rejects duplicates, oversized manifests and alias bombs", () => {
  rejects(
    "kind: Container\nmetadata: {name: a}\n---\nkind: Service\nmetadata: {name: a}\nspec: {selector: a}\n---\nkind: Container\nmetadata: {name: a}\n",
    /^document 3 \(Container "a"\): duplicate of document 1/,
  );
  const big = "kind: Container\nmetadata: {name: a}\n# " + "x".repeat(MAX_MANIFEST_BYTES);
  rejects(big, /^manifest is \d+ bytes, more than the limit of 1048576 bytes \(1 MiB\)$/);
  const bomb = [
    "a: &a [x, x, x, x, x, x, x, x, x]",
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]",
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]",
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]",
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]",
    "kind: Container",
  ].join("\n");
  rejects(bomb, /^document 1: invalid YAML: too many alias expansions \(limit 50\)/);
  // A few aliases are fine.
  const [c] = parseManifest("kind: Container\nmetadata: {name: a, labels: &l {app: x}}\nspec: {env: *l}\n") as [Container];
  assert.deepEqual(c.spec!.env, { app: "x" });
});

test("reports problems of several documents in one error", () => {
  rejects(
    "kind: Pod\nmetadata: {name: a}\n---\nkind: Container\nmetadata: {name: B}\n",
    /^document 1: kind: unknown kind .*; document 2 \(Container "B"\): metadata\.name: /,
  );
});

test("each problem is also a google.rpc.BadRequest field violation: manifest[i] (0-based) and the JSON path", () => {
  const text = [
    "kind: Pod\nmetadata: {name: a}",
    "kind: ReplicaSet\nmetadata: {name: calc}\nspec: {replicas: -1, container: t}",
    "kind: List\nitems:\n- kind: Container\n  metadata: {name: x}\n  spec: {queueLimit: nope}",
    "kind: Container\nmetadata: {name: y}\nspec: {module: m: n}",
  ].join("\n---\n");
  let err: unknown;
  try {
    parseManifest(text);
  } catch (e) {
    err = e;
  }
  assert.match(ConnectError.from(err).rawMessage, /^document 1: kind: unknown kind .*; document 2 \(ReplicaSet "calc"\): spec\.replicas: must be between 0 and 10000, got -1; /);
  assert.deepEqual(
    fieldViolations(err).map((v) => ({ field: v.field, description: v.description })),
    [
      { field: "manifest[0].kind", description: 'unknown kind string "Pod", expected one of Container, ReplicaSet, Service' },
      { field: "manifest[1].spec.replicas", description: "must be between 0 and 10000, got -1" },
      { field: "manifest[2].items[0].spec.queueLimit", description: 'expected an integer, got string "nope"' },
      { field: "manifest[3]", description: fieldViolations(err)[3]!.description },
    ],
  );
  assert.match(fieldViolations(err)[3]!.description, /^invalid YAML: /);
  for (const [bad, field] of [["x".repeat(MAX_MANIFEST_BYTES + 1), "manifest"], ["[".repeat(40), "manifest"]] as const) {
    try {
      parseManifest(bad);
      assert.fail("accepted");
    } catch (e) {
      assert.equal(fieldViolations(e)[0]?.field, field);
    }
  }
});

test("validateObject checks typed objects the same way", () => {
  assert.deepEqual(validateObject(create(ContainerSchema, { metadata: { name: "ok" } })), [], "an external container is valid");
  assert.deepEqual(
    validateObject(create(ServiceSchema, { kind: "Container", metadata: { name: "s" }, spec: { selector: "x-*" } })),
    [{ path: "kind", reason: 'must be Service, got "Container"' }],
  );
  const long = create(ReplicaSetSchema, { metadata: { name: "r".repeat(60) }, spec: { container: "a" } });
  assert.match(validateObject(long).map((i) => i.reason).join(), /at most 58 characters so its replica names stay valid/);
  assert.match(
    validateObject(create(ReplicaSetSchema, { metadata: { name: "r" }, spec: { replicas: 10001, container: "a" } }))
      .map((i) => `${i.path}: ${i.reason}`)
      .join(),
    /spec\.replicas: must be between 0 and 10000, got 10001/,
  );
});

test("names and selectors", () => {
  assert.equal(validateName("calc-rs-0"), undefined);
  for (const bad of ["", "-a", "a-", "A", "a_b", "a.b", "a".repeat(64)]) assert.ok(validateName(bad), `"${bad}" must be invalid`);
  const obj = create(ContainerSchema, { metadata: { name: "calculator-rs-2", labels: { app: "calc", tier: "x" } } });
  assert.ok(matchesSelector(obj, { nameGlob: "calculator-rs-*" }));
  assert.ok(!matchesSelector(obj, { nameGlob: "echo*" }));
  assert.ok(matchesSelector(obj, { labels: { app: "calc" } }));
  assert.ok(!matchesSelector(obj, { labels: { app: "calc", tier: "y" } }));
  assert.ok(matchesSelector(obj, {}));
  assert.ok(isValidGlob("calc-{a,b}-[0-9]"));
  assert.ok(!isValidGlob(""));
  assert.ok(!isValidGlob("x".repeat(300)));
});

type SpecInit = MessageInitShape<typeof ContainerSpecSchema>;

/** The issues of a Container with this spec (and a valid name), as "path: reason" strings. */
function specIssues(spec: SpecInit): string[] {
  return validateObject(create(ContainerSchema, { metadata: { name: "c" }, spec })).map((i) => `${i.path}: ${i.reason}`);
}

/** A JSON object whose mappings nest `depth` levels (counting itself). */
function nested(depth: number): JsonObject {
  let v: JsonObject = {};
  for (let i = 1; i < depth; i++) v = { a: v };
  return v;
}

const items = (n: number, item = "x") => Array.from({ length: n }, () => item);
const map = (n: number, value = "v") => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, value]));

test("container spec rules, each at its bounds, with exactly the path and reason it breaks", () => {
  // Valid at every bound.
  const valid: Array<SpecInit> = [
    {},
    { module: "m", function: "f", parameters: nested(30) },
    { command: items(1000), args: items(1000) },
    { command: ["run"], env: { ...map(997), _x: "1", "a.b-c": "2", Z9: "3" } },
    { restartPolicy: "Always" },
    { restartPolicy: "OnFailure" },
    { restartPolicy: "Never" },
    { delivery: "memory" },
    { delivery: "durable" },
    { concurrency: 1000, queueLimit: 1_000_000, terminationGraceSeconds: 3600 },
  ];
  for (const spec of valid) assert.deepEqual(specIssues(spec), [], JSON.stringify(spec).slice(0, 100));

  const cases: Array<[SpecInit, string[]]> = [
    [{ parameters: nested(31) }, ["spec.parameters: nests more than 30 levels deep (an object may nest 32 levels in all)"]],
    [{ module: "m" }, ["spec.function: required when module is set"]],
    [{ function: "f" }, ["spec.module: required when function is set"]],
    [{ module: "m", function: "f", command: ["x"] }, ["spec.command: set either module and function, or command, not both"]],
    [{ function: "f", command: ["x"] }, ["spec.module: required when function is set", "spec.command: set either module and function, or command, not both"]],
    [{ module: "m", command: ["x"] }, ["spec.function: required when module is set", "spec.command: set either module and function, or command, not both"]],
    [{ command: items(1001) }, ["spec.command: at most 1000 items"]],
    [{ command: ["", "x"] }, ["spec.command[0]: must not be empty"]],
    [{ args: ["x"] }, ["spec.args: requires command"]],
    [{ command: ["x"], args: items(1001) }, ["spec.args: at most 1000 items"]],
    [{ env: map(1001) }, ["spec.env: at most 1000 variables"]],
    [{ env: { "1x": "", "a b": "", ok: "" } }, ['spec.env: "1x" is not a valid variable name', 'spec.env: "a b" is not a valid variable name']],
    [{ restartPolicy: "always" }, ['spec.restartPolicy: must be one of Always, OnFailure, Never, got "always"']],
    [{ delivery: "Durable" }, ['spec.delivery: must be one of memory, durable, got "Durable"']],
    [{ concurrency: 1001 }, ["spec.concurrency: must be between 0 and 1000, got 1001"]],
    [{ concurrency: -1 }, ["spec.concurrency: must be between 0 and 1000, got -1"]],
    [{ concurrency: 1.5 }, ["spec.concurrency: must be between 0 and 1000, got 1.5"]],
    [{ queueLimit: 1_000_001 }, ["spec.queueLimit: must be between 0 and 1000000, got 1000001"]],
    [{ queueLimit: -1 }, ["spec.queueLimit: must be between 0 and 1000000, got -1"]],
    [{ terminationGraceSeconds: 3601 }, ["spec.terminationGraceSeconds: must be between 0 and 3600, got 3601"]],
    [{ terminationGraceSeconds: -1 }, ["spec.terminationGraceSeconds: must be between 0 and 3600, got -1"]],
  ];
  for (const [spec, expected] of cases) assert.deepEqual(specIssues(spec), expected, JSON.stringify(spec).slice(0, 100));
});

test("object rules: apiVersion, kind, metadata, labels and annotations at their bounds, ReplicaSet and Service rules, each with its path", () => {
  const issues = (obj: Parameters<typeof validateObject>[0]) => validateObject(obj).map((i) => `${i.path}: ${i.reason}`);
  const c = (metadata: Record<string, unknown> | undefined, more: Record<string, unknown> = {}) =>
    create(ContainerSchema, { metadata, ...more } as Parameters<typeof create<typeof ContainerSchema>>[1]);
  assert.deepEqual(issues(c({ name: "a" }, { apiVersion: "k4s/v1", kind: "Container" })), []);
  assert.deepEqual(issues(c({ name: "a" }, { apiVersion: "v1" })), ['apiVersion: must be k4s/v1, got "v1"']);
  assert.deepEqual(issues(c(undefined, { spec: { module: "m" } })), ["metadata.name: required"], "no metadata: only that is said");
  assert.deepEqual(issues(c({ name: "" })), ["metadata.name: required"]);
  assert.deepEqual(issues(c({ name: "A" })), [`metadata.name: ${validateName("A")}`]);

  // Labels: 64 at most, keys and values checked; annotations: 64 at most, values up to 64 KiB of anything.
  assert.deepEqual(issues(c({ name: "a", labels: map(64), annotations: { ...map(63), note: "free text, any: chars!" } })), []);
  assert.deepEqual(issues(c({ name: "a", labels: map(65) })), ["metadata.labels: at most 64 labels allowed, got 65"]);
  assert.deepEqual(issues(c({ name: "a", annotations: map(65) })), ["metadata.annotations: at most 64 annotations allowed, got 65"]);
  assert.deepEqual(issues(c({ name: "a", labels: { "bad key!": "v", k: "bad value!" } })), [
    `metadata.labels: ${validateLabelKey("bad key!")}`,
    `metadata.labels.k: ${validateLabelValue("bad value!")}`,
  ]);
  assert.ok(validateLabelKey("bad key!") && validateLabelValue("bad value!"), "both are invalid");
  assert.deepEqual(issues(c({ name: "a", annotations: { "bad key!": "v" } })), [`metadata.annotations: ${validateLabelKey("bad key!")}`]);
  assert.deepEqual(issues(c({ name: "a", annotations: { big: "x".repeat(64 * 1024) } })), []);
  assert.deepEqual(issues(c({ name: "a", annotations: { big: "x".repeat(64 * 1024 + 1) } })), [
    "metadata.annotations.big: must be at most 65536 characters, got 65537",
  ]);

  // ReplicaSet: name length, exactly one of container or template, the template's parts under their paths.
  const rs = (name: string, spec: Record<string, unknown> | undefined) => create(ReplicaSetSchema, { metadata: { name }, spec } as Parameters<typeof create<typeof ReplicaSetSchema>>[1]);
  const one = "spec: set exactly one of spec.container (a template Container's name) or spec.template";
  assert.deepEqual(issues(rs("r".repeat(58), { container: "a", replicas: 10_000 })), []);
  assert.deepEqual(issues(rs("r".repeat(59), { container: "a" })), [
    "metadata.name: a ReplicaSet name must be at most 58 characters so its replica names stay valid, got 59",
  ]);
  assert.deepEqual(issues(rs("r", undefined)), [one]);
  assert.deepEqual(issues(rs("r", {})), [one]);
  assert.deepEqual(issues(rs("r", { container: "a", template: {} })), [one]);
  assert.deepEqual(issues(rs("r", { container: "Bad" })), [`spec.container: ${validateName("Bad")}`]);
  assert.deepEqual(issues(rs("r", { container: "a", replicas: -1 })), ["spec.replicas: must be between 0 and 10000, got -1"]);
  assert.deepEqual(issues(rs("r", { template: { spec: { module: "m", function: "f", parameters: nested(28) } } })), []);
  assert.deepEqual(issues(rs("r", { template: { metadata: { labels: { k: "bad value!" }, annotations: map(65) }, spec: { module: "m", parameters: nested(29) } } })), [
    `spec.template.metadata.labels.k: ${validateLabelValue("bad value!")}`,
    "spec.template.metadata.annotations: at most 64 annotations allowed, got 65",
    "spec.template.spec.parameters: nests more than 28 levels deep (an object may nest 32 levels in all)",
    "spec.template.spec.function: required when module is set",
  ]);

  // Service: a selector and/or labels; the glob, the labels and the strategy checked.
  const svc = (spec: Record<string, unknown> | undefined) => create(ServiceSchema, { metadata: { name: "s" }, spec } as Parameters<typeof create<typeof ServiceSchema>>[1]);
  const either = "spec.selector: set spec.selector (a glob over container names) and/or spec.matchLabels";
  assert.deepEqual(issues(svc(undefined)), [either]);
  assert.deepEqual(issues(svc({ strategy: "random" })), [either]);
  assert.deepEqual(issues(svc({ matchLabels: { app: "x" }, strategy: "least-in-flight" })), []);
  assert.deepEqual(issues(svc({ selector: "a-*", strategy: "round-robin" })), []);
  assert.deepEqual(issues(svc({ selector: "a/b" })).length, 1);
  assert.match(issues(svc({ selector: "a/b" }))[0]!, /^spec\.selector: "a\/b" is not a valid glob/);
  assert.deepEqual(issues(svc({ matchLabels: { app: "bad value!" } })), [`spec.matchLabels.app: ${validateLabelValue("bad value!")}`]);
  assert.deepEqual(issues(svc({ selector: "a", strategy: "Random" })), ['spec.strategy: must be one of random, round-robin, least-in-flight, got "Random"']);
});

test("assertValid throws one INVALID_ARGUMENT naming the object and every rule, with field violations under the given path", () => {
  assert.doesNotThrow(() => assertValid(create(ContainerSchema, { metadata: { name: "ok" } })));
  const bad = create(ContainerSchema, { metadata: { name: "c" }, spec: { concurrency: -1, module: "m" } });
  assert.equal(formatIssues(validateObject(bad)), "spec.function: required when module is set; spec.concurrency: must be between 0 and 1000, got -1");
  for (const [path, fields] of [
    [undefined, ["spec.function", "spec.concurrency"]],
    ["", ["spec.function", "spec.concurrency"]],
    ["objects[2]", ["objects[2].spec.function", "objects[2].spec.concurrency"]],
  ] as const) {
    try {
      assertValid(bad, path);
      assert.fail("accepted");
    } catch (e) {
      const err = ConnectError.from(e);
      assert.equal(err.code, Code.InvalidArgument);
      assert.equal(err.rawMessage, 'Container "c": spec.function: required when module is set; spec.concurrency: must be between 0 and 1000, got -1');
      assert.deepEqual(fieldViolations(e).map((v) => v.field), fields);
    }
  }
  try {
    assertValid(create(ServiceSchema, {}));
    assert.fail("accepted");
  } catch (e) {
    assert.equal(ConnectError.from(e).rawMessage, "Service: metadata.name: required");
  }
});

/** The message of the INVALID_ARGUMENT a manifest is refused with. */
function refusal(text: string): string {
  try {
    parseManifest(text);
  } catch (e) {
    assert.equal(ConnectError.from(e).code, Code.InvalidArgument);
    return ConnectError.from(e).rawMessage;
  }
  assert.fail("accepted");
}

const doc = (spec: string, name = "a") => `kind: Container\nmetadata: {name: ${name}}\nspec: ${spec}\n`;

test("conversion of each field type: integer bounds, 64-bit integers as numbers or strings, times, lists, maps, empty values, JSON parameters", () => {
  // int32: the type's bounds first, then the field's own range.
  assert.equal(refusal(doc("{concurrency: 2147483648}")), 'document 1 (Container "a"): spec.concurrency: must be between -2147483648 and 2147483647, got 2147483648');
  assert.equal(refusal(doc("{concurrency: -2147483649}")), 'document 1 (Container "a"): spec.concurrency: must be between -2147483648 and 2147483647, got -2147483649');
  assert.equal(refusal(doc("{concurrency: 2147483647}")), 'document 1 (Container "a"): spec.concurrency: must be between 0 and 1000, got 2147483647');
  assert.equal(refusal(doc("{concurrency: -2147483648}")), 'document 1 (Container "a"): spec.concurrency: must be between 0 and 1000, got -2147483648');
  assert.equal(refusal(doc("{concurrency: true}")), 'document 1 (Container "a"): spec.concurrency: expected an integer, got boolean true');
  assert.equal(refusal(doc(`{concurrency: "${"x".repeat(45)}"}`)), `document 1 (Container "a"): spec.concurrency: expected an integer, got string "${"x".repeat(40)}..."`);
  assert.equal(refusal(doc(`{concurrency: "${"x".repeat(40)}"}`)), `document 1 (Container "a"): spec.concurrency: expected an integer, got string "${"x".repeat(40)}"`);
  assert.equal(refusal(doc("{module: 5, function: f}")), 'document 1 (Container "a"): spec.module: expected a string (quote the value), got number 5');
  assert.equal(refusal(doc("{module: m, function: true}")), 'document 1 (Container "a"): spec.function: expected a string (quote the value), got boolean true');
  assert.equal(refusal(doc("{module: [m], function: f}")), 'document 1 (Container "a"): spec.module: expected a string, got a list');

  // int64 (a template's metadata is not server-set): a safe integer or a string of digits.
  const rs = (meta: string) => `kind: ReplicaSet\nmetadata: {name: r}\nspec: {template: {metadata: ${meta}, spec: {module: m, function: f}}}\n`;
  const generation = (meta: string) => (parseManifest(rs(meta))[0] as ReplicaSet).spec!.template!.metadata!.generation;
  assert.equal(generation("{generation: 5}"), 5n);
  assert.equal(generation('{generation: "9223372036854775807"}'), 9223372036854775807n);
  assert.equal(generation('{generation: "-9223372036854775808"}'), -9223372036854775808n);
  // Past int64 the object could not be encoded: refused here, naming the bounds.
  for (const [bad, got] of [['"9223372036854775808"', "9223372036854775808"], ['"-12345678901234567890"', "-12345678901234567890"]]) {
    assert.equal(
      refusal(rs(`{generation: ${bad}}`)),
      `document 1 (ReplicaSet "r"): spec.template.metadata.generation: must be between -9223372036854775808 and 9223372036854775807, got ${got}`,
    );
  }
  for (const bad of ['"123456789012345678901"', '"5x"', '"x5"', '"--5"', "9007199254740993", "1.5", "x"]) {
    assert.match(refusal(rs(`{generation: ${bad}}`)), /spec\.template\.metadata\.generation: expected an integer, got /, bad);
  }
  // Times are RFC 3339.
  const [withTime] = parseManifest(rs('{creationTimestamp: "2024-01-02T03:04:05Z"}')) as [ReplicaSet];
  assert.equal(withTime.spec!.template!.metadata!.creationTimestamp?.seconds, 1704164645n);
  assert.equal(refusal(rs("{creationTimestamp: yesterday}")), 'document 1 (ReplicaSet "r"): spec.template.metadata.creationTimestamp: expected an RFC 3339 time, got string "yesterday"');

  // Lists: no empty items; maps: an empty value is "" (as kubectl reads it); empty fields are unset.
  assert.equal(refusal(doc("{command: [run, ~, x, ~]}")), 'document 1 (Container "a"): spec.command[1]: must not be empty; spec.command[3]: must not be empty');
  assert.equal(refusal(doc("{command: [run, [x]]}")), 'document 1 (Container "a"): spec.command[1]: expected a string, got a list');
  assert.equal(refusal(doc("{command: [run], env: [A]}")), 'document 1 (Container "a"): spec.env: expected a mapping, got a list');
  assert.equal(refusal(doc("{command: [run], env: {A: {x: 1}, B: ok}}")), 'document 1 (Container "a"): spec.env.A: expected a string, got a mapping');
  const [c] = parseManifest(doc("{command: [run], env: {A: ~, B: b}, concurrency: ~, module: }")) as [Container];
  assert.deepEqual(c.spec!.env, { A: "", B: "b" });
  assert.deepEqual(c.spec!.command, ["run"]);
  assert.equal(c.spec!.concurrency, 0);

  // Parameters are JSON: every value checked, wherever it nests.
  assert.equal(
    refusal(doc("{module: m, function: f, parameters: {a: [1, .inf], b: {c: .nan}, d: ok, e: ~, f: true}}")),
    'document 1 (Container "a"): spec.parameters.a[1]: Infinity is not representable in JSON; spec.parameters.b.c: NaN is not representable in JSON',
  );
  const [p] = parseManifest(doc("{module: m, function: f, parameters: {a: [1, x, ~, false], b: {c: 2.5}}}")) as [Container];
  assert.deepEqual(p.spec!.parameters, { a: [1, "x", null, false], b: { c: 2.5 } });
});

test("the document and error bounds: 1000 documents, 1 MiB, 32 levels once aliases are expanded, 20 errors listed", () => {
  const many = (n: number) => Array.from({ length: n }, (_, i) => `kind: Container\nmetadata: {name: c${i}}`).join("\n---\n");
  assert.equal(parseManifest(many(1000)).length, 1000);
  assert.equal(refusal(many(1001)), "manifest has more than the limit of 1000 documents");
  assert.equal(refusal(`---\n${many(1000)}`), "manifest has more than the limit of 1000 documents", "a leading marker counts too");

  const exact = (bytes: number) => {
    const head = "kind: Container\nmetadata: {name: a}\n# ";
    return head + "é".repeat((bytes - head.length) / 2);
  };
  assert.equal(parseManifest(exact(MAX_MANIFEST_BYTES)).length, 1, "exactly 1 MiB (counted in UTF-8 bytes)");
  assert.match(refusal(exact(MAX_MANIFEST_BYTES) + "x"), /^manifest is 1048577 bytes, more than the limit/);

  // Nesting is bounded after aliases are expanded (the text itself stays shallow).
  const nest = (n: number, inner: string) => "[".repeat(n) + inner + "]".repeat(n);
  const aliased = (outer: number) => `kind: Container\nmetadata: {name: a}\nspec: {module: m, function: f, parameters: {x: &x ${nest(15, "1")}, y: ${nest(outer, "*x")}}}\n`;
  assert.equal(parseManifest(aliased(14)).length, 1, "32 levels");
  assert.equal(refusal(aliased(15)), "document 1: nests collections more than 32 levels deep once its aliases are expanded");

  // 21 broken documents: 20 are listed, the rest counted.
  const broken = Array.from({ length: 21 }, (_, i) => `kind: Container\nmetadata: {name: B${i}}`).join("\n---\n");
  const message = refusal(broken);
  assert.equal(message.split("; ").length, 21);
  assert.match(message, /document 20 \(Container "B19"\)[^;]*; and 1 more errors$/);
});

test("what names a document in errors: its kind and name when readable, the List it is in, and a first line of a YAML error", () => {
  assert.equal(refusal("kind: Container\nmetadata: {name: 5}\n"), "document 1 (Container): metadata.name: expected a string (quote the value), got number 5");
  assert.equal(refusal("kind: ''\nmetadata: {name: a}\n"), "document 1: kind: required, one of Container, ReplicaSet, Service");
  assert.equal(refusal("kind: ~\nmetadata: {name: a}\n"), "document 1: kind: required, one of Container, ReplicaSet, Service");
  assert.equal(refusal("kind: 5\nmetadata: {name: a}\n"), "document 1: kind: unknown kind number 5, expected one of Container, ReplicaSet, Service");
  assert.equal(refusal("kind: svc\nmetadata: {name: a}\n"), 'document 1: kind: unknown kind string "svc" (did you mean "Service"?), expected one of Container, ReplicaSet, Service');
  assert.equal(refusal("kind: List\nitems: [~]\n"), "document 1 items[0]: expected a mapping with kind, metadata and spec, got null");
  assert.equal(refusal("kind: List\nfoo: 1\nitems: []\n"), 'document 1 (List): foo: unknown field "foo" (known: apiVersion, kind, items)');
  assert.deepEqual(parseManifest("kind: List\napiVersion: k4s/v1\nmetadata: {}\n"), [], "a List without items is empty");
  assert.equal(refusal("api_version: v2\nkind: Container\nmetadata: {name: a}\n"), 'document 1 (Container "a"): apiVersion: must be k4s/v1, got string "v2"');
  assert.equal(parseManifest("apiVersion: ~\nkind: Container\nmetadata: {name: a}\n").length, 1, "an empty apiVersion is the default");
  // Field names: a case-insensitive match or a near miss is suggested, anything else lists the fields.
  assert.match(refusal(doc("{Module: m, function: f}")), /spec\.Module: unknown field "Module" \(did you mean "module"\?\)$/);
  assert.match(refusal(doc("{cncurrncy: 1}")), /spec\.cncurrncy: unknown field "cncurrncy" \(did you mean "concurrency"\?\)$/);
  assert.match(refusal(doc("{queueLimt: 1}")), /spec\.queueLimt: unknown field "queueLimt" \(did you mean "queueLimit"\?\)$/);
  assert.match(refusal(doc("{zz: 1}")), /spec\.zz: unknown field "zz" \(known: module, function, parameters, command, args, env, restartPolicy, concurrency, queueLimit, terminationGraceSeconds, delivery\)$/);
  assert.match(refusal(doc("{module: m, function: f, module: n}")), /^document 1: invalid YAML: Map keys must be unique at line 3, column \d+$/);
  assert.equal(refusal(doc("{module: m, function: f, restart_policy: Never, restartPolicy: Always}")), 'document 1 (Container "a"): spec.restartPolicy: given twice, as "restart_policy" and "restartPolicy"');
  // Server-set fields of the object itself are dropped; the same names inside a template are not.
  const [dropped] = parseManifest("kind: Container\nmetadata: {name: a, deletionTimestamp: '2024-01-02T03:04:05Z', uid: u}\n") as [Container];
  assert.equal(dropped.metadata!.deletionTimestamp, undefined);
  assert.equal(dropped.metadata!.uid, "");
  assert.equal(refusal("kind: Container\nmetadata: {name: a}\n---\nkind: Container\nmetadata: {name: a}\n"), 'document 2 (Container "a"): duplicate of document 1, a manifest may declare each object once');
});

test("the manifest's own rules: violations of whole-manifest and List problems, the alias limit, YAML 1.2 (no merge keys), apiVersion in either spelling", () => {
  const violations = (text: string) => {
    try {
      parseManifest(text);
    } catch (e) {
      return fieldViolations(e).map((v) => [v.field, v.description]);
    }
    assert.fail("accepted");
  };
  assert.deepEqual(violations(Array.from({ length: 1001 }, () => "kind: Container").join("\n---\n")), [["manifest", "has more than the limit of 1000 documents"]]);
  assert.deepEqual(violations("kind: List\nfoo: 1\nitems: x\n---\nkind: Container\nmetadata: {name: a}\n---\nmetadata: {name: b}\n---\nkind: Container\nmetadata: {name: a}\n"), [
    ["manifest[0].foo", 'unknown field "foo" (known: apiVersion, kind, items)'],
    ["manifest[0].items", 'expected a list, got string "x"'],
    ["manifest[2].kind", "required, one of Container, ReplicaSet, Service"],
    ["manifest[3].metadata.name", "duplicate of document 2, a manifest may declare each object once"],
  ]);

  // Alias expansions are limited to 50 (the YAML library's own default is 100); on either side
  // with a margin for how the library counts them.
  const aliases = (n: number) => doc(`{module: m, function: f, parameters: {x: &x 1, y: [${Array(n).fill("*x").join(", ")}]}}`);
  assert.deepEqual((parseManifest(aliases(45))[0] as Container).spec!.parameters, { x: 1, y: Array(45).fill(1) });
  assert.equal(refusal(aliases(55)), "document 1: invalid YAML: too many alias expansions (limit 50); the document looks like an alias bomb");

  // YAML 1.2: `<<` is a key like any other, not a merge.
  const [merged] = parseManifest(doc("{module: m, function: f, parameters: {base: &b {x: 1}, y: {<<: *b, z: 2}}}")) as [Container];
  assert.deepEqual(merged.spec!.parameters!.y, { "<<": { x: 1 }, z: 2 });

  // A YAML error's first line, without its trailing colon (the one inside it stays).
  assert.equal(refusal("kind: Container\nmetadata: |2x\n  a\n"), "document 1: invalid YAML: Block scalar header includes extra characters: |2x at line 2, column 13");

  // apiVersion and api_version: each is checked once, as the apiVersion, and an empty one is the default.
  for (const key of ["apiVersion", "api_version"]) {
    assert.equal(refusal(`${key}: 5\nkind: Container\nmetadata: {name: a}\n`), 'document 1 (Container "a"): apiVersion: must be k4s/v1, got number 5', key);
    assert.equal(parseManifest(`${key}: ~\nkind: Container\nmetadata: {name: a}\n`)[0]!.apiVersion, "k4s/v1", key);
  }
  // Both names at once is a field given twice, as for every other field (even when they agree).
  for (const other of ["k4s/v1", "v2"]) {
    assert.equal(
      refusal(`apiVersion: k4s/v1\napi_version: ${other}\nkind: Container\nmetadata: {name: a}\n`),
      'document 1 (Container "a"): apiVersion: given twice, as "apiVersion" and "api_version"',
      other,
    );
  }
});
