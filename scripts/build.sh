#!/usr/bin/env bash
# Builds the release site and server with cargo, wasm-bindgen (scripts/bindgen), wasm-opt and node: the
# same site as `cargo leptos build --release --precompress` (hashed file names, brotli and gzip
# copies), without cargo-leptos, whose install alone is the longest step of a first start.
# The server, the browser module and the wasm-bindgen tool compile at the same time: on 2
# cores one cargo build leaves a core idle for much of its tail (linking, the last large
# crates), which the others fill.
#
#   scripts/build.sh          server with the `release` profile (what scripts/run.sh runs)
#   scripts/build.sh dist     server with the `dist` profile (fat LTO, one codegen unit: slower
#                             to build, for deployments); the browser module is the same
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

profile=${1:-release}
case $profile in release | dist) ;; *) echo "usage: build.sh [release|dist]" >&2; exit 2 ;; esac

site_env
# Components type-erased (SITE_RUSTFLAGS; as cargo-leptos's debug builds do, which the browser
# tests run) in both the server and the browser module: the module is 17 % smaller on the wire
# (411,009 → 342,220 bytes as brotli) with the views no longer monomorphised into one deep type
# per page, and both sides render and hydrate the same erased tree. RUSTFLAGS is given to those
# two builds only.
pkg=$LEPTOS_SITE_ROOT/$LEPTOS_SITE_PKG_DIR
logs=target/build-logs
mkdir -p "$logs"

timer_start=$(date +%s)
phase() { step "$1 ($(($(date +%s) - timer_start)) s)"; }

# Three compilations at once, each in its own target directory (one cargo would wait for the
# other's lock): the server, the browser module and the small wasm-bindgen tool.
phase "compiling the server (profile $profile) in the background; log: $logs/server.log"
RUSTFLAGS=$SITE_RUSTFLAGS cargo build --locked --profile "$profile" -p server --bin server \
  >"$logs/server.log" 2>&1 &
server_build=$!
trap 'kill "$server_build" 2>/dev/null || true' EXIT

phase "build tools"
scripts/tools.sh site

phase "compiling the browser module (wasm32, profile wasm-release) and the wasm-bindgen tool"
# The tool runs once per build on one module: an optimised build of it would cost more time
# than it saves.
CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo build --locked --release -p site-bindgen --target-dir target/tools \
  >"$logs/bindgen.log" 2>&1 &
bindgen_build=$!
trap 'kill "$server_build" "$bindgen_build" 2>/dev/null || true' EXIT
RUSTFLAGS=$SITE_RUSTFLAGS cargo build --locked -p frontend --lib --target wasm32-unknown-unknown \
  --profile wasm-release --target-dir target/front
if ! wait "$bindgen_build"; then
  cat "$logs/bindgen.log" >&2
  exit 1
fi

phase "wasm-bindgen"
rm -rf "$LEPTOS_SITE_ROOT"
mkdir -p "$pkg"
target/tools/release/site-bindgen target/front/wasm32-unknown-unknown/wasm-release/frontend.wasm \
  "$pkg" exportal
mv "$pkg/exportal_bg.wasm" "$pkg/exportal.wasm"

phase "wasm-opt -Os"
# -Os rather than cargo-leptos's -Oz: measured on this module, -Oz makes the file 7 % smaller
# but its brotli copy, what a browser downloads, 2.5 KB larger (330,577 against 328,108 bytes).
# The feature flags are cargo-leptos's: what every browser the page supports has.
wasm-opt -Os --enable-bulk-memory --enable-nontrapping-float-to-int \
  "$pkg/exportal.wasm" -o "$pkg/exportal.wasm"

phase "hashed names, stylesheet, public/, brotli and gzip copies"
node scripts/site.mjs "$LEPTOS_SITE_ROOT" "$LEPTOS_SITE_PKG_DIR" exportal style/main.css public \
  "target/$profile/hash.txt"

phase "waiting for the server build"
if ! wait "$server_build"; then
  tail -n 60 "$logs/server.log" >&2
  echo "the server build failed; the whole log: $logs/server.log" >&2
  exit 1
fi
trap - EXIT
tail -n 1 "$logs/server.log" >&2
phase "built: target/$profile/server and $LEPTOS_SITE_ROOT"
