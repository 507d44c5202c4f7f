#!/usr/bin/env bash
# Benchmark of the live channel (`/ws`) with many connections, opened by a separate process
# (server/examples/ws_load.rs, release build).
#
#   bench/ws.sh [SERVER_BINARY] [CONNECTIONS...]     (defaults: target/release/server, 1000 10000)
#   JOBS=N RATE=R bench/ws.sh …                      (default 100 small exports per run, 5 a second)
#   STORAGE=azure bench/ws.sh …                      a `web` + `worker` pair on Azurite instead
#
# For every count of connections, a fresh server (role `all`, local store; or `web` + `worker`
# on Azurite) and a fresh load process, which spreads the connections over users of at most
# 1,000 sockets each (the most `--ws-per-user` allows), then submits JOBS small exports spread
# over those users at RATE a second. It prints the server's RSS per idle connection, its CPU seconds per 1,000
# published changes, and each change of status's delivery p50/p99 from the store write to the
# sockets. On Azurite it also prints the storage requests the web and the worker process sent
# during the run and per second while the sockets stay open and idle (each process's own
# `exportal_storage_requests_total`, read from its /metrics).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
SERVER=${1:-target/release/server}
shift || true
COUNTS=("${@:-1000 10000}")
read -r -a COUNTS <<<"${COUNTS[*]}"
JOBS=${JOBS:-100}
export RATE=${RATE:-5}
STORAGE=${STORAGE:-local}
# Each side holds one descriptor per connection.
ulimit -n "$(ulimit -Hn)"

step "building the load generator"
# The environment scripts/build.sh compiles the release server with, so the example reuses its
# compiled dependencies instead of building them all again.
(site_env && RUSTFLAGS=$SITE_RUSTFLAGS cargo build --locked --release -q -p server --example ws_load)
LOAD=target/release/examples/ws_load

work=$(mktemp -d "${TMPDIR:-/tmp}/exportal-ws.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

azurite_args=()
if [ "$STORAGE" = azure ]; then
  bp=$(free_port); qp=$(free_port); tp=$(free_port)
  mkdir -p "$work/azurite"
  end2end/node_modules/.bin/azurite --silent --location "$work/azurite" \
    --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 --blobPort "$bp" --queuePort "$qp" \
    --tablePort "$tp" --disableTelemetry >"$work/azurite.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$bp/" && break; sleep 0.1; done
  conn="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:$bp/devstoreaccount1;QueueEndpoint=http://127.0.0.1:$qp/devstoreaccount1;"
fi

# The storage requests one process has sent so far (every try: what the account bills).
requests() {
  curl -fs "http://127.0.0.1:$1/metrics" |
    awk '/^exportal_storage_requests_total/ { s += $NF } END { printf "%d", s }'
}

for n in "${COUNTS[@]}"; do
  users=$(((n + 999) / 1000))
  port=$(free_port)
  common=(--auth header --demo-orders 100 --ws-per-user 1000 --max-active-jobs 100000
    --rate-per-minute 1000000 --rate-burst 1000000)
  role=all
  if [ "$STORAGE" = azure ]; then
    tag=w$(date +%s%N | tail -c 9)
    common+=(--storage azure --azure-connection-string "$conn" --azure-queue "$tag"
      --azure-files-container "$tag" --azure-jobs-container "${tag}j")
    role=web
  fi
  LEPTOS_OUTPUT_NAME=exportal RUST_LOG=warn "$SERVER" --addr "127.0.0.1:$port" \
    --data-dir "$work/data-$n" --role "$role" "${common[@]}" >"$work/server-$n.log" 2>&1 &
  server=$!
  pids+=("$server")
  worker=
  if [ "$STORAGE" = azure ]; then
    wport=$(free_port)
    LEPTOS_OUTPUT_NAME=exportal RUST_LOG=warn "$SERVER" --addr "127.0.0.1:$wport" \
      --data-dir "$work/worker-$n" --role worker "${common[@]}" >"$work/worker-$n.log" 2>&1 &
    worker=$!
    pids+=("$worker")
  fi
  for _ in $(seq 1 300); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  step "$n connections over $users users, $JOBS exports at $RATE a second ($STORAGE)"
  [ "$STORAGE" = azure ] && { w0=$(requests "$port"); k0=$(requests "$wport"); }
  "$LOAD" "127.0.0.1:$port" "$server" "$n" "$users" "$JOBS" 2>&1 | grep -v '^ \|^stack backtrace\|^note:' |
    tee "$work/load-$n.txt" || echo "the load run failed (above: why)"
  if [ "$STORAGE" = azure ]; then
    w1=$(requests "$port"); k1=$(requests "$wport")
    echo "storage_requests_during_run web $((w1 - w0)) worker $((k1 - k0)) (connecting and $JOBS exports)"
    # Storage requests while the sockets are open and no export runs: what pages cost idle.
    "$LOAD" "127.0.0.1:$port" "$server" "$n" "$users" 0 hold 45 >"$work/hold-$n.txt" &
    load=$!
    for _ in $(seq 1 240); do grep -q connect_seconds "$work/hold-$n.txt" && break; sleep 0.5; done
    sleep 5
    w0=$(requests "$port"); k0=$(requests "$wport"); sleep 30; w1=$(requests "$port"); k1=$(requests "$wport")
    echo "storage_requests_per_second_idle web $(python3 -c "print(round(($w1 - $w0) / 30, 2))")" \
      "worker $(python3 -c "print(round(($k1 - $k0) / 30, 2))") ($n sockets open)"
    wait "$load" || true
  fi
  kill "$server" $worker 2>/dev/null || true
  wait "$server" $worker 2>/dev/null || true
done
