/**
 * Starting and stopping the systems under test. Every system gets its server-side processes and
 * its own load process; nothing of one system shares a process with another, and the load
 * generator never shares a process with a server or a receiver.
 */
import { fileURLToPath } from "node:url";
import { createClient } from "../../src/client/index.js";
import { forkTs, freePort, spawnBinary, type Child } from "./processes.js";

/** RunningSystem is a started system under test. */
export interface RunningSystem {
  name: string;
  /** The system's own processes (servers, brokers, receivers), whose CPU a call costs. */
  serverSide: Child[];
  /** The load process. */
  load: Child;
  /** The process that receives fire-and-forget messages and counts them ({cmd:"count"}). */
  ffReceiver: Child;
  /** How processes are placed, for the README and the JSON. */
  placement: string;
  stop(): Promise<void>;
}

const here = (p: string) => new URL(`../${p}`, import.meta.url);

/**
 * Extra node flags for the k4s processes: BENCH_CPU_PROF=DIR writes a V8 CPU profile of each
 * (server, workers, load client) into DIR when it exits, to see where a call's time goes.
 */
export const k4sExecArgv = process.env.BENCH_CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];

/** Stops children in reverse start order, never throwing. */
async function stopAll(children: Child[]): Promise<void> {
  for (const c of [...children].reverse()) await c.stop().catch(() => {});
}

/** Runs start with a list that collects children, stopping them all if start fails. */
async function starting(start: (track: <T extends Child>(c: T) => T) => Promise<RunningSystem>): Promise<RunningSystem> {
  const children: Child[] = [];
  try {
    const sys = await start((c) => {
      children.push(c);
      return c;
    });
    return {
      ...sys,
      stop: async () => {
        await sys.stop().catch(() => {});
        await stopAll(children);
      },
    };
  } catch (err) {
    await stopAll(children);
    throw err;
  }
}

/** grpc-js: one server process (echo in the server, no worker) and the load process. */
export function startGrpc(): Promise<RunningSystem> {
  return starting(async (track) => {
    const srv = await forkTs("grpc server", here("peers/grpc-echo-server.ts"));
    track(srv.child);
    const address = String(srv.ready.address);
    const load = track((await forkTs("grpc load", here("load-client-process.ts"), ["grpc", JSON.stringify({ address })])).child);
    return {
      name: "grpc",
      serverSide: [srv.child],
      load,
      ffReceiver: srv.child,
      placement: "grpc-js server process (echo handler inside) | load process",
      stop: async () => {},
    };
  });
}

/** NATS: nats-server, three responder processes (echo1+ff1; echo2 ×2) and the load process. */
export function startNats(): Promise<RunningSystem> {
  return starting(async (track) => {
    const port = await freePort();
    const url = `nats://127.0.0.1:${port}`;
    const server = track(await spawnBinary("nats-server", "nats-server", ["-a", "127.0.0.1", "-p", String(port)], /Server is ready/));
    const responder = async (name: string, args: string[]) =>
      track((await forkTs(name, here("peers/nats-responder.ts"), [url, ...args])).child);
    const [r1, r2a, r2b] = await Promise.all([
      responder("nats responder 1", ["--reply", "echo1", "--count", "ff1"]),
      responder("nats responder 2a", ["--reply", "echo2"]),
      responder("nats responder 2b", ["--reply", "echo2"]),
    ]);
    const load = track((await forkTs("nats load", here("load-client-process.ts"), ["nats", JSON.stringify({ url })])).child);
    return {
      name: "nats",
      serverSide: [server, r1, r2a, r2b],
      load,
      ffReceiver: r1,
      placement: "nats-server | responder (echo1, ff1) | responder (echo2) | responder (echo2) | load process",
      stop: async () => {},
    };
  });
}

/** Moleculer: three responder brokers (echo1+ff1; echo2 ×2), each its own process, and the load broker's process. */
export function startMoleculer(): Promise<RunningSystem> {
  return starting(async (track) => {
    const ids = ["mol-r1", "mol-r2a", "mol-r2b", "mol-client"];
    const ports = await Promise.all(ids.map(() => freePort()));
    const urls = ids.map((id, i) => `127.0.0.1:${ports[i]}/${id}`);
    const node = async (id: string, services: string) =>
      track((await forkTs(`moleculer ${id}`, here("peers/moleculer-node.ts"), [id, urls.join(","), services])).child);
    const [r1, r2a, r2b] = await Promise.all([node("mol-r1", "echo1,ff1"), node("mol-r2a", "echo2"), node("mol-r2b", "echo2")]);
    const info = { nodeID: "mol-client", urls, responders: ids.slice(0, 3) };
    const load = track((await forkTs("moleculer load", here("load-client-process.ts"), ["moleculer", JSON.stringify(info)])).child);
    return {
      name: "moleculer",
      serverSide: [r1, r2a, r2b],
      load,
      ffReceiver: r1,
      placement: "broker (echo1, ff1) | broker (echo2) | broker (echo2) | load broker process; TCP transporter, static URLs",
      stop: async () => {},
    };
  });
}

/** The k4s objects the data-plane scenarios use: three external containers and two services. */
export const K4S_BENCH_MANIFEST = ["bench1-0", "bench2-0", "bench2-1"]
  .map(
    (name) =>
      `apiVersion: k4s/v1\nkind: Container\nmetadata: {name: ${name}}\nspec: {concurrency: 256, queueLimit: 10000}\n`,
  )
  .concat(
    [1, 2].map(
      (n) => `apiVersion: k4s/v1\nkind: Service\nmetadata: {name: bench-${n}}\nspec: {selector: "bench${n}-*", strategy: round-robin}\n`,
    ),
  )
  .join("---\n");

/** Waits until a k4s service lists `count` endpoints. */
async function waitForEndpoints(address: string, service: string, count: number, timeoutMs = 20_000): Promise<void> {
  const client = createClient({ address, name: `bench-setup-${process.pid}` });
  try {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    for (;;) {
      try {
        const svc = await client.get("Service", service);
        const eps = (svc as { status?: { endpoints: string[] } }).status?.endpoints ?? [];
        if (eps.length >= count) return;
        last = `endpoints [${eps.join(", ")}]`;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
      }
      if (Date.now() > deadline) throw new Error(`k4s: service ${service} has not ${count} ready endpoints within ${timeoutMs} ms (${last})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await client.close();
  }
}

/**
 * k4s: the server, three attached bench worker processes (bench1-0; bench2-0, bench2-1) and the
 * load process. `grpcJs`: the workers' and the load client's session streams on grpc-js's client
 * (K4S_WORKER_TRANSPORT=grpc-js) instead of the lean HTTP/2 one, the "k4s-grpcjs" system.
 */
export function startK4s(options: { stats?: boolean; grpcJs?: boolean } = {}): Promise<RunningSystem> {
  const stats = options.stats ?? true;
  const env = options.grpcJs ? { K4S_WORKER_TRANSPORT: "grpc-js" } : undefined;
  return starting(async (track) => {
    const srv = await forkTs("k4s server", here("k4s/k4s-server-process.ts"), stats ? [] : ["--no-stats"], { execArgv: k4sExecArgv });
    track(srv.child);
    const address = String(srv.ready.address);
    const setup = createClient({ address, name: `bench-setup-${process.pid}` });
    try {
      await setup.apply(K4S_BENCH_MANIFEST);
    } finally {
      await setup.close();
    }
    const worker = async (container: string) =>
      track((await forkTs(`k4s worker ${container}`, here("k4s/k4s-bench-worker.ts"), [address, container], { execArgv: k4sExecArgv, env })).child);
    const [w1, w2a, w2b] = await Promise.all([worker("bench1-0"), worker("bench2-0"), worker("bench2-1")]);
    await waitForEndpoints(address, "bench-1", 1);
    await waitForEndpoints(address, "bench-2", 2);
    const load = track(
      (await forkTs("k4s load", here("load-client-process.ts"), ["k4s", JSON.stringify({ address })], { execArgv: k4sExecArgv, env })).child,
    );
    // With stats on, a stats stream stays open as a dashboard or `k4s top` would keep it, so its
    // once-a-second snapshots are part of what is measured.
    const follower = stats ? followStats(address) : undefined;
    return {
      name: options.grpcJs ? "k4s-grpcjs" : stats ? "k4s" : "k4s-nostats",
      serverSide: [srv.child, w1, w2a, w2b],
      load,
      ffReceiver: w1,
      placement: `k4s server${stats ? " (stats on, one WatchStats stream open)" : " (stats off)"} | attached worker bench1-0 | attached worker bench2-0 | attached worker bench2-1 | load process (SDK client)${options.grpcJs ? " | sessions on grpc-js" : ""}`,
      stop: async () => follower?.stop(),
    };
  });
}

/** Keeps a WatchStats stream open from the harness until stopped. */
function followStats(address: string): { stop(): Promise<void> } {
  const client = createClient({ address, name: `bench-stats-${process.pid}` });
  const abort = new AbortController();
  const done = (async () => {
    for await (const _ of client.watchStats({ signal: abort.signal })) {
      // Read and dropped: the server's cost of sending it is what counts.
    }
  })().catch(() => {});
  return {
    async stop() {
      abort.abort();
      await done;
      await client.close();
    },
  };
}

/**
 * Path of the k4s command, for spawning a worker host. Profiled (BENCH_CPU_PROF), the unbundled
 * dist/cli/main.js runs instead of bin/k4s.js's minified bundle, so that a profile names functions
 * and files as in src/ (bench/lib/k4s-unbundled.js).
 */
export const K4S_BIN = fileURLToPath(new URL(process.env.BENCH_CPU_PROF ? "./k4s-unbundled.js" : "../../bin/k4s.js", import.meta.url));
