/**
 * The dashboard page: a header with the connection state, a tab per view, and the sign-in form
 * when the server refuses the calls for want of a token.
 */
import { useEffect, useState } from "preact/hooks";
import { onUnauthenticated, setToken } from "./api.js";
import { ApplyEditor } from "./apply-editor.js";
import { useCluster } from "./cluster.js";
import { EventList, useEvents } from "./event-list.js";
import { LoadCharts } from "./load-charts.js";
import { LogView } from "./log-view.js";
import { MessageForm } from "./message-form.js";
import { ResourceTables } from "./resource-tables.js";
import { ServiceGraph } from "./service-graph.js";
import { useStats } from "./stats.js";

const VIEWS = ["resources", "graph", "charts", "logs", "events", "apply", "message"] as const;
type View = (typeof VIEWS)[number];

/** The view and its argument from the address: #/logs/NAME, #/charts/service/NAME, ... */
function route(): { view: View; arg: string | undefined } {
  const [view, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  return { view: (VIEWS as readonly string[]).includes(view!) ? (view as View) : "resources", arg: rest.length ? decodeURIComponent(rest.join("/")) : undefined };
}

function go(view: View, arg?: string): void {
  location.hash = `#/${view}${arg ? `/${arg}` : ""}`;
}

/** The page. */
export function App() {
  const [where, setWhere] = useState(route);
  const [needsToken, setNeedsToken] = useState(false);
  useEffect(() => {
    const onHash = () => setWhere(route());
    addEventListener("hashchange", onHash);
    const off = onUnauthenticated(() => setNeedsToken(true));
    return () => {
      removeEventListener("hashchange", onHash);
      off();
    };
  }, []);
  const cluster = useCluster();
  const stats = useStats();
  const events = useEvents();
  if (needsToken) return <SignIn />;
  const state = cluster.error ? `disconnected: ${cluster.error}` : cluster.synced ? "live" : "connecting…";
  return (
    <>
      <header>
        <h1>k4s</h1>
        <nav>
          {VIEWS.map((v) => (
            <a key={v} id={`tab-${v}`} href={`#/${v}`} class={where.view === v ? "active" : ""}>
              {v}
            </a>
          ))}
        </nav>
        <span id="connection" class={cluster.error ? "state down" : cluster.synced ? "state live" : "state"}>
          {state}
        </span>
      </header>
      <main id={`view-${where.view}`}>
        {where.view === "resources" && <ResourceTables cluster={cluster} stats={stats} onLogs={(n) => go("logs", n)} onCharts={(k) => go("charts", k)} />}
        {where.view === "graph" && <ServiceGraph cluster={cluster} stats={stats} />}
        {where.view === "charts" && <LoadCharts cluster={cluster} stats={stats} selected={where.arg} onSelect={(k) => go("charts", k)} />}
        {where.view === "logs" && <LogView cluster={cluster} container={where.arg} onSelect={(n) => go("logs", n)} />}
        {where.view === "events" && <EventList events={events.events} error={events.error} />}
        {where.view === "apply" && <ApplyEditor />}
        {where.view === "message" && <MessageForm cluster={cluster} />}
      </main>
    </>
  );
}

/** The form asking for the server's bearer token. */
function SignIn() {
  const [token, setValue] = useState("");
  return (
    <div id="sign-in" class="sign-in">
      <h1>k4s</h1>
      <p>This server requires its bearer token (the one given to <code>k4s server --token</code>).</p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          setToken(token);
          location.reload();
        }}
      >
        <input id="token" type="password" autocomplete="off" placeholder="token" value={token} onInput={(e) => setValue(e.currentTarget.value)} />
        <button class="primary">sign in</button>
      </form>
    </div>
  );
}
