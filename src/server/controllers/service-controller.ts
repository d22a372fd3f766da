/** The Service controller: keeps status.endpoints, the ready containers a service routes to. */
import type { EventRecorder } from "../events.js";
import type { ResourceStore } from "../resource-store.js";
import type { Controller } from "./controller.js";

/** Creates the Service controller. */
export function createServiceController(deps: { resources: ResourceStore; events: EventRecorder }): Controller {
  void deps;
  throw new Error("createServiceController: not implemented yet");
}
