#!/usr/bin/env bash
# The package as a user gets it: `npm pack`, install the tarball into an empty folder, and with
# plain `node` (no TypeScript loader) run a server from the installed package, a client (apply,
# watch, request, error details), a worker both through `k4s worker --module` and through
# attach(), `k4s example` and `k4s demo`; type-check a TypeScript consumer against the shipped .d.ts; and check that
# importing k4s/client or k4s/workers loads no server-only module. Run by .ci/run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/k4s-consumer-XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== npm pack"
(cd "$repo" && npm pack --silent --pack-destination "$work" >/dev/null)
tarball=$(ls "$work"/k4s-*.tgz)
tar -tzf "$tarball" | sed 's|^package/||' >"$work/contents"
for must in bin/k4s.js dist/dashboard/index.html dist/dashboard/app.js dist/dashboard/app.css dist/client/index.js dist/client/index.d.ts dist/workers/index.js dist/server/index.js dist/gen/k4s/v1/resources_pb.js examples/calculator.yaml proto/k4s/v1/resources.proto; do
  grep -qx "$must" "$work/contents" || { echo "the tarball lacks $must" >&2; exit 1; }
done
if grep -E '^(src|test|bench|scripts|\.ci)/|\.ts$' "$work/contents" | grep -v '\.d\.ts$'; then
  echo "the tarball carries sources or tests (above)" >&2
  exit 1
fi

echo "== npm install ./$(basename "$tarball") into an empty folder"
app="$work/app"
mkdir -p "$app"
cp "$repo"/test/consumer/{client.mjs,worker.mjs,consumer.ts,tsconfig.json} "$repo/bench/client-import.mjs" "$app/"
cd "$app"
echo '{"name": "k4s-consumer", "private": true, "type": "module"}' >package.json
ts_version=$(node -p "require('$repo/node_modules/typescript/package.json').version")
types_version=$(node -p "require('$repo/node_modules/@types/node/package.json').version")
npm install --no-audit --no-fund --loglevel=error "$tarball" "typescript@$ts_version" "@types/node@$types_version" >/dev/null

echo "== a server from the installed package"
./node_modules/.bin/k4s server --memory --port 0 >"$work/server.log" 2>&1 &
pids+=($!)
# printed PHRASE: the word after "PHRASE " in the server's output, waiting up to 30 s for it.
printed() {
  for _ in $(seq 1 300); do
    grep -q "$1 " "$work/server.log" && break
    sleep 0.1
  done
  local value
  value=$(sed -n "s/.*$1 \\([^ ]*\\).*/\\1/p" "$work/server.log" | head -1)
  [ -n "$value" ] || { cat "$work/server.log" >&2; echo "the server did not print '$1'" >&2; exit 1; }
  echo "$value"
}
address=$(printed "listening on")
echo "server at $address"

echo "== the server serves the dashboard page shipped in the package"
dashboard=$(printed "k4s dashboard on")
node --input-type=module -e '
const base = process.argv[1];
const get = async (path, type, text) => {
  const res = await fetch(base + path);
  const body = await res.text();
  if (res.status !== 200 || !(res.headers.get("content-type") ?? "").startsWith(type) || !body.includes(text))
    throw new Error(`GET ${base}${path}: HTTP ${res.status} ${res.headers.get("content-type")}: ${body.slice(0, 200)}`);
};
await get("", "text/html", "<script type=\"module\" src=\"/app.js\">");
await get("app.js", "text/javascript", "Connect-Protocol-Version");
await get("app.css", "text/css", ".phase-running");
console.log(`dashboard page served at ${base}`);
' "$dashboard"

echo "== a worker host serving ./worker.mjs, and a process attached through attach()"
npx k4s worker --server "$address" --name consumer-host --module greeter=./worker.mjs >"$work/host.log" 2>&1 &
pids+=($!)
npx k4s apply --server "$address" -f - <<'YAML'
kind: Container
metadata: {name: consumer-attached}
spec: {}
YAML
node worker.mjs "$address" consumer-attached >"$work/attached.log" 2>&1 &
pids+=($!)

echo "== the client"
node client.mjs "$address"
npx k4s get containers --server "$address"

echo "== k4s example and k4s demo from the installed package"
npx k4s example >"$work/example.log" 2>&1 || { tail -20 "$work/example.log" >&2; exit 1; }
tail -1 "$work/example.log"
npx k4s demo >"$work/demo.log" 2>&1 || { tail -20 "$work/demo.log" >&2; exit 1; }
tail -1 "$work/demo.log"

echo "== type-check a TypeScript consumer against the shipped .d.ts"
./node_modules/.bin/tsc -p tsconfig.json

echo "== import cost of k4s/client and k4s/workers; no server-only module"
node client-import.mjs --runs 3 --check
echo "consumer test passed"
