#!/usr/bin/env bash
# Builds Exportal (release, wasm-opt applied) and runs it on the embedded default: SQLite job
# store and queue, files in ./data. Installs missing build tools first (idempotent).
#
#   scripts/run.sh              build and serve at http://127.0.0.1:3000
#   EXPORTAL_ADDR=127.0.0.1:8080 scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# Installs what it needs (scripts/tools.sh site) while the server compiles.
scripts/build.sh release

addr=${EXPORTAL_ADDR:-${LEPTOS_SITE_ADDR:-127.0.0.1:3000}}
step "Exportal is starting: open http://$addr"
# The file names carry content hashes, listed in target/release/hash.txt (see Cargo.toml).
site_env
exec target/release/server --addr "$addr" "$@"
