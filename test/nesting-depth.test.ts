/**
 * The nesting bound that guards every parser of client text: it is measured without parsing,
 * never under-estimates what a YAML or JSON parser would build, and equals it on the forms
 * people and tools write (JSON, YAML as `yaml` and `k4s get -o yaml` print it, the seed manifests).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import fc from "fast-check";
import { parseAllDocuments, stringify } from "yaml";
import { MAX_NESTING_DEPTH, textNestingDepth, valueNestingDepth } from "../src/api/nesting-depth.js";
import { parseManifest } from "../src/api/manifest.js";
import { ConnectError, Code } from "@connectrpc/connect";

const SEED = Number(process.env.K4S_SEED ?? Date.now() % 1_000_000);

/** The depth the YAML parser builds for text (the deepest document). */
function parsedDepth(text: string): number {
  return Math.max(0, ...parseAllDocuments(text, { merge: false }).map((d) => valueNestingDepth(d.toJS(), 10_000)));
}

const jsonValue = fc.jsonValue({ depthSize: "large", maxDepth: 12 });

test("JSON and YAML renderings of random values: measured depth equals the parsed depth", () => {
  fc.assert(
    fc.property(jsonValue, (v) => {
      const depth = valueNestingDepth(v, 10_000);
      for (const text of [JSON.stringify(v), JSON.stringify(v, null, 2), stringify(v), stringify(v, { indentSeq: false }), stringify(v, { collectionStyle: "flow" })]) {
        assert.equal(textNestingDepth(text).depth, depth, `for:\n${text}`);
      }
    }),
    { numRuns: 300, seed: SEED },
  );
});

test("hand-written YAML forms: compact lists, lists at their key's column, block scalars, quotes, comments, documents", () => {
  const cases: Array<[string, number]> = [
    ["a: 1\nb: 2\n", 1],
    ["a:\n  b:\n    c: 1\n", 3],
    ["a:\n- 1\n- b: 2\n  c: [1, {d: 2}]\nz: 1\n", 5],
    ["- - - x\n", 3],
    ["- key: - nope\n", 3],
    ["a: |\n  [[[[[[ not {{{{ structure\n  - - - -\nb: 1\n", 1],
    ["a: >-\n    [[[[\n\n    ]]\nb: {c: 1}\n", 2],
    ['a: "[[[[ {{ \\" ]]"\nb: \'it\'\'s [[[\'\n', 1],
    ["a: [1, # comment [[[[\n  2]\n", 2],
    ["# [[[[[[[[\na: 1 # {{{{\n", 1],
    ['a: "multi\n  line [[[[\n  end"\nb: [1]\n', 2],
    ["---\na:\n  b:\n    c: 1\n---\nd: 1\n...\n--- [[1]]\n", 3],
    ["? complex\n: value\n", 1],
    ["a: &x [1, 2]\nb: !!seq [x, y]\n", 2],
    ["a: {b: it's [x], c: 'q'}\n", 3],
    ["url: http://x.y/z[1]\n", 1],
    ["a:\r\n  b: [1]\r\n", 3],
  ];
  for (const [text, depth] of cases) {
    assert.equal(textNestingDepth(text).depth, depth, `for:\n${text}`);
    assert.ok(textNestingDepth(text).depth >= parsedDepth(text), `never below the parser for:\n${text}`);
  }
});

test("the seed manifests measure as their parsed depth", () => {
  const dir = new URL("../examples/", import.meta.url);
  for (const f of readdirSync(dir).filter((n) => n.endsWith(".yaml"))) {
    const text = readFileSync(new URL(f, dir), "utf8");
    assert.equal(textNestingDepth(text).depth, parsedDepth(text), f);
  }
});

test("deep text is measured in linear time and stops at the limit", () => {
  const deep = "[".repeat(1_000_000) + "]".repeat(1_000_000);
  assert.equal(textNestingDepth(deep, 32).depth, 33);
  assert.equal(textNestingDepth("- ".repeat(20_000) + "x\n").depth, 20_000);
  const block = Array.from({ length: 500 }, (_, i) => `${" ".repeat(i)}k${i}:`).join("\n");
  assert.equal(textNestingDepth(block).depth, 500);
  assert.deepEqual(textNestingDepth("a: 1\nb:\n  c:\n    - [x]\n"), { depth: 4, line: 4 });
});

test("manifests nesting deeper than the limit are refused before parsing, with the line; aliases cannot amplify past it", () => {
  const nest = (d: number) => "[".repeat(d) + "]".repeat(d);
  const manifest = (params: string) => `kind: Container\nmetadata: {name: deep}\nspec:\n  module: workers\n  function: echo_worker\n  parameters:\n    x: ${params}\n`;
  // parameters sit at depth 3, so x's 29 lists reach 32 exactly.
  assert.equal(parseManifest(manifest(nest(29))).length, 1);
  for (const text of [manifest(nest(30)), manifest(nest(20_000)), `{"kind": "Container", "metadata": {"name": "d"}, "spec": {"parameters": {"x": ${nest(5000)}}}}`]) {
    assert.throws(() => parseManifest(text), (err) => {
      const e = err as ConnectError;
      assert.equal(e.code, Code.InvalidArgument);
      assert.match(e.rawMessage, new RegExp(`manifest nests collections more than ${MAX_NESTING_DEPTH} levels deep \\(line \\d+\\)`));
      return true;
    });
  }
  const aliases = ["kind: Container", "metadata: {name: deep}", "spec:", "  module: workers", "  function: echo_worker", "  parameters:", `    a: &a ${nest(20)}`, "    b: &b [[[[[[[[[[[[[[[[[[[[*a]]]]]]]]]]]]]]]]]]]]"].join("\n");
  assert.throws(() => parseManifest(aliases), /document 1: nests collections more than 32 levels deep once its aliases are expanded/);
});
