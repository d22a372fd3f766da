/**
 * The dashboard's HTTP port without a browser: the built page, the same service
 * implementations over the Connect protocol as over gRPC (connect-node's client against one,
 * connect-node's gRPC client against the other), the token, loopback-only answers without a
 * token, HTTPS with the server's certificate, and the CLI flags.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { createServer as createNetServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient as createConnectClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { ResourceService } from "../src/gen/k4s/v1/resource_service_pb.js";
import { StatsService } from "../src/gen/k4s/v1/stats_service_pb.js";
import type { K4sServer } from "../src/server/server.js";
import { eventually, K4S_BIN, runK4s, selfSignedCertificate, spawnK4s, startTestServer } from "./helpers.js";

const MANIFEST = `
kind: Container
metadata: {name: echo-a, labels: {app: echo}}
spec: {module: workers, function: echo_worker}
`;

let assets: string;
let server: K4sServer;

before(async () => {
  // A stand-in page: the serving is under test here, the real page in dashboard.test.ts.
  assets = mkdtempSync(join(tmpdir(), "k4s-assets-"));
  writeFileSync(join(assets, "index.html"), "<!doctype html><title>k4s</title><script src=/app.js></script>");
  writeFileSync(join(assets, "app.js"), "console.log('k4s')");
  server = await startTestServer({ dashboard: { port: 0, assetsDir: assets } });
});

after(async () => {
  await server.stop();
});

/** A GET with a chosen Host header (fetch does not let one set it). */
function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    httpRequest(url, { headers }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    })
      .on("error", reject)
      .end();
  });
}

test("the dashboard port serves the page with a strict content security policy, and 404 for the rest", async () => {
  const url = server.dashboardUrl!;
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const index = await get(url);
  assert.equal(index.status, 200);
  assert.match(String(index.headers["content-type"]), /text\/html/);
  assert.match(String(index.headers["content-security-policy"]), /default-src 'self'/);
  assert.match(index.body, /<title>k4s<\/title>/);
  const script = await get(`${url}app.js`);
  assert.equal(script.status, 200);
  assert.match(String(script.headers["content-type"]), /text\/javascript/);
  assert.equal((await get(`${url}../package.json`)).status, 404);
  assert.equal((await get(`${url}nope.js`)).status, 404);
});

test("the Connect protocol reaches the same implementations as gRPC", async () => {
  const web = createConnectClient(ResourceService, createConnectTransport({ baseUrl: server.dashboardUrl!, httpVersion: "1.1" }));
  const grpc = createConnectClient(ResourceService, createGrpcTransport({ baseUrl: `http://${server.address}` }));
  const applied = await web.apply({ manifest: MANIFEST });
  assert.deepEqual(
    applied.results.map((r) => `${r.kind}/${r.name} ${r.action}`),
    ["Container/echo-a created"],
  );
  // The container controller writes the new container's status meanwhile: compare two reads
  // of the same version (read again while a write came between them).
  let viaGrpc = await grpc.list({ kind: "Container" });
  let viaWeb = await web.list({ kind: "Container" });
  for (let i = 0; i < 20 && viaWeb.resourceVersion !== viaGrpc.resourceVersion; i++) {
    viaGrpc = await grpc.list({ kind: "Container" });
    viaWeb = await web.list({ kind: "Container" });
  }
  assert.deepEqual(viaWeb, viaGrpc);
  // Errors keep their code and message.
  await assert.rejects(web.get({ kind: "Container", name: "missing" }), (e: ConnectError) => {
    assert.equal(e.code, Code.NotFound);
    assert.match(e.rawMessage, /Container "missing" not found/);
    return true;
  });
  // A watch streams over HTTP/1.1: the listing, then the bookmark (a response with only a version).
  const abort = new AbortController();
  const types: string[] = [];
  for await (const res of web.watch({ kind: "Container" }, { signal: abort.signal })) {
    types.push(...res.events.map((e) => e.type));
    if (res.resourceVersion) {
      types.push(res.events.length === 0 ? "BOOKMARK" : "REVISION");
      break;
    }
  }
  abort.abort();
  assert.deepEqual(types, ["ADDED", "BOOKMARK"]);
  const stats = createConnectClient(StatsService, createConnectTransport({ baseUrl: server.dashboardUrl!, httpVersion: "1.1" }));
  const snap = await stats.getStats({});
  assert.deepEqual(
    snap.stats!.containers.map((c) => c.name),
    ["echo-a"],
  );
  // Every call is counted in the server's metrics like a gRPC one.
  const text = await server.metrics.registry.metrics();
  assert.match(text, /k4s_rpcs_total\{method="ResourceService\/Apply",code="OK"\} 1/);
});

test("without a token the dashboard answers only loopback hosts and origins (no DNS rebinding, no cross-site calls)", async () => {
  const url = server.dashboardUrl!;
  assert.equal((await get(url, { host: "evil.example:80" })).status, 403);
  assert.equal((await get(url, { host: "localhost" })).status, 200);
  assert.equal((await get(url, { origin: "http://evil.example" })).status, 403);
  assert.equal((await get(url, { origin: "http://127.0.0.1:1234" })).status, 200);
  await assert.rejects(
    startTestServer({ dashboard: { host: "0.0.0.0", port: 0, assetsDir: assets } }),
    /refusing to serve the dashboard on 0.0.0.0 without a token/,
  );
});

test("with a token every API call needs it; the page itself loads without it", async () => {
  const token = "t0ken";
  const s = await startTestServer({ token, dashboard: { port: 0, assetsDir: assets } });
  try {
    assert.equal((await get(s.dashboardUrl!)).status, 200);
    const client = (headers: Record<string, string>) =>
      createConnectClient(
        ResourceService,
        createConnectTransport({
          baseUrl: s.dashboardUrl!,
          httpVersion: "1.1",
          interceptors: [(next) => (req) => (Object.entries(headers).forEach(([k, v]) => req.header.set(k, v)), next(req))],
        }),
      );
    await assert.rejects(client({}).list({ kind: "Container" }), (e: ConnectError) => e.code === Code.Unauthenticated && /missing bearer token/.test(e.rawMessage));
    await assert.rejects(client({ authorization: "Bearer wrong" }).list({ kind: "Container" }), (e: ConnectError) => e.code === Code.Unauthenticated);
    assert.deepEqual((await client({ authorization: `Bearer ${token}` }).list({ kind: "Container" })).items, []);
    // With a token, any Host may reach it (a name in front of a proxy, a LAN address).
    assert.equal((await get(s.dashboardUrl!, { host: "k4s.example" })).status, 200);
  } finally {
    await s.stop();
  }
});

test("with the server's certificate the dashboard is HTTPS (HTTP/2 and HTTP/1.1)", async () => {
  const { cert, key } = selfSignedCertificate();
  const s = await startTestServer({ tls: { cert, key }, dashboard: { port: 0, assetsDir: assets } });
  try {
    assert.match(s.dashboardUrl!, /^https:\/\/127\.0\.0\.1:\d+\/$/);
    for (const httpVersion of ["2", "1.1"] as const) {
      const transport = createConnectTransport({ baseUrl: s.dashboardUrl!, httpVersion, nodeOptions: { ca: cert } });
      const res = await createConnectClient(ResourceService, transport).list({ kind: "Service" });
      assert.deepEqual(res.items, [], `over HTTP/${httpVersion}`);
    }
  } finally {
    await s.stop();
  }
});

test("k4s dashboard prints the address with the token in its fragment, after checking the page answers", async () => {
  const url = server.dashboardUrl!;
  const plain = await runK4s(["dashboard", "--url", url, "--no-open", "--server", server.address]);
  assert.equal(plain.code, 0, plain.stderr);
  assert.equal(plain.stdout, `${url}\n`);
  const withToken = await runK4s(["dashboard", "--url", url.replace(/\/$/, ""), "--no-open"], { K4S_TOKEN: "a b/c" });
  assert.equal(withToken.stdout, `${url}#token=a%20b%2Fc\n`);
  // By default the dashboard is the server's port + 1; nothing answers there for this server.
  const port = Number(server.address.split(":").pop());
  const missing = await runK4s(["dashboard", "--no-open", "--server", `127.0.0.1:${port}`]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, new RegExp(`error: no dashboard answers at http://127\\.0\\.0\\.1:${port + 1}/: .*pass --url`));
});

test("k4s dashboard opens the address in the desktop's browser on a terminal with a display, and only then", async () => {
  const url = server.dashboardUrl!;
  // A stand-in xdg-open that records what it was asked to open.
  const bin = mkdtempSync(join(tmpdir(), "k4s-opener-"));
  const opened = join(bin, "opened");
  writeFileSync(join(bin, "xdg-open"), `#!/bin/sh\necho "$1" >> '${opened}'\n`, { mode: 0o755 });
  const env = (token: string, display: boolean) => ({
    ...process.env,
    PATH: `${bin}:${process.env.PATH}`,
    K4S_TOKEN: token,
    DISPLAY: display ? ":99" : "",
    WAYLAND_DISPLAY: "",
  });
  /** Runs k4s dashboard on a pseudo-terminal (`script`), as from a user's shell. */
  const onTerminal = (token: string, display: boolean, ...extra: string[]) =>
    new Promise<string>((resolve, reject) => {
      const command = [process.execPath, K4S_BIN, "dashboard", "--url", url, ...extra].map((a) => `'${a}'`).join(" ");
      const child = spawn("script", ["-qfec", command, "/dev/null"], { env: env(token, display), stdio: ["pipe", "pipe", "inherit"] });
      let out = "";
      child.stdout.on("data", (d) => (out += d));
      child.on("error", reject);
      child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`k4s dashboard exited ${code}: ${out}`))));
    });
  // Not opened: piped output, no display, --no-open.
  const piped = spawnK4s(["dashboard", "--url", url], { PATH: env("", true).PATH, K4S_TOKEN: "piped", DISPLAY: ":99" });
  piped.child.stdin!.end();
  assert.equal(await piped.exited, 0, piped.stderr());
  assert.match(await onTerminal("nodisplay", false), /#token=nodisplay/);
  assert.match(await onTerminal("noopen", true, "--no-open"), /#token=noopen/);
  // Opened: a terminal and a display.
  assert.match(await onTerminal("tty", true), /#token=tty/);
  const lines = await eventually(() => existsSync(opened) && readFileSync(opened, "utf8"), 10_000, "the browser opened");
  assert.equal(lines, `${url}#token=tty\n`);
  rmSync(bin, { recursive: true, force: true });
});

test("k4s server --dashboard-host: loopback only by default; all interfaces only with a token", async () => {
  // 127.0.0.2 is loopback too, but a socket bound to 127.0.0.1 does not answer it.
  const at = (url: string, host: string) => url.replace("127.0.0.1", host);
  const local = spawnK4s(["server", "--memory", "--port", "0", "--no-local-worker"]);
  try {
    await local.waitFor(/k4s dashboard on (\S+)\n/, 30_000);
    const url = /k4s dashboard on (\S+)/.exec(local.stdout())![1]!;
    await assert.rejects(get(at(url, "127.0.0.2")), /ECONNREFUSED/);
  } finally {
    await local.kill();
  }
  const refused = await runK4s(["server", "--memory", "--port", "0", "--no-local-worker", "--dashboard-host", "0.0.0.0"]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /refusing to serve the dashboard on 0\.0\.0\.0 without a token/);
  const dir = mkdtempSync(join(tmpdir(), "k4s-token-"));
  writeFileSync(join(dir, "token"), "all-interfaces\n");
  const all = spawnK4s(["server", "--memory", "--port", "0", "--no-local-worker", "--dashboard-host", "0.0.0.0", "--token-file", join(dir, "token")]);
  try {
    await all.waitFor(/k4s dashboard on (\S+)\n/, 30_000);
    const url = /k4s dashboard on (\S+)/.exec(all.stdout())![1]!;
    const page = await get(at(url, "127.0.0.2"));
    assert.ok(page.status === 200 || page.status === 503, `${page.status} ${page.body}`);
    const list = await fetch(`${at(url, "127.0.0.2")}k4s.v1.ResourceService/List`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer all-interfaces" },
      body: '{"kind":"Container"}',
    });
    assert.equal(list.status, 200);
  } finally {
    await all.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("k4s server prints the dashboard's address, takes --dashboard-port, and --no-dashboard turns it off", async () => {
  const on = spawnK4s(["server", "--memory", "--port", "0", "--no-local-worker"]);
  try {
    await on.waitFor(/k4s dashboard on http:\/\/127\.0\.0\.1:\d+\/\n/, 30_000);
    const url = /k4s dashboard on (\S+)/.exec(on.stdout())![1]!;
    const page = await get(url);
    // The page npm ci built (dist/dashboard), or a clear word that it is missing.
    assert.ok(page.status === 200 || (page.status === 503 && /npm run build/.test(page.body)), `${page.status} ${page.body}`);
  } finally {
    await on.kill();
  }
  const busy = createNetServer();
  await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
  const port = (busy.address() as AddressInfo).port;
  try {
    const taken = await runK4s(["server", "--memory", "--port", "0", "--no-local-worker", "--dashboard-port", String(port)]);
    assert.equal(taken.code, 1);
    assert.match(taken.stderr, new RegExp(`error: cannot serve the dashboard on 127.0.0.1:${port}: address already in use .*--no-dashboard`));
  } finally {
    busy.close();
  }
  const off = spawnK4s(["server", "--memory", "--port", "0", "--no-local-worker", "--no-dashboard"]);
  try {
    await off.waitFor(/listening on/, 30_000);
    await new Promise((r) => setTimeout(r, 200));
    assert.doesNotMatch(off.stdout(), /dashboard/);
  } finally {
    await off.kill();
  }
});
