/**
 * The interface every system under test offers the load process, so one driver measures k4s and
 * its peers the same way.
 */

/** Target names the receivers every system sets up. */
export type RequestTarget = "rr1" | "rr2";

/** BenchClient is a connected load-side client of one system. */
export interface BenchClient {
  /** Which system ("k4s", "grpc", "nats", "moleculer"). */
  readonly system: string;
  /** Whether the system has a receiver group of two replicas. */
  readonly hasTwoReplicas: boolean;
  /** Whether the system offers a fire-and-forget path. */
  readonly hasFireAndForget: boolean;
  /** Makes a payload of `bytes` bytes in the form this system carries best. */
  payload(bytes: number): unknown;
  /** One request/response to the receiver group of 1 (rr1) or 2 (rr2) replicas; resolves on the reply. */
  request(target: RequestTarget, payload: unknown): Promise<unknown>;
  /**
   * One fire-and-forget message to the single receiver; resolves when the system accepted it (or,
   * for systems without acceptance, when it is safe to go on: see each client).
   */
  send(payload: unknown): Promise<unknown>;
  close(): Promise<void>;
}

/** Makes a payload of n bytes (a fixed pattern; no system here compresses). */
export function bytesPayload(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = 97 + (i % 26);
  return b;
}

/**
 * Messages a fire-and-forget sender sends between two confirmations, for every system alike: the
 * sender keeps no more unconfirmed than this (plus one per sending loop) and then waits until the
 * system confirms everything sent so far.
 */
export const CONFIRM_EVERY = 256;

/**
 * A fire-and-forget sender with the same rhythm for every system: `sendOne` starts one message
 * (returning the promise of its acknowledgement when the system gives one), and after every
 * CONFIRM_EVERY messages all sending loops wait together for the acknowledgements of that window
 * and for `confirm()` (a system without acknowledgements confirms with a round trip that
 * travels behind the messages). A failed acknowledgement fails the send that waited for it.
 */
export function confirmedSender(sendOne: (payload: unknown) => Promise<unknown> | void, confirm: () => Promise<unknown> = async () => {}): (payload: unknown) => Promise<void> {
  let sent = 0;
  let acks: Promise<unknown>[] = [];
  let failure: unknown;
  let confirming: Promise<void> | undefined;
  const confirmWindow = async () => {
    const window = acks;
    acks = [];
    try {
      await Promise.all([...window, confirm()]);
    } finally {
      confirming = undefined;
    }
  };
  return async (payload) => {
    const ack = sendOne(payload);
    // Caught at once (an acknowledgement may fail before the window is confirmed), reported at the confirmation.
    if (ack) acks.push(ack.then(undefined, (err: unknown) => void (failure ??= err)));
    if (++sent % CONFIRM_EVERY !== 0 && !confirming) return;
    confirming ??= confirmWindow();
    await confirming;
    if (failure !== undefined) {
      const err = failure;
      failure = undefined;
      throw err;
    }
  };
}
