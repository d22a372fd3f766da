/**
 * What a server of a cluster does with the messages of a container it let go of (its host's
 * session moved to another server, or ended and another server holds the container now): what
 * waited in its inbox here goes on through the cluster router, to the server that holds the
 * container now, instead of waiting here for a worker that will not come back.
 *
 * A request waiting here was never delivered: it is routed again as it is (its caller still waits
 * for the reply; one its worker had in hand was failed UNAVAILABLE when it was released, and is
 * never sent again). A send was answered when it was accepted here: a copy of it is routed, and
 * what becomes of the copy is told here (at least once: the worker may have had it in hand
 * before). One journaled against a service is removed from this server's journal once another
 * server accepted its copy; one journaled against the container is not routed at all: the server
 * holding the container reads it back from the journal (see MessagingPlane.letGo).
 */
import type { Target } from "../../api/target.js";
import type { EventRecorder } from "../event-recorder.js";
import { Envelope, type CallAnswer } from "../messaging/envelope.js";
import type { Letter } from "../messaging/mailbox.js";
import type { CallRouter } from "../messaging/router.js";
import type { SendJournal } from "../messaging/send-journal.js";

/** RerouteOptions are the cluster router the messages go on through, and where losses are told. */
export interface RerouteOptions {
  router: Pick<CallRouter, "route">;
  journal?: SendJournal;
  events: EventRecorder;
  onError: (message: string, err?: unknown) => void;
}

/** Creates what routes the messages of a container let go of anew; returns how many it routed. */
export function createRerouter(options: RerouteOptions): (container: string, envs: readonly Letter[]) => number {
  const { router, journal, events } = options;

  /** A copy of a send was refused everywhere it was tried: it is lost, and said so. */
  function lost(container: string, env: Letter, answer: CallAnswer) {
    events.record({
      type: "Warning",
      reason: "MessagesDropped",
      kind: "Container",
      name: container,
      message: `an accepted send queued here when another server took the container over could not be routed there: ${answer.message}`,
    });
    options.onError(`cluster: a send to container "${container}" accepted here was lost when another server took the container over (${answer.message})`);
    // Its caller was answered long ago; the entry is left for no one.
    if (env.journalKey) journal?.remove(env.journalKey);
  }

  return (container, envs) => {
    for (const env of envs) {
      const target: Target = env.service !== "" ? { kind: "service", name: env.service } : { kind: "container", name: container };
      if (env.expectsReply) {
        router.route(env, target);
        continue;
      }
      const copy: Letter = new Envelope({
        data: env.data,
        contentType: env.contentType,
        expectsReply: false,
        sender: env.sender,
        onAnswer(answer) {
          if (answer.code !== 0) return lost(container, env, answer);
          if (env.journalKey) journal?.remove(env.journalKey);
        },
      });
      router.route(copy, target);
    }
    return envs.length;
  };
}
