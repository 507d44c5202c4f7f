# Shared by the scripts: PATH for the installed tools, logging, free loopback ports.
# shellcheck shell=bash

export PATH="$HOME/.cargo/bin:$PWD/end2end/node_modules/.bin:$PATH"

step() { printf '\n\033[1;32m==>\033[0m \033[1m%s\033[0m\n' "$*" >&2; }

# Prints a TCP port that is free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# The Python virtualenv of the contract tests (Schemathesis): under target/, never tracked.
CONTRACT_VENV=${EXPORTAL_CONTRACT_VENV:-$PWD/target/venv}
