/**
 * The dashboard's editor points a refused manifest's field violations at their lines (pure
 * code of the page, run here without a browser).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { fieldViolations } from "../src/api/bad-request.js";
import { parseManifest } from "../src/api/manifest.js";
import { fieldErrorsOf, locateFieldErrors } from "../src/dashboard/manifest-errors.js";

/** The field errors the page shows for a manifest the server's parser refuses. */
function errorsOf(text: string) {
  try {
    parseManifest(text);
  } catch (err) {
    return locateFieldErrors(text, fieldErrorsOf(fieldViolations(err)));
  }
  assert.fail("the manifest was accepted");
}

test("each violation gets the line of its field, label keys with dots and list items included", () => {
  const text = [
    "kind: ReplicaSet", //              1
    "metadata: {name: x}", //           2
    "spec: {replicas: -1, container: a}", // 3
    "---", //                           4
    "kind: Container", //               5
    "metadata:", //                     6
    "  name: Bad_Name", //              7
    "  labels:", //                     8
    "    app.k8s.io/name: 'b c'", //    9
    "spec:", //                         10
    "  module: workers", //             11
    "---", //                           12
    "kind: List", //                    13
    "items:", //                        14
    "- kind: Service", //               15
    "  metadata: {name: s}", //         16
    "  spec:", //                       17
    "    selector: 'x-*'", //           18
    "    strategy: nope", //            19
  ].join("\n");
  const got = errorsOf(text).map((e) => `${e.document} ${e.path} @${e.line}`);
  assert.deepEqual(got, [
    "1 spec.replicas @3",
    "2 metadata.name @7",
    "2 metadata.labels.app.k8s.io/name @9",
    // A missing field points at its parent.
    "2 spec.function @10",
    "3 items[0].spec.strategy @19",
  ]);
});

test("a YAML syntax error points at the line the parser names", () => {
  const [e] = errorsOf("kind: Container\nmetadata: [\n");
  assert.equal(e!.document, 1);
  assert.match(e!.reason, /invalid YAML/);
  assert.equal(e!.line, 3);
});
