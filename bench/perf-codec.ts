/**
 * Micro-benchmark of the WorkerService frame codec against protobuf-es: encodes and decodes a
 * batch of 64 Call frames (100-byte payloads) and a batch of 64 CallResult frames, and prints
 * the CPU time per frame of each. Run: node --import tsx bench/perf-codec.ts
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  decodeConnectRequest,
  decodeConnectResponse,
  encodeConnectRequest,
  encodeConnectResponse,
} from "../src/transport/frame-codec.js";
import { ConnectRequestSchema, ConnectResponseSchema } from "../src/gen/k4s/v1/worker_service_pb.js";

const payload = new Uint8Array(100).fill(7);
const req = create(ConnectRequestSchema, {
  frames: Array.from({ length: 64 }, (_, i) => ({
    frame: { case: "call" as const, value: { id: BigInt(1000 + i), target: "bench-1", data: payload, contentType: "application/octet-stream", expectsReply: true, timeoutMs: 30_000 } },
  })),
});
const res = create(ConnectResponseSchema, {
  frames: Array.from({ length: 64 }, (_, i) => ({
    frame: { case: "callResult" as const, value: { id: BigInt(1000 + i), data: payload, contentType: "application/octet-stream", container: "bench1-0" } },
  })),
});
const reqBytes = Buffer.from(toBinary(ConnectRequestSchema, req));
const resBytes = Buffer.from(toBinary(ConnectResponseSchema, res));

/** CODEC_ONLY=1 skips protobuf-es (for a CPU profile of the codec alone). */
const codecOnly = process.env.CODEC_ONLY === "1";

function time(label: string, fn: () => unknown): number {
  if (codecOnly && label.startsWith("protobuf-es")) return NaN;
  for (let i = 0; i < 2000; i++) fn();
  const n = 20_000;
  // CPU time, not wall time: the machine is shared, and a descheduled loop is not slower code.
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) fn();
  const c = process.cpuUsage(c0);
  const ns = ((c.user + c.system) * 1000) / n / 64;
  console.log(`${label.padEnd(44)} ${ns.toFixed(0).padStart(6)} ns/frame`);
  return ns;
}

const rows: [string, number, number][] = [];
rows.push(["encode ConnectRequest (64 calls)", time("protobuf-es toBinary ConnectRequest", () => toBinary(ConnectRequestSchema, req)), time("codec encodeConnectRequest", () => encodeConnectRequest(req))]);
rows.push(["decode ConnectRequest (64 calls)", time("protobuf-es fromBinary ConnectRequest", () => fromBinary(ConnectRequestSchema, reqBytes)), time("codec decodeConnectRequest", () => decodeConnectRequest(reqBytes))]);
rows.push(["encode ConnectResponse (64 results)", time("protobuf-es toBinary ConnectResponse", () => toBinary(ConnectResponseSchema, res)), time("codec encodeConnectResponse", () => encodeConnectResponse(res))]);
rows.push(["decode ConnectResponse (64 results)", time("protobuf-es fromBinary ConnectResponse", () => fromBinary(ConnectResponseSchema, resBytes)), time("codec decodeConnectResponse", () => decodeConnectResponse(resBytes))]);
console.log("\n| operation | protobuf-es ns/frame | codec ns/frame | speed-up |\n| --- | ---: | ---: | ---: |");
for (const [op, a, b] of rows) console.log(`| ${op} | ${a.toFixed(0)} | ${b.toFixed(0)} | ${(a / b).toFixed(1)}× |`);
