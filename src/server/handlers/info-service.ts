/** The InfoService handlers: which server this is (`k4s version`) and its cluster (`k4s get servers`). */
import { API_VERSION } from "../../api/kinds.js";
import type { ServerEntry } from "../cluster/cluster-member.js";
import type { InfoService } from "../../gen/k4s/v1/info_service_pb.js";
import type { ServiceHandlers } from "../grpc-adapter.js";
import { packageVersion } from "../package-version.js";

/** InfoServiceOptions say where the cluster's servers are read from. */
export interface InfoServiceOptions {
  /** The live servers of the cluster, with their sessions. */
  servers: () => Promise<ServerEntry[]>;
  /** This server's address in the list. */
  self: () => string;
}

/** Creates the InfoService implementation. */
export function createInfoService(options: InfoServiceOptions): ServiceHandlers<typeof InfoService> {
  return {
    async listServers() {
      const self = options.self();
      const servers = await options.servers();
      return {
        servers: servers.map((s) => ({
          address: s.advertise,
          leader: s.leader,
          startedAtMs: BigInt(s.startedAtMs),
          sessions: s.sessions.map(({ kind, name, sessionId }) => ({ kind, name, sessionId })),
          self: s.advertise === self,
        })),
      };
    },
    async getVersion() {
      return {
        version: packageVersion(),
        apiVersion: API_VERSION,
        runtimeVersion: process.version,
        platform: `${process.platform}/${process.arch}`,
      };
    },
  };
}
