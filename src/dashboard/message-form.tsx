/** Send or request a message from the page, with the reply (or the error) shown. */
import { useState } from "preact/hooks";
import { describeError, messagingClient } from "./api.js";
import type { Cluster } from "./cluster.js";

type Result = { kind: "reply"; text: string; container: string; ms: number } | { kind: "sent"; container: string } | { kind: "error"; text: string };

const decoder = new TextDecoder();

/** The request/send form. */
export function MessageForm(props: { cluster: Cluster }) {
  const [target, setTarget] = useState("");
  const [payload, setPayload] = useState('{"operation": "sum", "operands": [1, 2, 3]}');
  const [asText, setAsText] = useState(false);
  const [timeout, setTimeoutMs] = useState("5000");
  const [result, setResult] = useState<Result | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const targets = [...[...props.cluster.services.keys()].map((n) => `service/${n}`), ...[...props.cluster.containers.keys()].map((n) => `container/${n}`)].sort();

  const body = () => {
    if (asText) return { data: new TextEncoder().encode(payload), contentType: "text/plain" };
    JSON.parse(payload);
    return { data: new TextEncoder().encode(payload), contentType: "application/json" };
  };
  const run = async (request: boolean) => {
    setBusy(true);
    setResult(undefined);
    try {
      const b = body();
      if (request) {
        const started = performance.now();
        const res = await messagingClient.request({ target, ...b, timeoutMs: Number(timeout) || 0 });
        const text = decoder.decode(res.data);
        let shown = text;
        try {
          if (res.contentType === "" || res.contentType.includes("json")) shown = JSON.stringify(JSON.parse(text), null, 2);
        } catch {
          shown = text;
        }
        setResult({ kind: "reply", text: shown, container: res.container, ms: performance.now() - started });
      } else {
        const res = await messagingClient.send({ target, ...b });
        setResult({ kind: "sent", container: res.container });
      }
    } catch (err) {
      setResult({ kind: "error", text: err instanceof SyntaxError ? `payload is not valid JSON: ${err.message} (or tick "text")` : describeError(err) });
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="message">
      <div class="form">
        <label>
          target{" "}
          <input id="target" list="targets" placeholder="service/NAME or container/NAME" value={target} onInput={(e) => setTarget(e.currentTarget.value)} />
          <datalist id="targets">
            {targets.map((t) => (
              <option key={t} value={t} />
            ))}
          </datalist>
        </label>
        <label class="payload">
          payload
          <textarea id="payload" spellcheck={false} value={payload} onInput={(e) => setPayload(e.currentTarget.value)} />
        </label>
        <label>
          <input type="checkbox" checked={asText} onChange={(e) => setAsText(e.currentTarget.checked)} /> text (text/plain instead of JSON)
        </label>
        <label>
          timeout (ms) <input id="timeout" type="number" min="1" value={timeout} onInput={(e) => setTimeoutMs(e.currentTarget.value)} />
        </label>
        <div class="buttons">
          <button id="request" class="primary" disabled={busy || !target} onClick={() => run(true)}>
            request
          </button>
          <button id="send" disabled={busy || !target} onClick={() => run(false)}>
            send
          </button>
        </div>
      </div>
      {result?.kind === "reply" && (
        <div id="reply" class="reply">
          <p>
            reply from <b>{result.container}</b> in {result.ms.toFixed(1)} ms
          </p>
          <pre>{result.text}</pre>
        </div>
      )}
      {result?.kind === "sent" && (
        <p id="reply" class="reply">
          queued at <b>{result.container}</b>
        </p>
      )}
      {result?.kind === "error" && (
        <p id="reply" class="error">
          {result.text}
        </p>
      )}
    </div>
  );
}
