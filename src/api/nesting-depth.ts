/**
 * Nesting depth bounds for what clients send: YAML or JSON text is measured in one linear pass
 * before any parser sees it, and decoded values are measured before they are stored or
 * forwarded. A YAML parser recurses once per nesting level, so a 40 KB document of 20,000 nested
 * lists exhausts its stack and heap; protobuf decoders (protobuf-es, Python, Go) refuse messages
 * nested deeper than 100, and every level of a `google.protobuf.Struct` costs two of those.
 */
import { badRequest } from "./bad-request.js";

/**
 * The deepest nesting of collections (mappings and lists) an object may have, counting its own
 * top mapping as 1 (so a Container's `spec.parameters` mapping is at depth 3), and the deepest a
 * JSON payload of the unary messaging API may have. Deep enough for any configuration, shallow
 * enough that a stored object stays far inside the protobuf decoders' limit of 100 levels.
 */
export const MAX_NESTING_DEPTH = 32;

/** NestingDepth is how deeply text nests and the first line that reached that depth. */
export interface NestingDepth {
  depth: number;
  /** 1-based line of the first point at that depth (0 for empty text). */
  line: number;
}

const SPACE = 32;
const TAB = 9;
const CR = 13;

/** Block collection entries: a list item ("- ") or a mapping entry ("key: ", "? "). */
const SEQ = 1;
const MAP = 2;

function isBlank(text: string, i: number, end: number): boolean {
  if (i >= end) return true;
  const c = text.charCodeAt(i);
  return c === SPACE || c === TAB || c === CR;
}

/** Index just past a quoted scalar that opened at `i - 1`, or -1 when it runs past `end`. */
function skipQuoted(text: string, i: number, end: number, quote: number): number {
  while (i < end) {
    const c = text.charCodeAt(i);
    if (quote === 34 /* " */ && c === 92 /* \ */) i += 2;
    else if (c === quote) {
      if (quote === 39 /* ' */ && text.charCodeAt(i + 1) === 39) i += 2;
      else return i + 1;
    } else i++;
  }
  return -1;
}

/**
 * An upper bound of how deeply the collections of YAML (or JSON) text nest, found without
 * parsing: indentation and the block indicators `- `, `? ` and `key: ` open block collections,
 * `[` and `{` flow ones; quoted scalars, block scalars (`|`, `>`) and comments are skipped.
 * Linear in the text's length; it stops counting once the depth passes `limit`.
 */
export function textNestingDepth(text: string, limit = Number.POSITIVE_INFINITY): NestingDepth {
  const result: NestingDepth = { depth: 0, line: 0 };
  /** Open block collections: their column and type, innermost last. */
  const cols: number[] = [];
  const types: number[] = [];
  let flow = 0;
  let quote = 0; // the quote character of a quoted scalar that continues on the next line
  let blockScalarCol = -2; // lines indented deeper than this belong to a block scalar (-2: none)
  let lineNo = 0;
  let pos = 0;
  const n = text.length;

  const reach = (depth: number) => {
    if (depth > result.depth) {
      result.depth = depth;
      result.line = lineNo;
    }
  };
  /** Opens (or continues) a block collection entry of `type` at column `col`. */
  const entry = (type: number, col: number) => {
    while (cols.length > 0 && cols[cols.length - 1]! > col) {
      cols.pop();
      types.pop();
    }
    const top = cols.length - 1;
    if (top >= 0 && cols[top] === col) {
      if (types[top] === type) return; // a sibling entry
      // A list may sit at its parent key's column ("key:\n- a"); a key there ends that list.
      if (type === MAP) {
        cols.pop();
        types.pop();
        if (cols.length > 0 && cols[cols.length - 1] === col) return;
      }
    }
    cols.push(col);
    types.push(type);
    reach(cols.length);
  };
  /** Scans flow content from i to the line's end. */
  const scanFlow = (i: number, end: number): void => {
    // A quote opens a quoted scalar only where a scalar starts, not inside a plain one ("it's").
    let scalarStart = true;
    // ":" is a value indicator when a blank follows, or right after a quoted key or a collection.
    let afterJsonNode = false;
    while (i < end && flow > 0 && result.depth <= limit) {
      const c = text.charCodeAt(i);
      if ((c === 34 || c === 39) && scalarStart) {
        const after = skipQuoted(text, i + 1, end, c);
        if (after < 0) {
          quote = c;
          return;
        }
        i = after;
        scalarStart = false;
        afterJsonNode = true;
        continue;
      }
      if (c === 91 /* [ */ || c === 123 /* { */) {
        flow++;
        reach(cols.length + flow);
      } else if (c === 93 /* ] */ || c === 125 /* } */) {
        flow--;
      } else if (c === 35 /* # */ && i > 0 && (text.charCodeAt(i - 1) === SPACE || text.charCodeAt(i - 1) === TAB)) {
        return;
      }
      if (c !== SPACE && c !== TAB && c !== CR) {
        const indicator = c === 58 /* : */ ? afterJsonNode || isBlank(text, i + 1, end) : c === 63 /* ? */ ? isBlank(text, i + 1, end) : false;
        scalarStart = c === 91 || c === 123 || c === 44 /* , */ || indicator;
        afterJsonNode = c === 93 || c === 125;
      }
      i++;
    }
  };

  while (pos < n && result.depth <= limit) {
    let end = text.indexOf("\n", pos);
    if (end < 0) end = n;
    lineNo++;
    let i = pos;
    while (i < end && text.charCodeAt(i) === SPACE) i++;
    const indent = i - pos;
    const next = end + 1;
    if (quote !== 0) {
      const after = skipQuoted(text, i, end, quote);
      if (after < 0) {
        pos = next;
        continue;
      }
      quote = 0;
      if (flow > 0) scanFlow(after, end);
      pos = next;
      continue;
    }
    if (flow > 0) {
      scanFlow(i, end);
      pos = next;
      continue;
    }
    if (blockScalarCol > -2) {
      if (isBlank(text, i, end) || indent > blockScalarCol) {
        pos = next;
        continue;
      }
      blockScalarCol = -2;
    }
    const first = text.charCodeAt(i);
    if (isBlank(text, i, end) || first === 35 /* # */ || (indent === 0 && first === 37) /* % directive */) {
      pos = next;
      continue;
    }
    if (indent === 0 && (text.startsWith("---", i) || text.startsWith("...", i)) && isBlank(text, i + 3, end)) {
      cols.length = 0;
      types.length = 0;
      i += 3;
      while (i < end && isBlank(text, i, end)) i++;
      if (i >= end) {
        pos = next;
        continue;
      }
    }
    // The entries of this line, outermost first: "- - key: [..." opens four levels.
    while (i < end) {
      const c = text.charCodeAt(i);
      const col = i - pos;
      if ((c === 45 /* - */ || c === 63 /* ? */ || c === 58) /* : */ && isBlank(text, i + 1, end)) {
        entry(c === 45 ? SEQ : MAP, col);
        i++;
        while (i < end && isBlank(text, i, end)) i++;
        continue;
      }
      if (c === 38 /* & */ || c === 33 /* ! */) {
        while (i < end && !isBlank(text, i, end)) i++;
        while (i < end && isBlank(text, i, end)) i++;
        continue;
      }
      if (c === 91 || c === 123) {
        flow = 1;
        reach(cols.length + 1);
        scanFlow(i + 1, end);
        break;
      }
      if (c === 124 /* | */ || c === 62 /* > */) {
        blockScalarCol = cols.length > 0 ? cols[cols.length - 1]! : -1;
        break;
      }
      if (c === 35) break;
      // A scalar: a key when ": " follows it on this line, else the line's last node.
      let j = i;
      if (c === 34 || c === 39) {
        j = skipQuoted(text, i + 1, end, c);
        if (j < 0) {
          quote = c;
          break;
        }
      }
      let key = -1;
      for (; j < end; j++) {
        const d = text.charCodeAt(j);
        if (d === 58 && isBlank(text, j + 1, end)) {
          key = j;
          break;
        }
        if (d === 35 && (text.charCodeAt(j - 1) === SPACE || text.charCodeAt(j - 1) === TAB)) break;
      }
      if (key < 0) break;
      entry(MAP, col);
      i = key + 1;
      while (i < end && isBlank(text, i, end)) i++;
    }
    pos = next;
  }
  return result;
}

/**
 * How deeply a decoded JSON-like value nests (objects and arrays count, scalars do not); stops
 * descending once past `limit`. Values shared through YAML aliases are measured once.
 */
export function valueNestingDepth(value: unknown, limit = MAX_NESTING_DEPTH): number {
  const known = new WeakMap<object, number>();
  const depth = (v: unknown, level: number): number => {
    if (typeof v !== "object" || v === null) return 0;
    const cached = known.get(v);
    if (cached !== undefined) return cached;
    let deepest = 0;
    if (level <= limit) {
      const children = Array.isArray(v) ? v : v instanceof Map ? [...v.values()] : Object.values(v);
      for (const child of children) {
        deepest = Math.max(deepest, depth(child, level + 1));
        if (level + deepest > limit) break;
      }
    }
    const d = deepest + 1;
    known.set(v, d);
    return d;
  };
  return depth(value, 1);
}

/**
 * Throws INVALID_ARGUMENT when text nests deeper than `limit`, before anything parses it;
 * `what` is the request field that holds the text ("manifest"), named in the message.
 */
export function assertTextNesting(text: string, what: string, limit = MAX_NESTING_DEPTH): void {
  const { depth, line } = textNestingDepth(text, limit);
  if (depth > limit) {
    const reason = `nests collections more than ${limit} levels deep (line ${line}); k4s accepts at most ${limit}`;
    throw badRequest(`${what} ${reason}`, [{ field: what, description: reason }]);
  }
}
