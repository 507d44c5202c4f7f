#!/usr/bin/env bash
# The Azure upload: a CSV export PostgreSQL → Azurite (blob) with release builds of the server,
# against psql's COPY into a file and against the bare upload of the same bytes to Azurite by a
# minimal client (bench/azurite-put.py: staged blocks, nothing else running), in one run on one
# machine, alternating.
#
#   bench/upload.sh [ROWS]                  (default 5000000)
#   RUNS=N                                  rounds (default 3); each round runs every build once
#   BASELINE_SERVER=PATH                    another build of the server, alternated with this one
#   SERVER_BIN=PATH                         this build (default target/release/server; not built
#                                           here: run `cargo leptos build --release` first)
#   EXTRA_SERVERS="NAME=PATH ..."           more builds (or wrappers setting an environment),
#                                           each run once a round, after the other two
#
# Per export: the worker's time (started_at → finished_at), the server's peak RSS (VmHWM, a
# fresh process per export), the server's CPU seconds and Azurite's (user + system from
# /proc/PID/stat) over the export: Azurite is one Node process, so its CPU seconds over the
# upload are a floor under the time any client can take.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source bench/lib.sh
ROWS=${1:-5000000}
RUNS=${RUNS:-3}
NEW=${SERVER_BIN:-target/release/server}
work=$(mktemp -d "${TMPDIR:-/tmp}/exportal-upload.XXXXXX")
source scripts/services.sh
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; stop_services; rm -rf "$work"; }
trap cleanup EXIT
start_postgres "$work"
start_azurite "$work"
azurite_pid=${SERVICE_PIDS[-1]}
PSQL="$EXPORTAL_TEST_POSTGRES_BIN/psql"
create_bench_data "$ROWS" "$work" >/dev/null
write_bench_datasets "$work/datasets.toml" "$work"
tick=$(getconf CLK_TCK)
cpu() { awk -v t="$tick" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
# PostgreSQL's CPU seconds: the postmaster's own and its ended backends' (reaped children)
pg_pid=$(head -n 1 "$work/postgres/data/postmaster.pid")
pg_cpu() { awk -v t="$tick" '{ printf "%.2f", ($14 + $15 + $16 + $17) / t }' "/proc/$pg_pid/stat"; }
now() { date +%s.%N; }

# export BINARY → "worker_s wall_s peak_rss_mb server_cpu_s azurite_cpu_s bytes postgres_cpu_s"
export_one() {
  local port tag id job t0 t1 az0 az1 srv rss pg0 pg1
  port=$(free_port); tag=b$(date +%s%N | tail -c 9)
  rm -rf "$work/data"
  LEPTOS_SITE_ROOT=target/site LEPTOS_OUTPUT_NAME=exportal RUST_LOG=warn "$1" --addr "127.0.0.1:$port" \
    --data-dir "$work/data" --role all --datasets "$work/datasets.toml" --auth header --row-cap 100000000 \
    --csv-line-ending lf --rate-burst 100000 --storage azure \
    --azure-connection-string "$EXPORTAL_TEST_AZURE_CONNECTION_STRING" --azure-queue "$tag" \
    --azure-files-container "$tag" --azure-jobs-container "${tag}j" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  sleep 0.5
  az0=$(cpu "$azurite_pid"); pg0=$(pg_cpu); t0=$(now)
  id=$(curl -fs -H 'x-forwarded-user: bench' -H 'content-type: application/json' \
    -d "{\"dataset\":\"pg\",\"format\":\"csv\",\"params\":{\"max_id\":$ROWS}}" "http://127.0.0.1:$port/api/v1/exports" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  while :; do
    job=$(curl -fs -H 'x-forwarded-user: bench' "http://127.0.0.1:$port/api/v1/exports/$id")
    case $job in *'"status":"succeeded"'*) break ;; *'"status":"failed"'* | *'"status":"cancelled"'*) echo "$job" >&2; exit 1 ;; esac
    sleep 0.05
  done
  t1=$(now); az1=$(cpu "$azurite_pid"); srv=$(cpu "$server_pid")
  rss=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status")
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
  sleep 0.3; pg1=$(pg_cpu)
  python3 - "$job" "$t0" "$t1" "$rss" "$srv" "$az0" "$az1" "$pg0" "$pg1" <<'PY'
import json, sys
from datetime import datetime
job = json.loads(sys.argv[1]); d = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
worker = (d(job["finished_at"]) - d(job["started_at"])).total_seconds()
t0, t1, rss, srv, az0, az1, pg0, pg1 = map(float, sys.argv[2:])
print(f'{worker:.2f} {t1 - t0:.2f} {rss:.1f} {srv:.2f} {az1 - az0:.2f} {job["file"]["bytes"]} {pg1 - pg0:.2f}')
PY
}

# → "seconds postgres_cpu_s"
copy_one() {
  local t0 t1 pg0 pg1
  pg0=$(pg_cpu); t0=$(now)
  "$PSQL" -q "$EXPORTAL_TEST_POSTGRES_URL" -c "COPY (SELECT $QUERY_COLUMNS FROM bench WHERE id <= $ROWS ORDER BY id) TO STDOUT (FORMAT csv, HEADER)" >"$work/copy.csv"
  t1=$(now); sleep 0.3; pg1=$(pg_cpu)
  python3 -c "print(f'{$t1 - $t0:.2f} {$pg1 - $pg0:.2f}')"
}

# the bare upload of COPY's file → "seconds azurite_cpu_s"
put_one() {
  local az0 az1 out
  az0=$(cpu "$azurite_pid")
  out=$(python3 bench/azurite-put.py "$EXPORTAL_TEST_AZURE_CONNECTION_STRING" "$work/copy.csv" 8 4)
  az1=$(cpu "$azurite_pid")
  python3 -c "print(f'${out%% *} {$az1 - $az0:.2f}')"
}

echo "# $ROWS rows, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# copy seconds postgres_cpu_s | put seconds azurite_cpu_s | old/new worker_s wall_s peak_rss_mb server_cpu_s azurite_cpu_s bytes postgres_cpu_s"
for round in $(seq 1 "$RUNS"); do
  echo "copy $(copy_one)"
  echo "put $(put_one)"
  if [ -n "${BASELINE_SERVER:-}" ] && [ $((round % 2)) -eq 1 ]; then
    echo "old $(export_one "$BASELINE_SERVER")"
    echo "new $(export_one "$NEW")"
  elif [ -n "${BASELINE_SERVER:-}" ]; then
    echo "new $(export_one "$NEW")"
    echo "old $(export_one "$BASELINE_SERVER")"
  else
    echo "new $(export_one "$NEW")"
  fi
  for extra in ${EXTRA_SERVERS:-}; do
    echo "${extra%%=*} $(export_one "${extra#*=}")"
  done
done | tee "$work/results"
python3 - "$work/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if not line.startswith("#"):
        kind, *vals = line.split()
        rows.setdefault(kind, []).append([float(v) for v in vals])
med = lambda kind, i: statistics.median(r[i] for r in rows[kind])
copy = med("copy", 0)
print(f"\nmedians: COPY {copy:.2f} s; bare PUT to Azurite {med('put', 0):.2f} s "
      f"(Azurite CPU {med('put', 1):.2f} s) = {copy / med('put', 0):.2f} x COPY; "
      f"COPY's PostgreSQL CPU {med('copy', 1):.2f} s")
for kind in rows:
    if kind not in ("copy", "put"):
        print(f"{kind}: worker {med(kind, 0):.2f} s = {copy / med(kind, 0):.2f} x COPY, "
              f"{med('put', 0) / med(kind, 0):.2f} x bare PUT; peak RSS max "
              f"{max(r[2] for r in rows[kind]):.1f} MB (median {med(kind, 2):.1f}); "
              f"CPU: server {med(kind, 3):.2f} s, Azurite {med(kind, 4):.2f} s, PostgreSQL {med(kind, 6):.2f} s")
PY
