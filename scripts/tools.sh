#!/usr/bin/env bash
# Installs the build tools Exportal needs, idempotently, from the package registries only.
#
#   scripts/tools.sh site    wasm target, npm packages (wasm-opt): what scripts/build.sh (and
#                            so scripts/run.sh) needs besides what it compiles itself
#   scripts/tools.sh dev     the above + cargo-leptos and the wasm-bindgen CLI it calls
#                            (`cargo leptos watch`, the browser tests)
#   scripts/tools.sh test    the above + cargo-nextest, and Chromium, SQLite, PostgreSQL, MariaDB,
#                            openssl (the keyless Azurite's CA) and curl (Debian packages),
#                            Schemathesis and an OpenAPI validator (PyPI, in target/venv)
#
# Every step checks first, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-dev}
case $what in site | dev | test) ;; build) what=dev ;; *) echo "usage: tools.sh site|dev|test" >&2; exit 2 ;; esac
log() { printf '\033[1;34m[tools]\033[0m %s\n' "$*" >&2; }

CARGO_LEPTOS_VERSION=0.3.10
# Any 0.9 nextest runs the suite; this one is pinned so every machine runs the same.
NEXTEST_VERSION=0.9.143
# The contract tests (scripts/contract.sh); pinned so that every machine fuzzes alike.
SCHEMATHESIS_VERSION=4.32.5
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
# The wasm-bindgen CLI must equal the crate version in Cargo.lock exactly, or the
# generated JS glue and the wasm module disagree at run time.
wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}

have_version() { # have_version CMD VERSION: CMD --version prints VERSION
  command -v "$1" >/dev/null 2>&1 && "$1" --version 2>/dev/null | grep -qF "$2"
}

export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# The run path (scripts/build.sh) does without cargo-leptos: its install is the longest step of
# a first start (8–12 min on 2 cores), and only the development loop and the tests need it.
if [ "$what" != site ] && ! have_version cargo-leptos "$CARGO_LEPTOS_VERSION"; then
  # cargo-leptos's own release profile (fat LTO, one codegen unit) takes ~26 min on 2 cores.
  # It is a build driver whose run time is dominated by the compilers it calls, so an
  # unoptimised build of it costs nothing noticeable and installs several times faster.
  # `--locked`: newer dependency versions need a newer rustc than this machine has.
  # `no_downloads`: a missing tool is an immediate error instead of a slow failed download.
  log "installing cargo-leptos $CARGO_LEPTOS_VERSION (one-off, several minutes)"
  CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 \
  CARGO_PROFILE_RELEASE_DEBUG=0 \
  CARGO_PROFILE_RELEASE_INCREMENTAL=false \
    cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked --features no_downloads
fi

# scripts/build.sh compiles the same library as its own small tool (scripts/bindgen).
wbv=$(wasm_bindgen_version)
if [ "$what" != site ] && ! have_version wasm-bindgen "$wbv"; then
  # Not `--locked`: its lock file pins a webpki-roots version the registry no longer serves.
  # `--no-default-features`: no TLS stack (only its test runner's downloads need one), which
  # saves compiling a C crypto library.
  log "installing wasm-bindgen-cli $wbv"
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    cargo install wasm-bindgen-cli --version "$wbv" --force --no-default-features
fi

# wasm-opt (npm binaryen: Debian's binaryen 108 produces wasm that fails in the browser),
# Playwright and Azurite live in end2end/node_modules, pinned by end2end/package-lock.json.
if [ ! -x end2end/node_modules/.bin/wasm-opt ] || [ end2end/package-lock.json -nt end2end/node_modules/.package-lock.json ]; then
  log "installing end2end npm packages"
  (cd end2end && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ "$what" = test ] && ! have_version cargo-nextest "$NEXTEST_VERSION"; then
  # scripts/test.sh runs the Rust tests with nextest; a fresh machine may not have it.
  # `--locked`: its own lock file holds versions that build on this rustc; no self-update.
  log "installing cargo-nextest $NEXTEST_VERSION (one-off, a few minutes)"
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    cargo install cargo-nextest --version "$NEXTEST_VERSION" --locked \
    --no-default-features --features default-no-update
fi

if [ "$what" = test ]; then
  need=()
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v sqlite3 >/dev/null || need+=(sqlite3)
  [ -d /usr/lib/postgresql ] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
  # Debian's python3 makes virtualenvs only with python3-venv (which brings ensurepip).
  python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
  command -v openssl >/dev/null || need+=(openssl)
  command -v curl >/dev/null || need+=(curl)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d keeps the packages' own services from starting: tests start their own
    # instances on free loopback ports and stop them afterwards.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
fi
if [ "$what" = test ]; then
  source scripts/lib.sh
  want="schemathesis==$SCHEMATHESIS_VERSION openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
  have=$("$CONTRACT_VENV/bin/python" - 2>/dev/null <<'PY' || true
import importlib.metadata as m
print(" ".join(f"{p}=={m.version(p)}" for p in ("schemathesis", "openapi-spec-validator")))
PY
)
  if [ "$have" != "$want" ]; then
    log "installing $want into $CONTRACT_VENV"
    [ -x "$CONTRACT_VENV/bin/pip" ] || python3 -m venv "$CONTRACT_VENV"
    # shellcheck disable=SC2086 # two requirement words
    "$CONTRACT_VENV/bin/pip" install --quiet --disable-pip-version-check $want
  fi
fi
log "tools ready"
