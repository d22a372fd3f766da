/**
 * The live load from the stats stream: the latest snapshot, and a few minutes of history per
 * container and per service for the charts.
 */
import { useEffect, useState } from "preact/hooks";
import type { Load, Stats } from "../gen/k4s/v1/stats_service_pb.js";
import { keepStreaming, statsClient } from "./api.js";

/** Samples kept per container and service: five minutes at one a second. */
export const HISTORY_LENGTH = 300;

/** Series is the recent history of one container's or service's load, oldest first. */
export interface Series {
  /** Seconds since the epoch. */
  readonly time: number[];
  readonly messagesPerSecond: number[];
  readonly requestsPerSecond: number[];
  readonly inFlight: number[];
  readonly inboxDepth: number[];
  readonly p50: number[];
  readonly p99: number[];
}

/** LiveStats is the latest snapshot with the history, by `container/NAME` and `service/NAME`. */
export interface LiveStats {
  readonly latest: Stats | undefined;
  readonly history: ReadonlyMap<string, Series>;
  /** Why the stream is down, when it is. */
  readonly error: string | undefined;
}

function emptySeries(): Series {
  return { time: [], messagesPerSecond: [], requestsPerSecond: [], inFlight: [], inboxDepth: [], p50: [], p99: [] };
}

function push(series: Series, t: number, load: Load | undefined): void {
  const columns: [number[], number][] = [
    [series.time as number[], t],
    [series.messagesPerSecond as number[], load?.messagesPerSecond ?? 0],
    [series.requestsPerSecond as number[], load?.requestsPerSecond ?? 0],
    [series.inFlight as number[], load?.inFlight ?? 0],
    [series.inboxDepth as number[], load?.inboxDepth ?? 0],
    [series.p50 as number[], load?.latencyP50Ms ?? 0],
    [series.p99 as number[], load?.latencyP99Ms ?? 0],
  ];
  for (const [column, value] of columns) {
    column.push(value);
    if (column.length > HISTORY_LENGTH) column.shift();
  }
}

/** Records one snapshot into the history; forgets what the snapshot no longer has. */
function record(history: Map<string, Series>, stats: Stats): void {
  const t = stats.time ? Number(stats.time.seconds) + stats.time.nanos / 1e9 : Date.now() / 1000;
  const seen = new Set<string>();
  const add = (key: string, load: Load | undefined) => {
    seen.add(key);
    let s = history.get(key);
    if (!s) history.set(key, (s = emptySeries()));
    push(s, t, load);
  };
  for (const c of stats.containers) add(`container/${c.name}`, c.load);
  for (const s of stats.services) add(`service/${s.name}`, s.load);
  for (const key of history.keys()) if (!seen.has(key)) history.delete(key);
}

/** Follows the stats stream. */
export function useStats(): LiveStats {
  const [live, setLive] = useState<LiveStats>({ latest: undefined, history: new Map(), error: undefined });
  useEffect(() => {
    const abort = new AbortController();
    const history = new Map<string, Series>();
    const follow = async (signal: AbortSignal) => {
      for await (const res of statsClient.watchStats({}, { signal })) {
        if (!res.stats) continue;
        record(history, res.stats);
        setLive({ latest: res.stats, history, error: undefined });
      }
    };
    void keepStreaming(follow, abort.signal, (error) => setLive((l) => ({ ...l, error })));
    return () => abort.abort();
  }, []);
  return live;
}
