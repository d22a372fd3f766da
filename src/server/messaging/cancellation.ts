/**
 * How the router gives up on an envelope: cancelled by its caller, its caller gone, or its
 * deadline passed. Wherever the envelope is (waiting at a service, queued, in flight), it
 * leaves, and the caller is answered with a code that says where it was stuck.
 */
import { Code } from "@connectrpc/connect";
import type { Answers } from "./answers.js";
import type { DeadlineQueue } from "./deadline-queue.js";
import type { Deliveries } from "./deliveries.js";
import { isReady, type Directory } from "./directory.js";
import { EnvelopeState } from "./envelope.js";
import type { Letter } from "./mailbox.js";

/** Cancellation takes envelopes out of the router before they are settled. */
export interface Cancellation {
  /** Gives up on an envelope, answering code/message unless code is 0 (the caller is gone). */
  abandon(env: Letter, code: Code | 0, message: string): void;
  /** The envelope's deadline passed: DEADLINE_EXCEEDED (UNAVAILABLE while no endpoint was ready). */
  expire(env: Letter): void;
}

/** CancellationOptions are the parts of the router that cancellation works with. */
export interface CancellationOptions {
  directory: Directory;
  deadlines: DeadlineQueue<Letter>;
  answers: Answers;
  deliveries: Deliveries;
}

/** Creates the cancellation of a router. */
export function createCancellation(options: CancellationOptions): Cancellation {
  const { directory, deadlines, answers, deliveries } = options;

  function expire(env: Letter) {
    switch (env.state) {
      case EnvelopeState.Waiting:
        abandon(env, Code.Unavailable, `no endpoint of service "${env.service}" became ready before the deadline`);
        return;
      case EnvelopeState.Queued: {
        const m = env.mailbox!;
        // Never delivered: say why the container did not take it, which is what a user can fix.
        const why = isReady(m) ? "" : `; it is not ready: ${m.notReady}`;
        abandon(env, Code.DeadlineExceeded, `deadline exceeded waiting for container "${m.name}" to answer${why}`);
        return;
      }
      case EnvelopeState.InFlight:
        abandon(env, Code.DeadlineExceeded, `deadline exceeded waiting for container "${env.mailbox!.name}" to answer`);
        return;
      default:
        abandon(env, Code.DeadlineExceeded, "deadline exceeded");
    }
  }

  function abandon(env: Letter, code: Code | 0, message: string) {
    switch (env.state) {
      case EnvelopeState.Done:
        return;
      case EnvelopeState.Waiting:
        env.state = EnvelopeState.Done;
        directory.service(env.service)?.waiters.abandoned(env);
        break;
      case EnvelopeState.Queued:
        env.state = EnvelopeState.Done;
        env.mailbox!.inbox.abandoned(env);
        break;
      case EnvelopeState.InFlight:
        deliveries.withdraw(env, message || "caller gone");
        break;
      default:
        env.state = EnvelopeState.Done;
    }
    deadlines.remove(env);
    if (code !== 0) answers.fail(env, code, message, env.mailbox?.name);
    else answers.forget(env);
  }

  return { abandon, expire };
}
