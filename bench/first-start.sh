#!/usr/bin/env bash
# Benchmark: a first start, as a newcomer has it. Clones this repository's HEAD into a new
# directory and runs `scripts/run.sh` there with an empty Cargo home (no cargo-leptos, no
# wasm-bindgen CLI, no crate cache: every crate is downloaded and compiled) and an empty npm
# cache; only the Rust toolchain (rustup) and Node are shared with this machine. Prints each
# phase's time (scripts/build.sh prints the running total at each step) and the time until the
# server answers its health check, then stops the server it started.
#
#   bench/first-start.sh [DIR]     (default: a new directory under /tmp; removed afterwards
#                                   unless KEEP=1)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
dir=${1:-$(mktemp -d "${TMPDIR:-/tmp}/exportal-first.XXXXXX")}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
rustup_bin=$(command -v rustup || echo "$HOME/.cargo/bin/rustup")

git clone -q "$repo" "$dir/exportal"
home="$dir/home"
mkdir -p "$home/.cargo/bin"
# The rustup proxies only: cargo, rustc and rustup themselves, nothing cargo installed.
for tool in cargo rustc rustup rustdoc; do ln -s "$rustup_bin" "$home/.cargo/bin/$tool"; done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')

start=$(date +%s)
(
  cd "$dir/exportal"
  env -i PATH="$home/.cargo/bin:$(dirname "$(command -v node)"):/usr/local/bin:/usr/bin:/bin" \
    HOME="$home" RUSTUP_HOME="$rustup_home" CARGO_HOME="$home/.cargo" TERM=dumb \
    EXPORTAL_ADDR="127.0.0.1:$port" EXPORTAL_DATA_DIR="$dir/data" \
    setsid scripts/run.sh >"$dir/run.log" 2>&1 &
  echo $! >"$dir/run.pid"
)
pid=$(cat "$dir/run.pid")
cleanup() {
  kill -- -"$pid" 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$dir"
}
trap cleanup EXIT
until curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 40 "$dir/run.log"
    echo "scripts/run.sh stopped before serving" >&2
    exit 1
  fi
  sleep 2
done
total=$(($(date +%s) - start))
# run.sh became the server (exec), which keeps the CPU time of the builds it waited for
# (cutime + cstime): the work done, whatever else the machine was doing meanwhile.
cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($16 + $17) / hz }' "/proc/$pid/stat")
sed 's/\x1b\[[0-9;]*m//g' "$dir/run.log" | grep -E '^==>|\[tools\]|Finished'
printf 'first start: %d min %02d s until http://127.0.0.1:%s answered\n' $((total / 60)) $((total % 60)) "$port"
printf 'CPU time of the builds: %d min %02d s (on %d cores: %d min %02d s if they were kept busy)\n' \
  $((cpu / 60)) $((cpu % 60)) "$(nproc)" $((cpu / $(nproc) / 60)) $((cpu / $(nproc) % 60))
