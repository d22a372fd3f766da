/**
 * Apply: a YAML editor whose validation errors point at the field (line marked in the gutter
 * and highlighted, error list linking to it), with a dry run, and the outcome per object.
 */
import { useRef, useState } from "preact/hooks";
import { ConnectError } from "@connectrpc/connect";
import { fieldViolations } from "../api/bad-request.js";
import type { ApplyResult } from "../gen/k4s/v1/resource_service_pb.js";
import { codeName, describeError, resourceClient } from "./api.js";
import { fieldErrorsOf, locateFieldErrors, type FieldError } from "./manifest-errors.js";

const EXAMPLE = `kind: Container
metadata:
  name: calculator
  labels: {app: calculator}
spec:
  module: workers
  function: calculator_worker
---
kind: ReplicaSet
metadata:
  name: calculator-rs
spec:
  replicas: 3
  container: calculator
---
kind: Service
metadata:
  name: calculator-service
spec:
  selector: "calculator-rs-*"
  strategy: round-robin
`;

type Outcome = { results: ApplyResult[]; dryRun: boolean } | { error: string; fields: FieldError[] } | undefined;

/** The manifest editor with Apply and Dry run. */
export function ApplyEditor() {
  const [text, setText] = useState(EXAMPLE);
  const [outcome, setOutcome] = useState<Outcome>(undefined);
  const [busy, setBusy] = useState(false);
  const area = useRef<HTMLTextAreaElement>(null);
  const gutter = useRef<HTMLPreElement>(null);
  const backdrop = useRef<HTMLPreElement>(null);
  const lines = text.split("\n");
  const errorLines = new Map<number, string>();
  if (outcome && "fields" in outcome) for (const f of outcome.fields) if (f.line) errorLines.set(f.line, `${f.path ? `${f.path}: ` : ""}${f.reason}`);

  const apply = async (dryRun: boolean) => {
    setBusy(true);
    try {
      const res = await resourceClient.apply({ manifest: text, dryRun });
      setOutcome({ results: res.results, dryRun });
    } catch (err) {
      const e = ConnectError.from(err);
      const violations = fieldViolations(e);
      const fields = locateFieldErrors(text, fieldErrorsOf(violations));
      setOutcome({ error: violations.length > 0 ? `${codeName(e.code)}: the manifest was not applied` : describeError(err), fields });
    } finally {
      setBusy(false);
    }
  };
  const goTo = (line: number) => {
    const el = area.current!;
    const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
    el.focus();
    el.setSelectionRange(start, start + (lines[line - 1]?.length ?? 0));
  };
  const syncScroll = () => {
    const top = area.current!.scrollTop;
    gutter.current!.scrollTop = top;
    backdrop.current!.scrollTop = top;
  };
  return (
    <div class="apply">
      <div class="editor">
        <pre class="gutter" ref={gutter} aria-hidden="true">
          {lines.map((_, i) => (
            <div key={i} class={errorLines.has(i + 1) ? "error-line" : ""} title={errorLines.get(i + 1)}>
              {i + 1}
            </div>
          ))}
        </pre>
        <div class="code">
          <pre class="backdrop" ref={backdrop} aria-hidden="true">
            {lines.map((l, i) => (
              <div key={i} class={errorLines.has(i + 1) ? "error-line" : ""}>
                {l || " "}
              </div>
            ))}
          </pre>
          <textarea
            id="manifest"
            ref={area}
            spellcheck={false}
            value={text}
            onInput={(e) => {
              setText(e.currentTarget.value);
              if (outcome && "fields" in outcome) setOutcome(undefined);
            }}
            onScroll={syncScroll}
          />
        </div>
      </div>
      <div class="buttons">
        <button id="apply" class="primary" disabled={busy} onClick={() => apply(false)}>
          apply
        </button>
        <button id="dry-run" disabled={busy} onClick={() => apply(true)}>
          dry run
        </button>
        <button onClick={() => setText(EXAMPLE)}>example</button>
      </div>
      {outcome && "results" in outcome && (
        <ul id="apply-results" class="results">
          {outcome.results.map((r) => (
            <li key={`${r.kind}/${r.name}`}>
              {r.kind.toLowerCase()}/{r.name} {r.action}
              {outcome.dryRun ? " (dry run)" : ""}
            </li>
          ))}
        </ul>
      )}
      {outcome && "error" in outcome && (
        <div id="apply-errors" class="errors">
          <p class="error">{outcome.error}</p>
          <ul>
            {outcome.fields.map((f, i) => (
              <li key={i} class="field-error" data-line={f.line} data-path={f.path} onClick={() => f.line && goTo(f.line)}>
                {f.line ? <span class="where">line {f.line}</span> : null}
                {f.document ? <span class="doc">document {f.document}</span> : null}
                {f.path ? <code>{f.path}</code> : null} {f.reason}
              </li>
            ))}
          </ul>
        </div>
      )}
    </div>
  );
}
