/**
 * The ResourceService handlers: the API over the ResourceStore, with manifest parsing and
 * validation for Apply.
 */
import type { ResourceService } from "../../gen/k4s/v1/resource_service_pb.js";
import type { ServiceImpl } from "../grpc-adapter.js";
import type { ResourceStore } from "../resource-store.js";

/** Creates the ResourceService implementation. */
export function createResourceServiceImpl(deps: { resources: ResourceStore }): ServiceImpl<typeof ResourceService> {
  void deps;
  throw new Error("createResourceServiceImpl: not implemented yet");
}
