/**
 * The cluster as the page knows it: every Container, ReplicaSet and Service, kept current by one
 * Watch of every kind (a browser has only a few connections per server over HTTP/1.1, so the
 * page keeps its streams few).
 */
import { useEffect, useState } from "preact/hooks";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Container, ReplicaSet, Service } from "../gen/k4s/v1/resources_pb.js";
import type { WatchEvent } from "../gen/k4s/v1/resource_service_pb.js";
import { keepStreaming, resourceClient } from "./api.js";

/** Cluster is a snapshot of the watched objects, by name. */
export interface Cluster {
  readonly containers: ReadonlyMap<string, Container>;
  readonly replicaSets: ReadonlyMap<string, ReplicaSet>;
  readonly services: ReadonlyMap<string, Service>;
  /** True once the initial listing arrived and the watch follows changes. */
  readonly synced: boolean;
  /** Why the watch is down, when it is. */
  readonly error: string | undefined;
}

/** How often at most the page re-renders for watch events (ms): a burst of events is one render. */
const RENDER_EVERY_MS = 50;

const RELIST_CODES = new Set([Code.OutOfRange, Code.InvalidArgument, Code.FailedPrecondition]);

/** Applies one watch event to the maps. */
function applyEvent(maps: MutableMaps, ev: WatchEvent): void {
  const o = ev.object?.kind;
  if (!o?.case) return;
  const map = maps[o.case] as Map<string, typeof o.value>;
  const name = o.value.metadata?.name ?? "";
  if (ev.type === "DELETED") map.delete(name);
  else map.set(name, o.value);
}

interface MutableMaps {
  container: Map<string, Container>;
  replicaSet: Map<string, ReplicaSet>;
  service: Map<string, Service>;
}

/** Watches every object of the cluster; re-renders (at most every 50 ms) when one changes. */
export function useCluster(): Cluster {
  const [cluster, setCluster] = useState<Cluster>({
    containers: new Map(),
    replicaSets: new Map(),
    services: new Map(),
    synced: false,
    error: undefined,
  });
  useEffect(() => {
    const abort = new AbortController();
    const maps: MutableMaps = { container: new Map(), replicaSet: new Map(), service: new Map() };
    let synced = false;
    let error: string | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const publish = () => {
      timer = undefined;
      setCluster({ containers: new Map(maps.container), replicaSets: new Map(maps.replicaSet), services: new Map(maps.service), synced, error });
    };
    const changed = () => {
      timer ??= setTimeout(publish, RENDER_EVERY_MS);
    };
    let version = "";
    const watch = async (signal: AbortSignal) => {
      if (version === "") {
        // A fresh listing: whatever was known may have been deleted meanwhile.
        synced = false;
        maps.container.clear();
        maps.replicaSet.clear();
        maps.service.clear();
      }
      try {
        for await (const res of resourceClient.watch({ resourceVersion: version }, { signal })) {
          for (const ev of res.events) applyEvent(maps, ev);
          // A response with a version is a resume point: the first one ends the initial listing
          // (its responses carry none), the later ones each end a whole revision.
          if (res.resourceVersion) {
            synced = true;
            version = res.resourceVersion;
          }
          error = undefined;
          changed();
        }
      } catch (err) {
        // History compacted past our version, or a version the server does not know (it was
        // restarted on other state): list again from scratch.
        if (RELIST_CODES.has(ConnectError.from(err).code)) version = "";
        throw err;
      }
    };
    const onState = (e: string | undefined) => {
      error = e;
      changed();
    };
    void keepStreaming(watch, abort.signal, onState);
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
  }, []);
  return cluster;
}
