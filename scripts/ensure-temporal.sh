#!/usr/bin/env bash
# Prints the path of a Temporal CLI (dev server included), building it once if needed.
# Order: $TEMPORAL_CLI_PATH, `temporal` on PATH, the shared cache, else `go install` into the cache.
set -euo pipefail
VERSION="${TEMPORAL_CLI_VERSION:-v1.5.1}" # newest tag `go install` accepts; later tags carry replace directives
CACHE_DIR="${BALANCE_SYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/balance-sync}/temporal-cli-$VERSION"

if [[ -n "${TEMPORAL_CLI_PATH:-}" && -x "$TEMPORAL_CLI_PATH" ]]; then echo "$TEMPORAL_CLI_PATH"; exit 0; fi
if command -v temporal >/dev/null 2>&1; then command -v temporal; exit 0; fi
if [[ -x "$CACHE_DIR/temporal" ]]; then echo "$CACHE_DIR/temporal"; exit 0; fi

command -v go >/dev/null 2>&1 || {
  echo "ensure-temporal: no Temporal CLI found and no Go toolchain to build one: install Go, or get the CLI" \
    "(brew install temporal, or the release archive from https://github.com/temporalio/cli/releases)" \
    "and put it on PATH or set TEMPORAL_CLI_PATH; see README 'Without Docker'" >&2
  exit 1
}
mkdir -p "$CACHE_DIR"
# One build at a time: a second caller (test projects set up side by side) waits for the first's binary.
exec 9>"$CACHE_DIR/.lock"
if command -v flock >/dev/null; then flock 9; fi # util-linux; without it (macOS), no lock
if [[ -x "$CACHE_DIR/temporal" ]]; then echo "$CACHE_DIR/temporal"; exit 0; fi
echo "ensure-temporal: building temporal CLI $VERSION into $CACHE_DIR (about 5 minutes, once per machine)" >&2
# Build into a temporary GOBIN, then rename, so an interrupted build never leaves a half binary in the cache.
tmp="$(mktemp -d "$CACHE_DIR/build.XXXXXX")"
CGO_ENABLED=0 GOBIN="$tmp" go install "github.com/temporalio/cli/cmd/temporal@$VERSION" >&2
mv "$tmp/temporal" "$CACHE_DIR/temporal"
rmdir "$tmp"
echo "$CACHE_DIR/temporal"
