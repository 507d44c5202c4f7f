#!/usr/bin/env bash
# Benchmark: what the export page costs on the wire, first and repeat view, in Chromium, from
# the release build that scripts/run.sh serves (hashed, precompressed files).
#
#   bench/page-weight.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

scripts/tools.sh test >/dev/null
step "building the release site (scripts/build.sh, as scripts/run.sh does)"
scripts/build.sh >/dev/null 2>&1 || scripts/build.sh

work=$(mktemp -d "${TMPDIR:-/tmp}/exportal-weight.XXXXXX")
addr="127.0.0.1:$(free_port)"
site_env
EXPORTAL_DEMO_ORDERS=10000 EXPORTAL_DATA_DIR="$work/data" target/release/server --addr "$addr" \
  >"$work/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 200); do curl -sf "http://$addr/healthz" >/dev/null && break; sleep 0.1; done

step "wasm module sizes"
for f in target/site/pkg/*.wasm*; do printf '%9d  %s\n' "$(stat -c %s "$f")" "$f"; done
step "first and repeat view in Chromium"
(cd end2end && node ../bench/page-weight.mjs "http://$addr/")
