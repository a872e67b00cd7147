#!/usr/bin/env bash
# Prints the path of a promtool (Prometheus's rule checker), fetching it once if needed.
# Order: $PROMTOOL_PATH, `promtool` on PATH, the shared cache, else Debian's `prometheus` package:
# downloaded with `apt-get download` and unpacked into the cache, never installed, so no Prometheus
# daemon is started and port 9090 stays free.
set -euo pipefail
CACHE_ROOT="${BALANCE_SYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/balance-sync}"

if [[ -n "${PROMTOOL_PATH:-}" && -x "$PROMTOOL_PATH" ]]; then echo "$PROMTOOL_PATH"; exit 0; fi
if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi
cached=$(ls -d "$CACHE_ROOT"/promtool-*/promtool 2>/dev/null | sort -V | tail -1 || true)
if [[ -n "$cached" && -x "$cached" ]]; then echo "$cached"; exit 0; fi

command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 || {
  echo "ensure-promtool: no promtool found, and this script fetches it only with apt-get (Debian, Ubuntu):" \
    "get it from a Prometheus release archive (https://github.com/prometheus/prometheus/releases) or" \
    "\`brew install prometheus\`, and put it on PATH or set PROMTOOL_PATH" >&2
  exit 1
}
mkdir -p "$CACHE_ROOT"
tmp=$(mktemp -d "$CACHE_ROOT/promtool-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp" # apt's _apt user downloads into it when run as root
download() { (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); }
if ! download; then
  echo "ensure-promtool: refreshing the apt package lists" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq >&2
  download || { echo "ensure-promtool: apt-get download prometheus failed" >&2; exit 1; }
fi
deb=$(ls "$tmp"/prometheus_*.deb)
version=$(dpkg-deb -f "$deb" Version)
echo "ensure-promtool: unpacking promtool from Debian's prometheus $version into $CACHE_ROOT (once per machine)" >&2
dpkg-deb -x "$deb" "$tmp/root"
dest="$CACHE_ROOT/promtool-$version"
mkdir -p "$dest"
# Copy, then rename, so an interrupted run never leaves a half binary in the cache.
cp "$tmp/root/usr/bin/promtool" "$dest/promtool.partial"
mv "$dest/promtool.partial" "$dest/promtool"
"$dest/promtool" --version >/dev/null
echo "$dest/promtool"
