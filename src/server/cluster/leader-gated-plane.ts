/**
 * The control plane of a server in a cluster: a fresh plane (informer, controllers, scheduler,
 * messaging) runs while this server leads and is stopped when it stops leading. Meanwhile a
 * standby plane serves the messaging and worker APIs: it routes its clients' calls to the
 * leader and answers hosts UNAVAILABLE naming the leader, so that they go where the
 * containers' lifecycle runs.
 */
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { MessagingService } from "../../gen/k4s/v1/messaging_service_pb.js";
import { WorkerService } from "../../gen/k4s/v1/worker_service_pb.js";
import type { ControlPlane } from "../control-plane.js";
import type { ServiceHandlers } from "../grpc-adapter.js";
import type { StatsSource } from "../stats/stats-collector.js";

/** LeaderGatedPlaneOptions say how to make a plane and what a standby answers. */
export interface LeaderGatedPlaneOptions {
  /** Makes a new, unstarted control plane (one per term of leadership). */
  make: () => ControlPlane;
  /** The error a standby answers with (UNAVAILABLE, naming the leader). */
  standby: () => ConnectError;
  /**
   * Makes the plane of a standby term (none: the messaging and worker APIs answer every call
   * the standby error).
   */
  makeStandby?: () => ControlPlane;
  onError: (message: string, err?: unknown) => void;
}

/** LeaderGatedPlane is a ControlPlane that runs only while told it leads. */
export interface LeaderGatedPlane extends ControlPlane {
  /** This server leads now: starts a fresh plane (in order with other changes). */
  lead(): Promise<void>;
  /** This server stopped leading: stops the plane (in order with other changes). */
  follow(): Promise<void>;
  /** Whether a plane runs now. */
  readonly running: boolean;
}

/** Handlers of a service that call the running plane's, or refuse as the standby does. */
function delegate<S extends DescService>(service: S, current: () => ServiceHandlers<S> | undefined, refuse: () => ConnectError): ServiceHandlers<S> {
  const handlers: Record<string, (...args: unknown[]) => unknown> = {};
  for (const m of service.methods) {
    const streams = m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming";
    handlers[m.localName] = (...args: unknown[]) => {
      const impl = current() as Record<string, (...a: unknown[]) => unknown> | undefined;
      if (impl) return impl[m.localName]!(...args);
      const err = refuse();
      return streams
        ? (async function* () {
            throw err;
          })()
        : Promise.reject(err);
    };
  }
  return handlers as ServiceHandlers<S>;
}

/** Creates a plane that runs while its server leads, and the standby plane while it does not. */
export function createLeaderGatedPlane(options: LeaderGatedPlaneOptions): LeaderGatedPlane {
  let plane: ControlPlane | undefined;
  let leading = false;
  let active: ControlPlane | undefined;
  let changes: Promise<void> = Promise.resolve();
  const inOrder = (step: () => Promise<void>) => (changes = changes.then(step).catch((err: unknown) => options.onError("changing leadership failed", err)));

  /** Stops the running plane, then starts the one of the new term (none: stopping for good). */
  const become = (next: { leads: boolean; make: (() => ControlPlane) | undefined } | undefined) =>
    inOrder(async () => {
      if (next && plane && leading === next.leads) return;
      const p = plane;
      plane = active = undefined;
      await p?.stop();
      if (!next?.make) return;
      const n = next.make();
      plane = n;
      leading = next.leads;
      await n.start();
      if (plane === n) active = n;
    });
  const load: StatsSource = {
    containers: () => active?.load.containers() ?? [],
    services: () => active?.load.services() ?? [],
  };
  const follow = () => become({ leads: false, make: options.makeStandby });
  return {
    load,
    messagingService: delegate(MessagingService, () => active?.messagingService, options.standby),
    workerService: delegate(WorkerService, () => active?.workerService, options.standby),
    get running() {
      return active !== undefined && leading;
    },
    lead: () => become({ leads: true, make: options.make }),
    follow,
    // A server stands by until leadership comes.
    start: follow,
    stop: () => become(undefined),
  };
}

/** The error of a standby: UNAVAILABLE, so callers retry, naming where the leader is. */
export function standbyError(self: string, leader: string | undefined): ConnectError {
  const where = leader && leader !== self ? `the leader is ${leader}` : "no leader is elected yet";
  return new ConnectError(`k4s server ${self} is standing by (${where}): hosts and attached processes connect to the leader`, Code.Unavailable);
}
