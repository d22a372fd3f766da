/** The StatsService handlers: the collector's snapshots, once or as a stream. */
import type { StatsService } from "../../gen/k4s/v1/stats_service_pb.js";
import type { CallContext, ServiceHandlers } from "../grpc-adapter.js";
import type { StatsCollector } from "./stats-collector.js";

/** Creates the StatsService handlers over a collector. */
export function createStatsService(collector: StatsCollector): ServiceHandlers<typeof StatsService> {
  return {
    async getStats() {
      return { stats: collector.latest() };
    },
    async *watchStats(_req, ctx: CallContext) {
      for await (const stats of collector.watch(ctx.signal)) yield { stats };
    },
  };
}
