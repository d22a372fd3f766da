/** The cluster's events, newest first, following new ones (as `k4s events -w`). */
import { useEffect, useState } from "preact/hooks";
import type { Event } from "../gen/k4s/v1/log_service_pb.js";
import { keepStreaming, logClient } from "./api.js";
import { clock } from "./format.js";

/** Events kept on the page. */
const MAX_EVENTS = 1000;

/** Follows the event stream; the list is kept while other views are shown. */
export function useEvents(): { events: Event[]; error: string | undefined } {
  const [state, setState] = useState<{ events: Event[]; error: string | undefined }>({ events: [], error: undefined });
  useEffect(() => {
    const abort = new AbortController();
    const follow = async (signal: AbortSignal) => {
      let events: Event[] = [];
      for await (const res of logClient.events({ follow: true }, { signal })) {
        if (!res.event) continue;
        events = [res.event, ...events].slice(0, MAX_EVENTS);
        setState({ events, error: undefined });
      }
    };
    void keepStreaming(follow, abort.signal, (error) => setState((s) => ({ ...s, error })));
    return () => abort.abort();
  }, []);
  return state;
}

/** The events table. */
export function EventList(props: { events: Event[]; error: string | undefined }) {
  return (
    <section id="events">
      {props.error && <p class="error">{props.error}</p>}
      <table>
        <thead>
          <tr>
            <th>time</th>
            <th>type</th>
            <th>reason</th>
            <th>object</th>
            <th>message</th>
          </tr>
        </thead>
        <tbody>
          {props.events.map((e, i) => (
            <tr key={i} class={e.type === "Warning" ? "warning" : ""}>
              <td class="time">{clock(e.time)}</td>
              <td>{e.type}</td>
              <td>{e.reason}</td>
              <td>
                {e.kind}/{e.name}
              </td>
              <td>{e.message}</td>
            </tr>
          ))}
          {props.events.length === 0 && (
            <tr>
              <td class="empty" colSpan={5}>
                no events yet
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </section>
  );
}
