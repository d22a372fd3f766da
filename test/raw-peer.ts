/**
 * A raw WorkerService peer that speaks frames directly, with no SDK in between: the protocol
 * tests use it to play a worker host, an attached process or a client, and it is handy for
 * poking a server by hand. Not for production use: it keeps every received frame.
 */
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  ConnectRequestSchema,
  ConnectResponseSchema,
  WorkerFrameSchema,
  WorkerService,
  type ConnectRequest,
  type ServerFrame,
  type WorkerFrame,
} from "../src/gen/k4s/v1/worker_service_pb.js";

/** A frame a peer sends, as an init shape of WorkerFrame's oneof. */
export type WorkerFrameInit = MessageInitShape<typeof WorkerFrameSchema>["frame"];

type Case = NonNullable<ServerFrame["frame"]["case"]>;
type ValueOf<C extends Case> = Extract<ServerFrame["frame"], { case: C }>["value"];

/** RawPeer is one open Connect stream. */
export interface RawPeer {
  /** Every frame received so far, in order. */
  readonly received: ServerFrame[];
  /** Frames per ConnectResponse received, in order (to see batching). */
  readonly batches: number[];
  /** Sends frames as one ConnectRequest. */
  send(...frames: WorkerFrameInit[]): void;
  /**
   * Resolves with the next not yet taken frame of a kind (optionally matching `where`),
   * waiting up to timeoutMs; frames of other kinds stay available.
   */
  next<C extends Case>(kind: C, where?: (v: ValueOf<C>) => boolean, timeoutMs?: number): Promise<ValueOf<C>>;
  /** Frames of a kind received and not yet taken, without waiting. */
  pending<C extends Case>(kind: C): ValueOf<C>[];
  /** Resolves when the stream ended: undefined when cleanly, else the error status. */
  readonly ended: Promise<ConnectError | undefined>;
  /** Ends the request side (a clean goodbye). */
  end(): void;
  /** Cancels the stream (as a crashed process would). */
  cancel(): void;
}

/** Opens a Connect stream to a server at host:port (with these request headers) and sends `first` as its first frame. */
export function openRawPeer(address: string, first: WorkerFrameInit, headers?: Record<string, string>): RawPeer {
  const transport = createGrpcTransport({ baseUrl: `http://${address}` });
  const client = createClient(WorkerService, transport);
  const abort = new AbortController();
  const queue: ConnectRequest[] = [];
  let wake: (() => void) | undefined;
  let finished = false;
  async function* requests(): AsyncGenerator<ConnectRequest> {
    for (;;) {
      while (queue.length > 0) yield queue.shift()!;
      if (finished) return;
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
  }
  const received: ServerFrame[] = [];
  const batches: number[] = [];
  const taken = new Set<ServerFrame>();
  const waiters = new Set<() => void>();
  const notify = () => waiters.forEach((w) => w());
  let endedWith: ConnectError | undefined | null = null;

  const push = (frames: WorkerFrameInit[]) => {
    queue.push(create(ConnectRequestSchema, { frames: frames.map((frame) => create(WorkerFrameSchema, { frame })) as WorkerFrame[] }));
    wake?.();
  };
  push([first]);

  const ended = (async () => {
    try {
      for await (const res of client.connect(requests(), { signal: abort.signal, headers })) {
        received.push(...res.frames);
        batches.push(res.frames.length);
        notify();
      }
      endedWith = undefined;
    } catch (err) {
      endedWith = ConnectError.from(err);
    }
    finished = true;
    wake?.();
    notify();
    return endedWith ?? undefined;
  })();

  const find = <C extends Case>(kind: C, where?: (v: ValueOf<C>) => boolean): ServerFrame | undefined =>
    received.find((f) => !taken.has(f) && f.frame.case === kind && (!where || where(f.frame.value as ValueOf<C>)));

  return {
    received,
    batches,
    send(...frames) {
      push(frames);
    },
    next(kind, where, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const f = find(kind, where);
          if (f) {
            taken.add(f);
            done();
            resolve(f.frame.value as never);
          } else if (endedWith !== null) {
            done();
            reject(new Error(`stream ended (${endedWith?.message ?? "cleanly"}) before a ${kind} frame arrived`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new ConnectError(`no ${kind} frame within ${timeoutMs} ms; received: ${received.map((f) => f.frame.case).join(", ")}`, Code.DeadlineExceeded));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    pending(kind) {
      return received.filter((f) => !taken.has(f) && f.frame.case === kind).map((f) => f.frame.value as never);
    },
    ended,
    end() {
      finished = true;
      wake?.();
    },
    cancel() {
      abort.abort();
    },
  };
}

/** NonReadingPeer is a Connect stream whose responses nobody reads until told to. */
export interface NonReadingPeer {
  /** Sends frames as one ConnectRequest. */
  send(...frames: WorkerFrameInit[]): void;
  /**
   * Starts reading: resolves once the stream ended, with the frames read and its status (code 0:
   * ended cleanly); rejects when it has not ended within timeoutMs.
   */
  readToEnd(timeoutMs?: number): Promise<{ frames: number; code: number; details: string }>;
  /** Cancels the stream. */
  cancel(): void;
}

/**
 * Opens a Connect stream (grpc-js, so HTTP/2 flow control applies) that sends `first` and then
 * reads nothing until readToEnd(): a peer that stopped reading its stream, as a stuck process
 * would. It still sends a heartbeat every heartbeatMs, so it is not lost for silence.
 */
export function openNonReadingPeer(address: string, first: WorkerFrameInit, heartbeatMs = 500): NonReadingPeer {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const call = client.makeBidiStreamRequest(
    "/k4s.v1.WorkerService/Connect",
    (req: ConnectRequest) => Buffer.from(toBinary(ConnectRequestSchema, req)),
    (buf: Buffer) => fromBinary(ConnectResponseSchema, buf),
  );
  let frames = 0;
  let status: { code: number; details: string } | undefined;
  const statusKnown = new Promise<void>((resolve) => {
    call.on("status", (s: grpc.StatusObject) => {
      status ??= { code: s.code, details: s.details };
      resolve();
    });
    call.on("error", (e: grpc.ServiceError) => {
      status ??= { code: e.code, details: e.details };
      resolve();
    });
  });
  const send = (...list: WorkerFrameInit[]) => {
    if (!status) call.write(create(ConnectRequestSchema, { frames: list.map((frame) => create(WorkerFrameSchema, { frame })) as WorkerFrame[] }));
  };
  send(first);
  const beat = setInterval(() => send({ case: "heartbeat", value: {} }), heartbeatMs);
  return {
    send,
    async readToEnd(timeoutMs = 60_000) {
      call.on("data", (res: { frames: unknown[] }) => (frames += res.frames.length));
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the stream did not end within ${timeoutMs} ms (${frames} frames read)`)), timeoutMs);
      });
      await Promise.race([statusKnown, late]).finally(() => clearTimeout(timer));
      clearInterval(beat);
      client.close();
      return { frames, ...status! };
    },
    cancel() {
      clearInterval(beat);
      call.cancel();
      client.close();
    },
  };
}

/** AnsweringPeer is a raw worker that answers every delivery it gets with a payload of a set size. */
export interface AnsweringPeer {
  /** How many deliveries it has answered so far. */
  readonly answered: number;
  /** Cancels its stream and resolves once its answering loop has ended. */
  close(): Promise<void>;
}

/**
 * Attaches a raw worker to `container` (as host `host`) that answers every delivery with
 * `answerBytes` zero bytes, for as long as its stream lasts: the far end of a caller that sends
 * many requests whose answers are large.
 */
export function openAnsweringPeer(address: string, container: string, host: string, answerBytes: number): AnsweringPeer {
  const peer = openRawPeer(address, { case: "attach", value: { container, host } });
  let answered = 0;
  const answering = (async () => {
    for (;;) {
      const d = await peer.next("delivery", undefined, 300_000).catch(() => undefined);
      if (!d) return;
      peer.send({ case: "result", value: { id: d.id, data: new Uint8Array(answerBytes) } });
      answered++;
    }
  })();
  return {
    get answered() {
      return answered;
    },
    async close() {
      peer.cancel();
      await answering;
    },
  };
}
