/**
 * attach: serves one named container from this process (an external container, or a command
 * container spawned by a worker host), with the same context worker functions get in a host.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { hostname } from "node:os";
import { createContainerRuntime, toIncomingDelivery, type ContainerRuntime } from "./container-runtime.js";
import type { WorkerContext } from "./worker-context.js";
import type { WorkerDefinition } from "./define-worker.js";
import type { TlsOptions } from "../../transport/channel.js";
import { ENV, tlsFromEnvironment } from "../../transport/environment.js";
import { openSession, type Session } from "../../transport/session.js";

/**
 * AttachWorkerOptions configure attach; what is omitted comes from the environment a worker host
 * gives the processes it spawns (K4S_ADDRESS, K4S_TOKEN, K4S_TLS*, K4S_CONTAINER, K4S_ATTACH_TOKEN).
 */
export interface AttachWorkerOptions<P> {
  /** Server host:port (default env K4S_ADDRESS). */
  address?: string;
  /** Container to serve (default env K4S_CONTAINER). */
  container?: string;
  /** The server's bearer token, when it requires one (default env K4S_TOKEN). */
  token?: string;
  /**
   * The container's attach credential (default env K4S_ATTACH_TOKEN): what a worker host hands
   * the command it spawns. An external container (no module, no command) needs none.
   */
  attachToken?: string;
  /** Connect over TLS (default: env K4S_TLS=1 or K4S_TLS_CA, trusting the PEM in K4S_TLS_CA). */
  tls?: boolean | TlsOptions;
  /** Name shown as the container's host (default hostname/pid). */
  host?: string;
  /** The worker to run. */
  worker: WorkerDefinition<P>;
  /** ctx.params (default {}). */
  params?: P;
  /** Handlers ctx.handle runs at once (default 64: the server enforces spec.concurrency). */
  concurrency?: number;
  /** Re-attach after a server restart (default true). */
  reconnect?: boolean;
  /**
   * Set process.exitCode = 1 when the worker fails or the attach is refused, so a spawned
   * command's container ends Failed rather than Succeeded (default: true when the container
   * came from K4S_CONTAINER, i.e. this process was spawned by a worker host).
   */
  failProcess?: boolean;
}

/** Attached is a worker serving an attached container. */
export interface Attached {
  /** Resolves once the server accepted the attach. */
  readonly ready: Promise<void>;
  /** Resolves when the worker function returned; rejects with its error or the session's. */
  readonly done: Promise<void>;
  readonly ctx: WorkerContext<unknown>;
  /** Ends the messages, waits for the worker (graceMs, default 5000) and detaches. */
  stop(graceMs?: number): Promise<void>;
}

const EMPTY = new Uint8Array(0);

/** Attaches this process to a container and runs worker on it until it returns or stop(). */
export function attach<P = Record<string, unknown>>(options: AttachWorkerOptions<P>): Attached {
  const address = options.address ?? process.env[ENV.address];
  const container = options.container ?? process.env[ENV.container];
  if (!address) throw new ConnectError("attach: no server address (option address or env K4S_ADDRESS)", Code.InvalidArgument);
  if (!container) throw new ConnectError("attach: no container (option container or env K4S_CONTAINER)", Code.InvalidArgument);
  let runtime!: ContainerRuntime<P>;
  const session: Session = openSession({
    address,
    token: options.token ?? process.env[ENV.token],
    tls: options.tls ?? tlsFromEnvironment(),
    reconnect: options.reconnect ?? true,
    attach: {
      container,
      token: options.attachToken ?? process.env[ENV.attachToken] ?? "",
      host: options.host ?? `${hostname()}/${process.pid}`,
    },
    onDisconnect: (err) => runtime.abandonDeliveries(`connection to the server lost: ${err.rawMessage}`),
    onFrame: (frame) => {
      const f = frame.frame;
      if (f.case === "delivery") {
        runtime.deliver(toIncomingDelivery(f.value));
      } else if (f.case === "cancelDelivery") {
        runtime.cancel(Number(f.value.id), f.value.reason);
      } else if (f.case === "stop") {
        runtime.stop(f.value.graceMs);
      }
    },
  });
  runtime = createContainerRuntime<P>({
    name: container,
    params: options.params ?? ({} as P),
    concurrency: options.concurrency ?? 64,
    link: {
      call: (opts) => session.call(opts),
      result: (id, payload, error) => session.result(id, payload?.data ?? EMPTY, payload?.contentType ?? "", error),
      log: (stream, lines) => session.send({ case: "log", value: { container, lines, stream } }),
    },
  });
  // A session that ends for good (refused attach, fatal error) ends the worker too.
  session.done.catch(() => runtime.stop(0));
  const done = (async () => {
    await session.ready;
    const outcome = await runtime.run(options.worker.run);
    await session.close();
    if (!outcome.ok) throw outcome.error;
    await session.done;
  })();
  const failProcess = options.failProcess ?? (options.container === undefined && process.env[ENV.container] !== undefined);
  done.catch((err) => {
    if (failProcess) {
      process.exitCode = 1;
      console.error(`k4s attach ${container}: ${err instanceof ConnectError ? err.rawMessage : String(err)}`);
    }
  });
  return {
    ready: session.ready,
    done,
    ctx: runtime.ctx as WorkerContext<unknown>,
    async stop(graceMs = 5000) {
      runtime.stop(graceMs);
      await Promise.race([done.catch(() => {}), session.done.catch(() => {})]);
      await session.close();
    },
  };
}
