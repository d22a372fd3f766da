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

/** Scan is the state of a textNestingDepth pass, carried from line to line. */
interface Scan {
  readonly text: string;
  readonly limit: number;
  readonly result: NestingDepth;
  /** Open block collections: their column and type, innermost last. */
  readonly cols: number[];
  readonly types: number[];
  /** Open flow collections (`[`, `{`) inside the innermost block one. */
  flow: number;
  /** The quote character of a quoted scalar that continues on the next line (0: none). */
  quote: number;
  /** Lines indented deeper than this belong to a block scalar (-2: none). */
  blockScalarCol: number;
  /** 1-based number of the line being scanned. */
  lineNo: number;
}

/** Records that the scan reached `depth` on the current line. */
function reach(scan: Scan, depth: number): void {
  if (depth > scan.result.depth) {
    scan.result.depth = depth;
    scan.result.line = scan.lineNo;
  }
}

/** Opens (or continues) a block collection entry of `type` at column `col`. */
function openEntry(scan: Scan, type: number, col: number): void {
  const { cols, types } = scan;
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
  reach(scan, cols.length);
}

/** Scans flow content from i to the line's end. */
function scanFlow(scan: Scan, i: number, end: number): void {
  const { text } = scan;
  // A quote opens a quoted scalar only where a scalar starts, not inside a plain one ("it's").
  let scalarStart = true;
  // ":" is a value indicator when a blank follows, or right after a quoted key or a collection.
  let afterJsonNode = false;
  while (i < end && scan.flow > 0 && scan.result.depth <= scan.limit) {
    const c = text.charCodeAt(i);
    if ((c === 34 || c === 39) && scalarStart) {
      const after = skipQuoted(text, i + 1, end, c);
      if (after < 0) {
        scan.quote = c;
        return;
      }
      i = after;
      scalarStart = false;
      afterJsonNode = true;
      continue;
    }
    if (c === 91 /* [ */ || c === 123 /* { */) {
      scan.flow++;
      reach(scan, scan.cols.length + scan.flow);
    } else if (c === 93 /* ] */ || c === 125 /* } */) {
      scan.flow--;
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
}

/**
 * Scans the entries of a block line from its first node at `i` (the line starts at `pos`),
 * outermost first: "- - key: [..." opens four levels.
 */
function scanBlockEntries(scan: Scan, pos: number, i: number, end: number): void {
  const { text } = scan;
  while (i < end) {
    const c = text.charCodeAt(i);
    const col = i - pos;
    if ((c === 45 /* - */ || c === 63 /* ? */ || c === 58) /* : */ && isBlank(text, i + 1, end)) {
      openEntry(scan, c === 45 ? SEQ : MAP, col);
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
      scan.flow = 1;
      reach(scan, scan.cols.length + 1);
      scanFlow(scan, i + 1, end);
      return;
    }
    if (c === 124 /* | */ || c === 62 /* > */) {
      scan.blockScalarCol = scan.cols.length > 0 ? scan.cols[scan.cols.length - 1]! : -1;
      return;
    }
    if (c === 35) return;
    // A scalar: a key when ": " follows it on this line, else the line's last node.
    let j = i;
    if (c === 34 || c === 39) {
      j = skipQuoted(text, i + 1, end, c);
      if (j < 0) {
        scan.quote = c;
        return;
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
    if (key < 0) return;
    openEntry(scan, MAP, col);
    i = key + 1;
    while (i < end && isBlank(text, i, end)) i++;
  }
}

/**
 * An upper bound of how deeply the collections of YAML (or JSON) text nest, found without
 * parsing: indentation and the block indicators `- `, `? ` and `key: ` open block collections,
 * `[` and `{` flow ones; quoted scalars, block scalars (`|`, `>`) and comments are skipped.
 * Linear in the text's length; it stops counting once the depth passes `limit`.
 */
export function textNestingDepth(text: string, limit = Number.POSITIVE_INFINITY): NestingDepth {
  const scan: Scan = { text, limit, result: { depth: 0, line: 0 }, cols: [], types: [], flow: 0, quote: 0, blockScalarCol: -2, lineNo: 0 };
  const { result } = scan;
  let pos = 0;
  const n = text.length;
  while (pos < n && result.depth <= limit) {
    let end = text.indexOf("\n", pos);
    if (end < 0) end = n;
    scan.lineNo++;
    let i = pos;
    while (i < end && text.charCodeAt(i) === SPACE) i++;
    const indent = i - pos;
    const next = end + 1;
    if (scan.quote !== 0) {
      const after = skipQuoted(text, i, end, scan.quote);
      if (after < 0) {
        pos = next;
        continue;
      }
      scan.quote = 0;
      if (scan.flow > 0) scanFlow(scan, after, end);
      pos = next;
      continue;
    }
    if (scan.flow > 0) {
      scanFlow(scan, i, end);
      pos = next;
      continue;
    }
    if (scan.blockScalarCol > -2) {
      if (isBlank(text, i, end) || indent > scan.blockScalarCol) {
        pos = next;
        continue;
      }
      scan.blockScalarCol = -2;
    }
    const first = text.charCodeAt(i);
    if (isBlank(text, i, end) || first === 35 /* # */ || (indent === 0 && first === 37) /* % directive */) {
      pos = next;
      continue;
    }
    if (indent === 0 && (text.startsWith("---", i) || text.startsWith("...", i)) && isBlank(text, i + 3, end)) {
      scan.cols.length = 0;
      scan.types.length = 0;
      i += 3;
      while (i < end && isBlank(text, i, end)) i++;
      if (i >= end) {
        pos = next;
        continue;
      }
    }
    scanBlockEntries(scan, pos, i, end);
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
