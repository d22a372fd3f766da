/** The InfoService handlers: which server this is (`k4s version`). */
import { API_VERSION } from "../../api/kinds.js";
import type { InfoService } from "../../gen/k4s/v1/info_service_pb.js";
import type { ServiceHandlers } from "../grpc-adapter.js";
import { packageVersion } from "../package-version.js";

/** Creates the InfoService implementation. */
export function createInfoService(): ServiceHandlers<typeof InfoService> {
  return {
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
