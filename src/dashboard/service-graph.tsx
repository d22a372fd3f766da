/**
 * The graph of Services → their endpoints (containers) → the hosts running them, with each
 * endpoint's message rate on its edges, drawn as SVG in three columns.
 */
import type { Cluster } from "./cluster.js";
import { num } from "./format.js";
import type { LiveStats } from "./stats.js";

const ROW = 38;
const NODE_H = 26;
const COLUMN_X = [20, 360, 700];
const NODE_W = 220;
const TOP = 30;

interface Node {
  key: string;
  label: string;
  column: number;
  row: number;
  cls: string;
}

interface Edge {
  from: string;
  to: string;
  rate: number | undefined;
}

/** The nodes and edges of the graph from the watched objects and the latest stats. */
function layout(cluster: Cluster, stats: LiveStats): { nodes: Map<string, Node>; edges: Edge[]; rows: number } {
  const rates = new Map((stats.latest?.containers ?? []).map((c) => [c.name, c.load?.messagesPerSecond ?? 0]));
  const serviceRates = new Map((stats.latest?.services ?? []).map((s) => [s.name, s.load?.messagesPerSecond ?? 0]));
  const hostRates = new Map((stats.latest?.hosts ?? []).map((h) => [h.name, h.load?.messagesPerSecond ?? 0]));
  const withRate = (label: string, rate: number | undefined) => (rate ? `${label} · ${num(rate)}/s` : label);
  const nodes = new Map<string, Node>();
  const add = (key: string, label: string, column: number, cls: string) => {
    if (nodes.has(key)) return;
    const row = [...nodes.values()].filter((n) => n.column === column).length;
    nodes.set(key, { key, label, column, row, cls });
  };
  const edges: Edge[] = [];
  const services = [...cluster.services.values()].sort((a, b) => (a.metadata!.name < b.metadata!.name ? -1 : 1));
  // Endpoints first, in service order, so edges cross little; then the other containers.
  for (const s of services) {
    const name = s.metadata!.name;
    add(`s/${name}`, withRate(name, serviceRates.get(name)), 0, "service");
    for (const ep of s.status?.endpoints ?? []) {
      add(`c/${ep}`, ep, 1, "container");
      edges.push({ from: `s/${name}`, to: `c/${ep}`, rate: rates.get(ep) });
    }
  }
  const containers = [...cluster.containers.values()].sort((a, b) => (a.metadata!.name < b.metadata!.name ? -1 : 1));
  for (const c of containers) add(`c/${c.metadata!.name}`, c.metadata!.name, 1, c.status?.ready ? "container" : "container not-ready");
  const hosts = [...new Set(containers.map((c) => c.status?.host ?? "").filter(Boolean))].sort();
  for (const host of hosts) add(`h/${host}`, withRate(host, hostRates.get(host)), 2, "host");
  for (const c of containers) {
    const host = c.status?.host;
    if (host) edges.push({ from: `c/${c.metadata!.name}`, to: `h/${host}`, rate: undefined });
  }
  const rows = Math.max(1, ...[0, 1, 2].map((col) => [...nodes.values()].filter((n) => n.column === col).length));
  return { nodes, edges, rows };
}

/** The Services → endpoints → hosts graph. */
export function ServiceGraph(props: { cluster: Cluster; stats: LiveStats }) {
  const { nodes, edges, rows } = layout(props.cluster, props.stats);
  const height = TOP + rows * ROW + 10;
  const y = (n: Node) => TOP + n.row * ROW;
  return (
    <div class="graph">
      <svg id="service-graph" width={COLUMN_X[2]! + NODE_W + 20} height={height} role="img" aria-label="services, endpoints and hosts">
        {["services", "endpoints (containers)", "hosts"].map((t, i) => (
          <text key={t} class="column-title" x={COLUMN_X[i]} y={16}>
            {t}
          </text>
        ))}
        {edges.map((e) => {
          const a = nodes.get(e.from)!;
          const b = nodes.get(e.to)!;
          const x1 = COLUMN_X[a.column]! + NODE_W;
          const y1 = y(a) + NODE_H / 2;
          const x2 = COLUMN_X[b.column]!;
          const y2 = y(b) + NODE_H / 2;
          const mx = (x1 + x2) / 2;
          const width = e.rate ? Math.min(8, 1 + Math.log10(1 + e.rate) * 2) : 1;
          return (
            <g key={`${e.from}>${e.to}`} class="edge" data-from={e.from} data-to={e.to}>
              <path d={`M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`} stroke-width={width} />
              {e.rate !== undefined && (
                <text class="rate" x={x2 - 8} y={y2 - 5} text-anchor="end">
                  {num(e.rate)}/s
                </text>
              )}
            </g>
          );
        })}
        {[...nodes.values()].map((n) => (
          <g key={n.key} class={`node ${n.cls}`} data-key={n.key}>
            <rect x={COLUMN_X[n.column]} y={y(n)} width={NODE_W} height={NODE_H} rx={5} />
            <text x={COLUMN_X[n.column]! + 10} y={y(n) + 17}>
              {n.label}
            </text>
          </g>
        ))}
      </svg>
      {nodes.size === 0 && <p class="empty">no services or containers yet</p>}
    </div>
  );
}
