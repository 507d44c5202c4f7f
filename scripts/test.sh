#!/usr/bin/env bash
# Installs what the tests need (idempotent) and runs every test: lints, browser tests, the API's
# contract tests, the release site that scripts/run.sh serves (built and checked in Chromium),
# then the workspace's Rust tests, whose summary is the last thing printed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

scripts/tools.sh test

step "cargo fmt --check"
cargo fmt --all --check

step "clippy, server build (ssr)"
cargo clippy --locked -p server -p app -p site-bindgen --all-targets --features app/ssr -- -D warnings

step "clippy, browser build (hydrate, wasm32)"
cargo clippy --locked -p frontend -p app --features app/hydrate --target wasm32-unknown-unknown -- -D warnings

work=$(mktemp -d "${TMPDIR:-/tmp}/exportal-test.XXXXXX")
source scripts/services.sh
cleanup() { stop_services; rm -rf "$work"; }
trap cleanup EXIT

step "starting PostgreSQL, MariaDB and Azurite (HTTP; HTTPS with OAuth) on free loopback ports"
start_services "$work"

step "browser tests (cargo leptos end-to-end)"
LEPTOS_SITE_ADDR="127.0.0.1:$(free_port)"
LEPTOS_RELOAD_PORT="$(free_port)"
export LEPTOS_SITE_ADDR LEPTOS_RELOAD_PORT
export EXPORTAL_DATA_DIR="$work/data"
# The admin console's browser test holds the signed cookie of the admin `e2e-admin` (so it needs
# the cookie key), and makes exports fail by moving the demo database away: two quick attempts.
EXPORTAL_COOKIE_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export EXPORTAL_COOKIE_SECRET EXPORTAL_ADMINS=e2e-admin EXPORTAL_MAX_ATTEMPTS=2 EXPORTAL_RETRY_BASE=500ms
EXPORTAL_E2E_SOURCE_DBS="$work/data/demo.db" cargo leptos end-to-end

step "browser tests again: a web instance and a separate worker on Azurite"
(
  export EXPORTAL_STORAGE=azure AZURE_STORAGE_CONNECTION_STRING="$EXPORTAL_TEST_AZURE_CONNECTION_STRING"
  export EXPORTAL_AZURE_QUEUE=e2e-jobs EXPORTAL_AZURE_FILES_CONTAINER=e2e-files EXPORTAL_AZURE_JOBS_CONTAINER=e2e-jobs
  # The worker is the debug binary cargo-leptos just built; it starts before the web instance
  # and is stopped by its PID afterwards.
  LEPTOS_OUTPUT_NAME=exportal EXPORTAL_ROLE=worker EXPORTAL_DATA_DIR="$work/worker-data" \
    EXPORTAL_ADDR="127.0.0.1:$(free_port)" target/debug/server >"$work/worker.log" 2>&1 &
  worker=$!
  trap 'kill "$worker" 2>/dev/null' EXIT
  EXPORTAL_ROLE=web EXPORTAL_DATA_DIR="$work/web-data" LEPTOS_SITE_ADDR="127.0.0.1:$(free_port)" \
    EXPORTAL_E2E_SOURCE_DBS="$work/worker-data/demo.db" cargo leptos end-to-end
)

# The debug binary cargo-leptos built, fuzzed against its own OpenAPI document in both identity
# modes (no 5xx, no answer the document does not describe, malformed requests refused).
scripts/contract.sh

step "the release site as scripts/run.sh builds it (scripts/build.sh), checked in Chromium"
# Only a release build shows some failures (the wasm-release profile's LTO; the hashed names
# and precompressed copies that build.sh makes without cargo-leptos): the page must hydrate,
# and an export must run and download, from exactly what the run command serves.
scripts/build.sh
(
  addr="127.0.0.1:$(free_port)"
  site_env
  EXPORTAL_DATA_DIR="$work/release-data" target/release/server --addr "$addr" \
    >"$work/release.log" 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null' EXIT
  cd end2end
  LEPTOS_SITE_ADDR="$addr" npx playwright test tests/shell.spec.ts tests/exports.spec.ts:17
)

step "Rust tests (unit and integration)"
# The same RUSTFLAGS and output name as cargo-leptos's debug build, so the tests reuse its
# compiled dependencies instead of building ~350 crates again. The app crate is tested with the
# server's features (`ssr`); the wasm-only code is covered by clippy and the browser tests.
RUSTFLAGS="--cfg erase_components" LEPTOS_OUTPUT_NAME=exportal \
  cargo nextest run --locked -p app -p server --no-fail-fast
