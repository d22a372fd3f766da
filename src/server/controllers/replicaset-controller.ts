/** The ReplicaSet controller: keeps N owned replicas named <replicaset>-<ordinal>. */
import type { EventRecorder } from "../events.js";
import type { ResourceStore } from "../resource-store.js";
import type { Controller } from "./controller.js";

/** Creates the ReplicaSet controller. */
export function createReplicaSetController(deps: { resources: ResourceStore; events: EventRecorder }): Controller {
  void deps;
  throw new Error("createReplicaSetController: not implemented yet");
}
