/**
 * Charts of one container's or service's load over the last minutes (uPlot): messages and
 * requests per second, in-flight deliveries and inbox depth, latency p50 and p99.
 */
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { Cluster } from "./cluster.js";
import type { LiveStats, Series } from "./stats.js";
import { ms, num } from "./format.js";

const COLOURS = ["#2563eb", "#d97706"];

/** One uPlot time chart of two series, updated in place as data arrives. */
function Chart(props: { title: string; names: [string, string]; data: [number[], number[], number[]]; unit: string }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | undefined>(undefined);
  useEffect(() => {
    const el = box.current!;
    const opts: uPlot.Options = {
      title: props.title,
      width: Math.max(300, el.clientWidth || 480),
      height: 200,
      series: [
        {},
        ...props.names.map((label, i) => ({ label, stroke: COLOURS[i], width: 2, value: (_: uPlot, v: number | null) => (v === null ? "-" : `${num(v)}${props.unit}`) })),
      ],
      axes: [{}, { size: 60 }],
      scales: { y: { range: (_u: uPlot, _min: number, max: number) => [0, max > 0 ? max * 1.1 : 1] } },
    };
    plot.current = new uPlot(opts, props.data, el);
    return () => plot.current?.destroy();
  }, [props.title]);
  useEffect(() => {
    plot.current?.setData(props.data);
  });
  return <div class="chart" ref={box} data-title={props.title} />;
}

/** The charts of the selected container or service, with a picker. */
export function LoadCharts(props: { cluster: Cluster; stats: LiveStats; selected: string | undefined; onSelect: (key: string) => void }) {
  const keys = [...props.stats.history.keys()].sort();
  const selected = props.selected && props.stats.history.has(props.selected) ? props.selected : keys.find((k) => k.startsWith("service/")) ?? keys[0];
  const series: Series | undefined = selected ? props.stats.history.get(selected) : undefined;
  const latest = selected?.startsWith("service/")
    ? props.stats.latest?.services.find((s) => `service/${s.name}` === selected)?.load
    : props.stats.latest?.containers.find((c) => `container/${c.name}` === selected)?.load;
  return (
    <div class="charts">
      <div class="filters">
        <label>
          show{" "}
          <select id="chart-select" value={selected} onChange={(e) => props.onSelect(e.currentTarget.value)}>
            {keys.map((k) => (
              <option key={k} value={k}>
                {k}
              </option>
            ))}
          </select>
        </label>
        {latest && (
          <span class="summary">
            {num(latest.messagesPerSecond)} msg/s · {latest.inFlight} in flight · {latest.inboxDepth} queued · p50 {ms(latest.latencyP50Ms)} · p90{" "}
            {ms(latest.latencyP90Ms)} · p99 {ms(latest.latencyP99Ms)} · {String(latest.messagesTotal)} messages in all
          </span>
        )}
        {props.stats.error && <span class="error">stats: {props.stats.error}</span>}
      </div>
      {series ? (
        <div class="chart-grid" key={selected}>
          <Chart title="messages per second" names={["messages", "requests"]} unit="/s" data={[series.time, series.messagesPerSecond, series.requestsPerSecond]} />
          <Chart title="in flight and queued" names={["in flight", "inbox"]} unit="" data={[series.time, series.inFlight, series.inboxDepth]} />
          <Chart title="latency (ms)" names={["p50", "p99"]} unit=" ms" data={[series.time, series.p50, series.p99]} />
        </div>
      ) : (
        <p class="empty">{props.stats.latest ? "no containers or services yet" : "waiting for the stats stream…"}</p>
      )}
    </div>
  );
}
