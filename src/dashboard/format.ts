/** Small display helpers shared by the views. */
import type { Timestamp } from "@bufbuild/protobuf/wkt";

/** An age as kubectl shows it: 42s, 5m, 3h, 2d. */
export function age(ts: Timestamp | undefined, now = Date.now()): string {
  if (!ts) return "";
  const s = Math.max(0, Math.floor((now - Number(ts.seconds) * 1000) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 2 * 3600) return `${Math.floor(s / 60)}m`;
  if (s < 2 * 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** A timestamp as local time of day with milliseconds. */
export function clock(ts: Timestamp | undefined): string {
  if (!ts) return "";
  const d = new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6));
  return d.toLocaleTimeString(undefined, { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

/** A rate or count with at most one decimal (none from 100 up). */
export function num(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return "";
  return n >= 100 || Number.isInteger(n) ? String(Math.round(n)) : n.toFixed(1);
}

/** A latency in ms, with a unit. */
export function ms(n: number | undefined): string {
  if (!n) return "-";
  return n >= 100 ? `${Math.round(n)} ms` : n >= 1 ? `${n.toFixed(1)} ms` : `${Math.round(n * 1000)} µs`;
}

/** Labels as k=v,k=v. */
export function labelText(labels: Record<string, string> | undefined): string {
  return Object.entries(labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
}
