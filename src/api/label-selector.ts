/**
 * Label selectors in Kubernetes' text form, as `kubectl get -l` takes them: `app=web`,
 * `app==web`, `tier!=db`, `env in (prod,staging)`, `env notin (dev)`, `canary` (has the key) and
 * `!canary` (has not), comma-separated and all required. Parsed once where a request arrives,
 * then matched against each object's labels.
 */
import { badField } from "./bad-request.js";
import { validateLabelKey, validateLabelValue } from "./names.js";

/** LabelRequirement is one comma-separated part of a label selector. */
export type LabelRequirement =
  | { key: string; op: "=" | "!="; value: string }
  | { key: string; op: "in" | "notin"; values: readonly string[] }
  | { key: string; op: "exists" | "!exists" };

/** LabelSelector is a parsed selector: every requirement must hold. */
export interface LabelSelector {
  readonly requirements: readonly LabelRequirement[];
}

/** The longest selector text accepted, to bound the parser's work. */
export const MAX_LABEL_SELECTOR_LENGTH = 4096;

type Token = { kind: "op"; text: "=" | "==" | "!=" | "!" | "(" | ")" | "," } | { kind: "word"; text: string };

const TOKEN = /\s*(?:(==|!=|=|!|\(|\)|,)|([^\s!=,()<>]+)|([<>]))/y;

function tokenize(text: string, fail: (reason: string) => never): Token[] {
  const tokens: Token[] = [];
  TOKEN.lastIndex = 0;
  for (;;) {
    const start = TOKEN.lastIndex;
    if (/^\s*$/.test(text.slice(start))) return tokens;
    const m = TOKEN.exec(text);
    if (!m) fail(`unexpected character at position ${start + 1}`);
    if (m[3]) fail(`"${m[3]}" is not supported: use =, ==, !=, in, notin, KEY or !KEY`);
    if (m[1]) tokens.push({ kind: "op", text: m[1] as Extract<Token, { kind: "op" }>["text"] });
    else tokens.push({ kind: "word", text: m[2]! });
  }
}

/**
 * Parses a label selector; an empty text selects everything. A selector that is not one of
 * kubectl's forms, or names an invalid key or value, is INVALID_ARGUMENT naming it.
 */
export function parseLabelSelector(text: string): LabelSelector {
  const fail = (reason: string): never => {
    throw badField("labelSelector", `"${text}": ${reason}`, `label selector "${text}": ${reason}`);
  };
  if (text.length > MAX_LABEL_SELECTOR_LENGTH) fail(`must be at most ${MAX_LABEL_SELECTOR_LENGTH} characters`);
  const tokens = tokenize(text, fail);
  let i = 0;
  const peek = () => tokens[i];
  const isOp = (t: Token | undefined, op: string) => t?.kind === "op" && t.text === op;
  const word = (what: string): string => {
    const t = tokens[i];
    if (t?.kind !== "word") fail(`expected ${what}${t ? ` before "${t.text}"` : " at the end"}`);
    i++;
    return t!.text;
  };
  const key = (): string => {
    const k = word("a label key");
    const reason = validateLabelKey(k);
    if (reason) fail(reason);
    return k;
  };
  const value = (): string => {
    // An empty value is allowed (`app=` selects labels set to ""), as in Kubernetes.
    const t = peek();
    if (t === undefined || t.kind === "op") return "";
    const v = word("a value");
    const reason = validateLabelValue(v);
    if (reason) fail(reason);
    return v;
  };
  const valueSet = (): string[] => {
    if (!isOp(tokens[i++], "(")) fail("expected ( after in/notin");
    const values: string[] = [];
    for (;;) {
      values.push(value());
      const t = tokens[i++];
      if (isOp(t, ")")) return values;
      if (!isOp(t, ",")) fail(`expected , or ) in a value set${t ? `, got "${t.text}"` : ""}`);
    }
  };
  const requirement = (): LabelRequirement => {
    if (isOp(peek(), "!")) {
      i++;
      return { key: key(), op: "!exists" };
    }
    const k = key();
    const t = peek();
    if (t === undefined || isOp(t, ",")) return { key: k, op: "exists" };
    i++;
    if (isOp(t, "=") || isOp(t, "==")) return { key: k, op: "=", value: value() };
    if (isOp(t, "!=")) return { key: k, op: "!=", value: value() };
    if (t.kind === "word" && (t.text === "in" || t.text === "notin")) return { key: k, op: t.text, values: valueSet() };
    return fail(`unexpected "${t.text}" after "${k}": use KEY=VALUE, KEY!=VALUE, KEY in (A,B), KEY notin (A,B), KEY or !KEY`);
  };

  const requirements: LabelRequirement[] = [];
  if (tokens.length === 0) return { requirements };
  for (;;) {
    requirements.push(requirement());
    const t = tokens[i++];
    if (t === undefined) return { requirements };
    if (!isOp(t, ",")) fail(`expected "," between requirements, got "${t.text}"`);
  }
}

/** Tells whether labels satisfy every requirement of a selector. */
export function matchesLabelSelector(labels: Readonly<Record<string, string>>, selector: LabelSelector): boolean {
  return selector.requirements.every((r) => {
    const has = Object.hasOwn(labels, r.key);
    const v = labels[r.key];
    switch (r.op) {
      case "exists":
        return has;
      case "!exists":
        return !has;
      case "=":
        return has && v === r.value;
      // As in Kubernetes, != and notin also select objects without the key.
      case "!=":
        return !has || v !== r.value;
      case "in":
        return has && r.values.includes(v!);
      case "notin":
        return !has || !r.values.includes(v!);
    }
  });
}
