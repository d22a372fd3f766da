/**
 * Points the server's manifest validation errors at the fields they are about: the error's
 * BadRequest details name each field (`manifest[0].spec.replicas`), and the manifest's own YAML
 * tree says on which line that field is.
 */
import { isMap, isScalar, isSeq, LineCounter, parseAllDocuments, type Node } from "yaml";

/** FieldError is one problem of a manifest, with where it is when that is known. */
export interface FieldError {
  /** 1-based document of the manifest (0 when the error is about the whole manifest). */
  document: number;
  /** Field path, e.g. spec.replicas ("" when the error is about the whole document). */
  path: string;
  reason: string;
  /** 1-based line of the field in the manifest text, when found. */
  line?: number;
}

const VIOLATION_FIELD = /^manifest(?:\[(\d+)\])?(?:\.(.*))?$/;
const YAML_POSITION = /at line (\d+), column (\d+)/;

/**
 * The problems of a refused Apply from its `google.rpc.BadRequest` field violations, whose
 * fields are `manifest[i].<path>` (the i-th document, 0-based) or `manifest` (without positions yet).
 */
export function fieldErrorsOf(violations: readonly { field: string; description: string }[]): FieldError[] {
  return violations.map((v) => {
    const m = VIOLATION_FIELD.exec(v.field);
    if (!m) return { document: 0, path: v.field, reason: v.description };
    return { document: m[1] === undefined ? 0 : Number(m[1]) + 1, path: m[2] ?? "", reason: v.description };
  });
}

/**
 * The offset of the deepest node of a document found along a field path; keys are matched
 * longest first, so a label key with dots (app.k8s.io/name) is found as one key.
 */
function offsetOf(root: Node | null, path: string): number | undefined {
  let node: unknown = root;
  let rest = path;
  let offset: number | undefined;
  while (rest !== "" && node) {
    if (isMap(node)) {
      let best: { len: number; pair: (typeof node.items)[number] } | undefined;
      for (const pair of node.items) {
        const key = isScalar(pair.key) ? String(pair.key.value) : undefined;
        if (key === undefined) continue;
        if ((rest === key || rest.startsWith(`${key}.`) || rest.startsWith(`${key}[`)) && (!best || key.length > best.len)) best = { len: key.length, pair };
      }
      if (!best) break;
      offset = (best.pair.key as Node).range?.[0] ?? offset;
      node = best.pair.value;
      rest = rest.slice(best.len).replace(/^\./, "");
    } else if (isSeq(node)) {
      const m = /^\[(\d+)\]\.?/.exec(rest);
      const item = m ? node.items[Number(m[1])] : undefined;
      if (!m || !item) break;
      offset = (item as Node).range?.[0] ?? offset;
      node = item;
      rest = rest.slice(m[0].length);
    } else {
      break;
    }
  }
  return offset;
}

/** Adds the line of each error's field (or of its document) in the manifest text. */
export function locateFieldErrors(text: string, errors: FieldError[]): FieldError[] {
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter });
  const list = Array.isArray(docs) ? docs : [];
  return errors.map((e) => {
    const yamlAt = YAML_POSITION.exec(e.reason);
    if (yamlAt) return { ...e, line: Number(yamlAt[1]) };
    const doc = list[e.document - 1];
    if (!doc) return e;
    const offset = offsetOf(doc.contents as Node | null, e.path) ?? doc.contents?.range?.[0] ?? doc.range[0];
    return { ...e, line: lineCounter.linePos(offset).line };
  });
}
