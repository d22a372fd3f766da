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
