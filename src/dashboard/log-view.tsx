/** A container's output, following new lines as they come (as `k4s logs -f`). */
import { useEffect, useRef, useState } from "preact/hooks";
import type { LogLine } from "../gen/k4s/v1/log_service_pb.js";
import { keepStreaming, logClient } from "./api.js";
import type { Cluster } from "./cluster.js";
import { clock } from "./format.js";

/** Lines kept on the page. */
const MAX_LINES = 2000;

/** The log view of one container, with a container picker. */
export function LogView(props: { cluster: Cluster; container: string | undefined; onSelect: (name: string) => void }) {
  const names = [...props.cluster.containers.keys()].sort();
  const container = props.container ?? names[0];
  const [lines, setLines] = useState<LogLine[]>([]);
  const [error, setError] = useState<string | undefined>(undefined);
  const box = useRef<HTMLPreElement>(null);
  useEffect(() => {
    setLines([]);
    setError(undefined);
    if (!container) return;
    const abort = new AbortController();
    let kept: LogLine[] = [];
    const follow = async (signal: AbortSignal) => {
      // After a reconnect, only the lines not seen yet: the kept ones come again from the tail.
      kept = [];
      for await (const res of logClient.logs({ container, follow: true, tail: 500 }, { signal })) {
        kept = kept.concat(res.lines);
        if (kept.length > MAX_LINES) kept = kept.slice(-MAX_LINES);
        setLines(kept);
        setError(undefined);
      }
    };
    void keepStreaming(follow, abort.signal, setError);
    return () => abort.abort();
  }, [container]);
  useEffect(() => {
    const el = box.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [lines]);
  return (
    <div class="logs">
      <div class="filters">
        <label>
          container{" "}
          <select id="log-select" value={container} onChange={(e) => props.onSelect(e.currentTarget.value)}>
            {names.map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </label>
        <span class="follow">following</span>
        {error && <span class="error">{error}</span>}
      </div>
      <pre id="log-lines" ref={box}>
        {lines.map((l, i) => (
          <div key={i} class={`line ${l.stream}`}>
            <span class="time">{clock(l.time)}</span> {l.text}
          </div>
        ))}
        {lines.length === 0 && <span class="empty">{container ? "no output yet" : "no containers"}</span>}
      </pre>
    </div>
  );
}
