/**
 * The benchmark's report: which figures each scenario shows, their medians over rounds, and the
 * text table with ratios k4s/peer.
 */
import { median } from "./latency-recorder.js";

/** MetricDef names one figure of a scenario and how to print it. */
export interface MetricDef {
  key: string;
  label: string;
  unit: "rate" | "ms" | "us" | "s" | "MiB" | "count";
}

/** Metrics shown per scenario kind. */
export const METRICS: Record<string, MetricDef[]> = {
  closed: [
    { key: "rate", label: "req/s", unit: "rate" },
    { key: "p50", label: "p50 ms", unit: "ms" },
    { key: "p99", label: "p99 ms", unit: "ms" },
    { key: "serverCpuPerCall", label: "server CPU µs/call", unit: "us" },
  ],
  ff: [
    { key: "recvRate", label: "received msg/s", unit: "rate" },
    { key: "serverCpuPerCall", label: "server CPU µs/msg", unit: "us" },
  ],
  open: [
    { key: "p50", label: "p50 ms (from intended)", unit: "ms" },
    { key: "p99", label: "p99 ms (from intended)", unit: "ms" },
    { key: "rate", label: "answered/s", unit: "rate" },
  ],
  control: [
    { key: "scaleUpS", label: "ReplicaSet 0→N all Running, s", unit: "s" },
    { key: "scaleUpServerCpuS", label: "0→N server CPU, s", unit: "s" },
    { key: "scaleUpHostCpuS", label: "0→N host CPU, s", unit: "s" },
    { key: "scaleDownS", label: "ReplicaSet N→0 all gone, s", unit: "s" },
    { key: "scaleDownServerCpuS", label: "N→0 server CPU, s", unit: "s" },
    { key: "applyToWatchP50", label: "apply→watch p50 ms", unit: "ms" },
    { key: "applyToWatchP99", label: "apply→watch p99 ms", unit: "ms" },
    { key: "serverRssEmptyMiB", label: "server RSS empty, MiB", unit: "MiB" },
    { key: "serverRssIdleMiB", label: "server RSS N idle, MiB", unit: "MiB" },
    { key: "hostRssEmptyMiB", label: "host RSS empty, MiB", unit: "MiB" },
    { key: "hostRssIdleMiB", label: "host RSS N idle, MiB", unit: "MiB" },
  ],
};

/** Formats a figure for the table. */
export function formatValue(v: number | undefined, unit: MetricDef["unit"]): string {
  if (v === undefined || !Number.isFinite(v)) return "—";
  switch (unit) {
    case "rate":
      return Math.round(v).toLocaleString("en-US");
    case "ms":
      return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(3);
    case "us":
      return v >= 100 ? v.toFixed(0) : v.toFixed(1);
    case "s":
      return v.toFixed(2);
    case "MiB":
      return v.toFixed(1);
    case "count":
      return String(Math.round(v));
  }
}

/** Medians of every metric over rounds: medians[scenario][system][metric]. */
export function medians(
  rows: { scenario: string; system: string; metrics?: Record<string, number> }[],
): Record<string, Record<string, Record<string, number>>> {
  const grouped: Record<string, Record<string, Record<string, number[]>>> = {};
  for (const r of rows) {
    if (!r.metrics) continue;
    const bySystem = (grouped[r.scenario] ??= {});
    const byMetric = (bySystem[r.system] ??= {});
    for (const [k, v] of Object.entries(r.metrics)) (byMetric[k] ??= []).push(v);
  }
  const out: Record<string, Record<string, Record<string, number>>> = {};
  for (const [s, bySystem] of Object.entries(grouped)) {
    for (const [sys, byMetric] of Object.entries(bySystem)) {
      for (const [k, values] of Object.entries(byMetric)) ((out[s] ??= {})[sys] ??= {})[k] = median(values);
    }
  }
  return out;
}

/** Renders a Markdown table: one row per scenario and metric, one column per system, then k4s/peer ratios. */
export function renderTable(
  scenarios: { id: string; title: string; kind: string }[],
  systems: string[],
  med: Record<string, Record<string, Record<string, number>>>,
): string {
  const peers = systems.filter((s) => s !== "k4s");
  const header = ["scenario", "figure", ...systems, ...peers.map((p) => `k4s/${p}`)];
  const lines = [`| ${header.join(" | ")} |`, `| ${header.map((_, i) => (i < 2 ? "---" : "---:")).join(" | ")} |`];
  for (const s of scenarios) {
    for (const m of METRICS[s.kind] ?? []) {
      const vals = systems.map((sys) => med[s.id]?.[sys]?.[m.key]);
      const k4s = med[s.id]?.k4s?.[m.key];
      const ratios = peers.map((p) => {
        const v = med[s.id]?.[p]?.[m.key];
        return k4s !== undefined && v !== undefined && Number.isFinite(k4s) && Number.isFinite(v) && v !== 0 ? `${(k4s / v).toFixed(2)}×` : "—";
      });
      const cells = [s.id, m.label, ...vals.map((v) => formatValue(v, m.unit)), ...ratios];
      lines.push(`| ${cells.join(" | ")} |`);
    }
  }
  return lines.join("\n");
}
