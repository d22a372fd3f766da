/**
 * The plane of a standby server: it runs no controllers, but takes every session and the unary
 * messaging API like the leader does. Its clients' calls go to the leader over its peer link;
 * the streams of hosts and attached processes are relayed to the leader, where the containers'
 * lifecycle runs.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { ControlPlane } from "../control-plane.js";
import { createMessagingService } from "../handlers/messaging-service.js";
import { createWorkerService, type WorkerServiceOptions } from "../handlers/worker-service.js";
import type { LogStore } from "../log-store.js";
import { createLinkRegistry } from "../messaging/link-registry.js";
import type { Metrics } from "../metrics.js";
import { createPeerForwarder } from "./peer-forwarder.js";
import { createPeerRelay, type PeerRelayOptions } from "./peer-relay.js";

/** StandbyPlaneOptions are the peer link's and the client sessions' settings. */
export interface StandbyPlaneOptions extends PeerRelayOptions {
  logs: LogStore;
  metrics?: Metrics;
  /** Heartbeat interval announced to client sessions (default 5000 ms). */
  heartbeatIntervalMs?: number;
  /** Bytes a session may leave unread before it is cut off (default 64 MiB). */
  maxSessionBufferBytes?: number;
  /**
   * Proves the server a relayed stream names (see WorkerServiceOptions.provePeer): a standby
   * refuses every relayed stream, so a credential check is enough to tell a server (answered as
   * a standby answers, UNAVAILABLE) from a forger (PERMISSION_DENIED).
   */
  provePeer?: WorkerServiceOptions["provePeer"];
}

/** Creates the plane of a standby (nothing is accepted until start()). */
export function createStandbyPlane(options: StandbyPlaneOptions): ControlPlane {
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? 5000;
  const forwarder = createPeerForwarder(options);
  const relay = createPeerRelay(options);
  const links = createLinkRegistry({ heartbeatIntervalMs, metrics: options.metrics, maxSessionBufferBytes: options.maxSessionBufferBytes });
  // A caller that went away takes its requests back from the leader too.
  links.onLost((link) => {
    for (const env of [...link.calls.values()]) forwarder.abandon(env, 0, `caller session ${link.id} ended`);
  });
  return {
    load: { containers: () => [], services: () => [] },
    messagingService: createMessagingService({ router: forwarder, metrics: options.metrics }),
    workerService: createWorkerService({
      router: forwarder,
      refuseWorkers: options.standby,
      relay: relay.relay,
      provePeer: options.provePeer,
      links,
      logs: options.logs,
      heartbeatIntervalMs,
      ready: Promise.resolve(),
      metrics: options.metrics,
    }),
    async start() {
      links.start();
    },
    async stop() {
      links.stop(new ConnectError("this server stopped standing by", Code.Unavailable));
      relay.stop();
      await forwarder.stop("this server stopped standing by");
    },
  };
}
