# Shared by the scripts: PATH for the installed tools, logging, free loopback ports.
# shellcheck shell=bash

export PATH="$HOME/.cargo/bin:$PWD/end2end/node_modules/.bin:$PATH"

step() { printf '\n\033[1;32m==>\033[0m \033[1m%s\033[0m\n' "$*" >&2; }

# Prints a TCP port that is free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# What scripts/build.sh compiles the release site with: the output name is compiled into the
# server, the LEPTOS_* rest is read by it at run time (what cargo-leptos would pass; see
# [[workspace.metadata.leptos]] in Cargo.toml), and components are type-erased on both sides.
site_env() {
  export LEPTOS_OUTPUT_NAME=exportal LEPTOS_SITE_ROOT=target/site LEPTOS_SITE_PKG_DIR=pkg
  export LEPTOS_HASH_FILES=true LEPTOS_HASH_FILE_NAME=hash.txt
}
SITE_RUSTFLAGS="--cfg erase_components"

# The Python virtualenv of the contract tests (Schemathesis): under target/, never tracked.
CONTRACT_VENV=${EXPORTAL_CONTRACT_VENV:-$PWD/target/venv}
