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
import { Envelope, EnvelopeState, type CallAnswer } from "../messaging/envelope.js";
import type { Letter } from "../messaging/mailbox.js";
import type { CallRouter, Router } from "../messaging/router.js";
import type { SendJournal } from "../messaging/send-journal.js";

/** RerouteOptions are the cluster router the messages go on through, and where losses are told. */
export interface RerouteOptions {
  router: Pick<CallRouter, "route">;
  journal?: SendJournal;
  events: EventRecorder;
  onError: (message: string, err?: unknown) => void;
}

/**
 * Why messages are routed anew, in the words of what is told when a send is lost:
 * "another server took the container over" (default) or "this server stopped".
 */
export type RerouteWhy = "taken over" | "stopping";

/** Creates what routes the messages of a container let go of anew; returns how many it routed. */
export function createRerouter(options: RerouteOptions): (container: string, envs: readonly Letter[], why?: RerouteWhy) => number {
  const { router, journal, events } = options;

  /** A copy of a send was refused everywhere it was tried: it is lost, and said so. */
  function lost(container: string, env: Letter, answer: CallAnswer, why: RerouteWhy) {
    const when = why === "stopping" ? "this server stopped" : "another server took the container over";
    events.record({
      type: "Warning",
      reason: "MessagesDropped",
      // What waited in a service's queue is told of the service.
      kind: env.service !== "" && env.service === container ? "Service" : "Container",
      name: container,
      message: `an accepted send queued here when ${when} could not be routed to another server: ${answer.message}`,
    });
    options.onError(`cluster: a send to "${container}" accepted here was lost when ${when} (${answer.message})`);
    // Its caller was answered long ago; the entry is left for no one.
    if (env.journalKey) journal?.remove(env.journalKey);
  }

  return (container, envs, why = "taken over") => {
    for (const env of envs) {
      const target: Target = env.service !== "" ? { kind: "service", name: env.service } : { kind: "container", name: container };
      routeOn(router, env, target, (answer) => {
        if (answer.code !== 0) return lost(container, env, answer, why);
        if (env.journalKey) journal?.remove(env.journalKey);
      });
    }
    return envs.length;
  };
}

/**
 * Routes a call taken out of a queue here on through the cluster router: one not answered yet (a
 * request, or a send that waited for an endpoint) as it is, its caller waiting for the answer; an
 * accepted send as a copy, whose answer `onCopy` is told.
 */
function routeOn(router: Pick<CallRouter, "route">, env: Letter, target: Target, onCopy: (answer: CallAnswer) => void): void {
  if (env.expectsReply || !env.answered) return router.route(env, target);
  router.route(new Envelope({ data: env.data, contentType: env.contentType, expectsReply: false, sender: env.sender, onAnswer: onCopy }), target);
}

/** SpillOptions are the cluster router, this server's own router, and its journal. */
export interface SpillOptions {
  router: Pick<CallRouter, "route">;
  local: Pick<Router, "route" | "takeWaiting">;
  journal?: SendJournal;
}

/**
 * Creates what sends the calls waiting in a service's queue here on through the cluster router
 * (call it when the service has a ready endpoint on another server). A call not answered yet (a
 * request, a send not accepted yet) goes as it is: its caller waits for the answer. A send
 * accepted here goes as a copy: its journal entry here is removed once a server accepted the
 * copy; a copy refused everywhere puts the send back in the service's queue here, where it
 * waits as before (an accepted send is never dropped for want of an endpoint).
 */
export function createSpiller(options: SpillOptions): (service: string) => number {
  const { router, local, journal } = options;
  return (service) => {
    const target: Target = { kind: "service", name: service };
    const envs = local.takeWaiting(service);
    for (const env of envs) {
      routeOn(router, env, target, (answer) => {
        if (answer.code === 0) {
          if (env.journalKey) journal?.remove(env.journalKey);
          return;
        }
        env.state = EnvelopeState.New;
        local.route(env, target);
      });
    }
    return envs.length;
  };
}
