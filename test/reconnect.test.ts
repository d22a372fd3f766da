/**
 * Reconnecting to a server that went away: sessions back off exponentially (capped, with
 * jitter) and start over only after a connection that stayed up, and a worker host reports each
 * change of its connection once, not every attempt.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ConnectRequestSchema, ConnectResponseSchema, ServerFrameSchema, type ConnectRequest } from "../src/gen/k4s/v1/worker_service_pb.js";
import { openSession } from "../src/transport/session.js";
import { eventually, spawnK4s, startTestServer, type Proc } from "./helpers.js";

const procs: Proc[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.kill("SIGKILL")));
});

/**
 * A WorkerService that either welcomes every stream and ends it at once (a server that keeps
 * failing) or refuses every stream UNAVAILABLE (a server that is not ready), counting them.
 */
async function flakyServer(mode: "welcome-then-end" | "refuse", listenPort = 0): Promise<{ address: string; streams: number[]; stop(): void }> {
  const streams: number[] = [];
  const server = new grpc.Server();
  server.addService(
    {
      connect: {
        path: "/k4s.v1.WorkerService/Connect",
        requestStream: true,
        responseStream: true,
        requestSerialize: (m: ConnectRequest) => Buffer.from(toBinary(ConnectRequestSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(ConnectRequestSchema, b),
        responseSerialize: (m: unknown) => Buffer.from(toBinary(ConnectResponseSchema, m as never)),
        responseDeserialize: (b: Buffer) => fromBinary(ConnectResponseSchema, b),
      },
    },
    {
      connect(call: grpc.ServerDuplexStream<ConnectRequest, unknown>) {
        call.once("data", () => {
          streams.push(Date.now());
          if (mode === "refuse") {
            call.emit("error", { code: grpc.status.UNAVAILABLE, details: "not ready" });
            return;
          }
          const welcome = create(ServerFrameSchema, { frame: { case: "welcome", value: { sessionId: "s", name: "x", heartbeatIntervalMs: 1000 } } });
          call.write(create(ConnectResponseSchema, { frames: [welcome] }));
          call.end();
        });
        call.on("error", () => {});
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${listenPort}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { address: `127.0.0.1:${port}`, streams, stop: () => server.forceShutdown() };
}

test("a session whose server went away retries with capped exponential back-off, and reconnects when it is back", async () => {
  const server = await startTestServer();
  const port = server.port;
  const session = openSession({ address: server.address, hello: { role: "client", name: "backoff" }, reconnect: true });
  try {
    await session.ready;
    await server.stop();
    const refusing = await flakyServer("refuse", port);
    await new Promise((r) => setTimeout(r, 4000));
    refusing.stop();
    const times = refusing.streams;
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    // 100, 200, 400, 800 ms, then 1 s apart (±20%): about 6 attempts in 4 s, never a busy loop.
    assert.ok(times.length >= 3 && times.length <= 9, `${times.length} attempts in 4 s: gaps ${gaps.join(", ")} ms`);
    for (const gap of gaps) assert.ok(gap <= 1200 + 500, `no gap beyond the 1 s cap (+20% jitter, + slack): ${gaps.join(", ")}`);
    assert.ok(gaps.slice(-2).every((g) => g >= 600), `the gaps grew to the cap: ${gaps.join(", ")}`);
    const back = await startTestServer({ port });
    try {
      const t0 = Date.now();
      await eventually(() => session.connected, 10_000, "the session to reconnect");
      assert.ok(Date.now() - t0 <= 1200 + 1000, `reconnected ${Date.now() - t0} ms after the server was back`);
    } finally {
      await session.close();
      await back.stop();
    }
  } finally {
    await session.close();
  }
});

test("a session starts its back-off over only after a connection that stayed up", async () => {
  const flaky = await flakyServer("welcome-then-end");
  const session = openSession({ address: flaky.address, hello: { role: "client", name: "flaky" }, reconnect: true });
  try {
    await session.ready;
    await new Promise((r) => setTimeout(r, 3000));
    const gaps = flaky.streams.slice(1).map((t, i) => t - flaky.streams[i]!);
    // Each stream is welcomed and ends at once; retrying at the first step every time would
    // open about 30 streams in 3 s.
    assert.ok(flaky.streams.length <= 9, `${flaky.streams.length} streams in 3 s: gaps ${gaps.join(", ")} ms`);
  } finally {
    await session.close();
    flaky.stop();
  }
});

test("a worker host whose server is down says so once, not once per attempt, and once more when it is back", async () => {
  const server = await startTestServer({ heartbeatIntervalMs: 1000 });
  const port = server.port;
  const host = spawnK4s(["worker", "--server", server.address, "--name", "quiet"]);
  procs.push(host);
  await host.waitFor("host quiet serving", 30_000);
  await server.stop();
  await host.waitFor("lost the connection", 15_000);
  await new Promise((r) => setTimeout(r, 4000));
  const lines = host.stderr().split("\n").filter((l) => l.trim() !== "");
  assert.equal(lines.filter((l) => l.includes("lost the connection")).length, 1, lines.join("\n"));
  assert.ok(lines.length <= 3, `a few lines at most while the server is down:\n${lines.join("\n")}`);
  const back = await startTestServer({ port, heartbeatIntervalMs: 1000 });
  try {
    await host.waitFor("reconnected to", 15_000);
  } finally {
    await host.kill();
    await back.stop();
  }
});
