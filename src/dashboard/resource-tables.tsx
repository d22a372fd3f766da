/**
 * The Containers, ReplicaSets and Services tables, filtered by a name glob and labels, with the
 * actions kubectl users reach for: scale, delete, and a container's logs.
 */
import { useState } from "preact/hooks";
import type { ComponentChildren } from "preact";
import { ConnectError } from "@connectrpc/connect";
import { parseLabelSelector, type LabelSelector } from "../api/label-selector.js";
import { matchesSelector, validateGlob, type SelectorOptions } from "../api/selector.js";
import type { Container, ReplicaSet, Service } from "../gen/k4s/v1/resources_pb.js";
import type { ContainerStats, ServiceStats } from "../gen/k4s/v1/stats_service_pb.js";
import { describeError, resourceClient } from "./api.js";
import type { Cluster } from "./cluster.js";
import { age, labelText, num } from "./format.js";
import type { LiveStats } from "./stats.js";

/** ResourceTablesProps are what the tables show and where their actions lead. */
export interface ResourceTablesProps {
  cluster: Cluster;
  stats: LiveStats;
  /** Opens a container's log view. */
  onLogs: (container: string) => void;
  /** Opens a container's or service's charts. */
  onCharts: (key: string) => void;
}

/** The three resource tables with their filter bar. */
export function ResourceTables(props: ResourceTablesProps) {
  const [glob, setGlob] = useState("");
  const [labels, setLabels] = useState("");
  const globError = glob ? validateGlob(glob) : undefined;
  let labelSelector: LabelSelector | undefined;
  let labelError: string | undefined;
  try {
    labelSelector = parseLabelSelector(labels);
  } catch (err) {
    labelError = ConnectError.from(err).rawMessage;
  }
  const filterError = globError ? `name: ${globError}` : labelError;
  const selector: SelectorOptions = filterError ? {} : { nameGlob: glob || undefined, labelSelector };
  const pick = <T extends Container | ReplicaSet | Service>(m: ReadonlyMap<string, T>) =>
    [...m.values()].filter((o) => matchesSelector(o, selector)).sort((a, b) => (a.metadata!.name < b.metadata!.name ? -1 : 1));
  const containerStats = new Map((props.stats.latest?.containers ?? []).map((c) => [c.name, c]));
  const serviceStats = new Map((props.stats.latest?.services ?? []).map((s) => [s.name, s]));
  return (
    <div class="resources">
      <div class="filters">
        <label>
          name <input id="filter-name" placeholder="glob, e.g. calc-*" value={glob} onInput={(e) => setGlob(e.currentTarget.value)} />
        </label>
        <label>
          labels <input id="filter-labels" placeholder="app=calc,tier in (a,b)" value={labels} onInput={(e) => setLabels(e.currentTarget.value)} />
        </label>
        {filterError && <span class="error">{filterError}</span>}
      </div>
      <ContainerTable items={pick(props.cluster.containers)} stats={containerStats} onLogs={props.onLogs} onCharts={props.onCharts} />
      <ReplicaSetTable items={pick(props.cluster.replicaSets)} />
      <ServiceTable items={pick(props.cluster.services)} stats={serviceStats} onCharts={props.onCharts} />
    </div>
  );
}

function Section(props: { title: string; count: number; head: string[]; children: ComponentChildren; id: string }) {
  return (
    <section id={props.id}>
      <h2>
        {props.title} <span class="count">{props.count}</span>
      </h2>
      <table>
        <thead>
          <tr>
            {props.head.map((h) => (
              <th key={h}>{h}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {props.children}
          {props.count === 0 && (
            <tr>
              <td class="empty" colSpan={props.head.length}>
                none
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </section>
  );
}

function ContainerTable(props: { items: Container[]; stats: Map<string, ContainerStats>; onLogs: (n: string) => void; onCharts: (k: string) => void }) {
  return (
    <Section id="containers" title="Containers" count={props.items.length} head={["name", "phase", "ready", "restarts", "host", "msg/s", "in flight", "age", "labels", ""]}>
      {props.items.map((c) => {
        const name = c.metadata!.name;
        const load = props.stats.get(name)?.load;
        const phase = c.metadata?.deletionTimestamp ? "Terminating" : c.status?.phase || "Pending";
        return (
          <tr key={name} data-name={name}>
            <td class="name">{name}</td>
            <td>
              <span class={`phase phase-${phase.toLowerCase()}`} title={c.status?.message}>
                {phase}
              </span>
            </td>
            <td class="ready">{c.status?.ready ? "yes" : "no"}</td>
            <td class="restarts">{c.status?.restarts ?? 0}</td>
            <td class="host">{c.status?.host}</td>
            <td class="rate">{num(load?.messagesPerSecond)}</td>
            <td class="inflight">{load?.inFlight ?? ""}</td>
            <td class="age">{age(c.metadata?.creationTimestamp)}</td>
            <td class="labels">{labelText(c.metadata?.labels)}</td>
            <td class="actions">
              <button onClick={() => props.onLogs(name)}>logs</button>
              <button onClick={() => props.onCharts(`container/${name}`)}>charts</button>
              <DeleteButton kind="Container" name={name} />
            </td>
          </tr>
        );
      })}
    </Section>
  );
}

function ReplicaSetTable(props: { items: ReplicaSet[] }) {
  return (
    <Section id="replicasets" title="ReplicaSets" count={props.items.length} head={["name", "desired", "current", "ready", "age", "labels", ""]}>
      {props.items.map((rs) => {
        const name = rs.metadata!.name;
        const desired = rs.spec?.replicas ?? 1;
        return (
          <tr key={name} data-name={name}>
            <td class="name">{name}</td>
            <td class="desired">{desired}</td>
            <td class="current">{rs.status?.replicas ?? 0}</td>
            <td class="ready">{rs.status?.readyReplicas ?? 0}</td>
            <td class="age">{age(rs.metadata?.creationTimestamp)}</td>
            <td class="labels">{labelText(rs.metadata?.labels)}</td>
            <td class="actions">
              <ScaleControl name={name} replicas={desired} />
              <DeleteButton kind="ReplicaSet" name={name} />
            </td>
          </tr>
        );
      })}
    </Section>
  );
}

function ServiceTable(props: { items: Service[]; stats: Map<string, ServiceStats>; onCharts: (k: string) => void }) {
  return (
    <Section id="services" title="Services" count={props.items.length} head={["name", "selector", "strategy", "endpoints", "msg/s", "p99", "age", ""]}>
      {props.items.map((s) => {
        const name = s.metadata!.name;
        const load = props.stats.get(name)?.load;
        const selector = [s.spec?.selector, labelText(s.spec?.matchLabels)].filter(Boolean).join(" ");
        return (
          <tr key={name} data-name={name}>
            <td class="name">{name}</td>
            <td>{selector}</td>
            <td>{s.spec?.strategy || "round-robin"}</td>
            <td class="endpoints" title={(s.status?.endpoints ?? []).join(", ")}>
              {s.status?.endpoints.length ?? 0}
            </td>
            <td class="rate">{num(load?.messagesPerSecond)}</td>
            <td>{load?.latencyP99Ms ? `${num(load.latencyP99Ms)} ms` : ""}</td>
            <td class="age">{age(s.metadata?.creationTimestamp)}</td>
            <td class="actions">
              <button onClick={() => props.onCharts(`service/${name}`)}>charts</button>
              <DeleteButton kind="Service" name={name} />
            </td>
          </tr>
        );
      })}
    </Section>
  );
}

/** A replica count field with its button; shows the server's refusal next to it. */
function ScaleControl(props: { name: string; replicas: number }) {
  const [value, setValue] = useState<string | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const shown = value ?? String(props.replicas);
  const scale = async () => {
    setError(undefined);
    try {
      await resourceClient.scale({ name: props.name, replicas: Number(shown) });
      setValue(undefined);
    } catch (err) {
      setError(describeError(err));
    }
  };
  return (
    <span class="scale">
      <input type="number" min="0" class="replicas" value={shown} onInput={(e) => setValue(e.currentTarget.value)} onKeyDown={(e) => e.key === "Enter" && scale()} />
      <button onClick={scale}>scale</button>
      {error && <span class="error">{error}</span>}
    </span>
  );
}

/** Delete in two clicks: the first arms, the second deletes. */
function DeleteButton(props: { kind: string; name: string }) {
  const [armed, setArmed] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  const remove = async () => {
    if (!armed) {
      setArmed(true);
      setTimeout(() => setArmed(false), 4000);
      return;
    }
    try {
      await resourceClient.delete({ kind: props.kind, name: props.name });
    } catch (err) {
      setError(describeError(err));
    }
  };
  return (
    <>
      <button class={armed ? "danger armed" : "danger"} onClick={remove}>
        {armed ? "confirm delete" : "delete"}
      </button>
      {error && <span class="error">{error}</span>}
    </>
  );
}
