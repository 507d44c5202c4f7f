#!/usr/bin/env bash
# Benchmark: CSV export of the same table through Exportal's running pipeline (release build,
# local store) against the databases' own CSV dumps, side by side in one run on one machine.
#
#   bench/export.sh [ROWS]        (default 5000000; also runs 100000 for the memory figure)
#   RUNS=N bench/export.sh        (default 3: each baseline and export runs N times, alternating;
#                                  the table shows medians, the range in brackets, and the
#                                  highest peak RSS)
#   BASELINE_SERVER=PATH bench/export.sh
#                                 also runs the PostgreSQL and SQLite exports with another build
#                                 of the server (an earlier commit's), alternating with this one,
#                                 and prints this build's speed against it
#
# Baselines: PostgreSQL's COPY (query) TO STDOUT (FORMAT csv) through psql into a file, and
# `sqlite3 -csv` into a file. Exportal: a job submitted over the REST API; time from the
# worker's start to the stored result (the job's started_at → finished_at) and wall time from
# submit to "succeeded". Memory: the server's peak RSS (VmHWM) after each export, in a fresh
# server process per size. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source bench/lib.sh
ROWS=${1:-5000000}
SMALL=100000

scripts/tools.sh test >/dev/null
command -v sqlite3 >/dev/null || { echo "sqlite3 is needed (apt-get install sqlite3)"; exit 1; }

step "building the release server"
cargo leptos build --release >/dev/null 2>&1 || cargo leptos build --release

work=$(mktemp -d "${TMPDIR:-/tmp}/exportal-bench.XXXXXX")
source scripts/services.sh
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; stop_services; rm -rf "$work"; }
trap cleanup EXIT
step "starting PostgreSQL and Azurite"
start_postgres "$work"
start_azurite "$work"
PSQL="$EXPORTAL_TEST_POSTGRES_BIN/psql"
[ -x "$PSQL" ] || PSQL=psql

step "creating $ROWS rows in PostgreSQL and SQLite"
create_bench_data "$ROWS" "$work"

write_bench_datasets "$work/datasets.toml" "$work"

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# STORAGE=local|azure and ROLE=all|web select the instance; ROLE=web also starts a worker.
STORAGE=local
ROLE=all
worker_pid=
start_server() {
  local port storage_args=()
  port=$(free_port)
  rm -rf "$work/data" "$work/worker-data"
  if [ "$STORAGE" = azure ]; then
    local tag
    tag=b$(date +%s%N | tail -c 9)
    storage_args=(--storage azure --azure-connection-string "$EXPORTAL_TEST_AZURE_CONNECTION_STRING"
      --azure-queue "$tag" --azure-files-container "$tag" --azure-jobs-container "${tag}j")
  fi
  local common=(--datasets "$work/datasets.toml" --auth header --row-cap 100000000 --csv-line-ending lf --rate-burst 100000 "${storage_args[@]}")
  LEPTOS_SITE_ROOT=target/site LEPTOS_OUTPUT_NAME=exportal RUST_LOG=warn \
    "${SERVER_BIN:-target/release/server}" --addr "127.0.0.1:$port" --data-dir "$work/data" --role "$ROLE" "${common[@]}" >"$work/server.log" 2>&1 &
  server_pid=$!
  if [ "$ROLE" = web ]; then
    LEPTOS_OUTPUT_NAME=exportal RUST_LOG=warn target/release/server --addr "127.0.0.1:$(free_port)" \
      --data-dir "$work/worker-data" --role worker "${common[@]}" >"$work/worker.log" 2>&1 &
    worker_pid=$!
  fi
  BASE="http://127.0.0.1:$port"
  for _ in $(seq 1 200); do curl -fs "$BASE/healthz" >/dev/null && return; sleep 0.1; done
  cat "$work/server.log"; exit 1
}

stop_server() {
  kill "$server_pid" $worker_pid 2>/dev/null
  wait "$server_pid" $worker_pid 2>/dev/null || true
  server_pid= worker_pid=
}

# exportal DATASET MAX_ID → prints "worker_seconds wall_seconds rows bytes peak_rss_mb"
exportal() {
  start_server
  trap 'kill "$server_pid" $worker_pid 2>/dev/null' EXIT
  local t0 t1 id job status
  t0=$(now)
  id=$(curl -fs -H 'x-forwarded-user: bench' -H 'content-type: application/json' \
        -d "{\"dataset\":\"$1\",\"format\":\"csv\",\"params\":{\"max_id\":$2}}" "$BASE/api/v1/exports" |
       python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  while :; do
    job=$(curl -fs -H 'x-forwarded-user: bench' "$BASE/api/v1/exports/$id")
    status=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["status"])' "$job")
    case $status in succeeded) break ;; failed|cancelled) echo "export $status: $job" >&2; exit 1 ;; esac
    sleep 0.05
  done
  t1=$(now)
  local rss
  rss=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status")
  python3 - "$job" "$(secs "$t0" "$t1")" "$rss" <<'PY'
import json, sys
from datetime import datetime
job = json.loads(sys.argv[1])
d = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
worker = (d(job["finished_at"]) - d(job["started_at"])).total_seconds()
print(f'{worker:.2f} {sys.argv[2]} {job["file"]["rows"]} {job["file"]["bytes"]} {sys.argv[3]}')
PY
  stop_server
}

timed() { local t0 t1; t0=$(now); "$@"; t1=$(now); secs "$t0" "$t1"; }

RUNS=${RUNS:-3}
step "running the exports ($ROWS rows, $RUNS times each, alternating; and $SMALL rows for memory)"
copy_runs=() pg_runs=() sqlite_runs=() lite_runs=() old_pg_runs=() old_lite_runs=()
for _ in $(seq 1 "$RUNS"); do
  copy_runs+=("$(timed sh -c "\"$PSQL\" -q \"$EXPORTAL_TEST_POSTGRES_URL\" -c \"COPY (SELECT $QUERY_COLUMNS FROM bench WHERE id <= $ROWS ORDER BY id) TO STDOUT (FORMAT csv, HEADER)\" > \"$work/copy.csv\"")")
  pg_runs+=("$(exportal pg "$ROWS")")
  if [ -n "${BASELINE_SERVER:-}" ]; then old_pg_runs+=("$(SERVER_BIN=$BASELINE_SERVER exportal pg "$ROWS")"); fi
  sqlite_runs+=("$(timed sh -c "sqlite3 -csv -header \"$work/bench.db\" \"SELECT $QUERY_COLUMNS FROM bench WHERE id <= $ROWS ORDER BY id\" > \"$work/sqlite.csv\"")")
  lite_runs+=("$(exportal lite "$ROWS")")
  if [ -n "${BASELINE_SERVER:-}" ]; then old_lite_runs+=("$(SERVER_BIN=$BASELINE_SERVER exportal lite "$ROWS")"); fi
done
# summary FIELD RUN... → "median [min–max]" of one whitespace-separated field of the runs
summary() {
  local field=$1; shift
  python3 - "$field" "$@" <<'PY'
import statistics, sys
field = int(sys.argv[1]); values = sorted(float(r.split()[field]) for r in sys.argv[2:])
print(f"{statistics.median(values):.2f}" if len(values) == 1 else f"{statistics.median(values):.2f} [{values[0]:.2f}–{values[-1]:.2f}]")
PY
}
median() { summary "$@" | cut -d' ' -f1; }
highest() { printf '%s\n' "${@:2}" | awk -v f="$1" '{ v = $(f + 1); if (v > m) m = v } END { printf "%.1f", m }'; }
copy_s=$(median 0 "${copy_runs[@]}")
sqlite_s=$(median 0 "${sqlite_runs[@]}")
pg_worker=$(median 0 "${pg_runs[@]}") lite_worker=$(median 0 "${lite_runs[@]}")
read -r _ _ pg_rows pg_bytes _ <<<"${pg_runs[0]}"
read -r _ _ lite_rows lite_bytes _ <<<"${lite_runs[0]}"
pg_rss=$(highest 4 "${pg_runs[@]}") lite_rss=$(highest 4 "${lite_runs[@]}")
read -r _ _ _ _ pg_small_rss <<<"$(exportal pg "$SMALL")"
read -r _ _ _ _ lite_small_rss <<<"$(exportal lite "$SMALL")"
read -r az_worker az_wall az_rows az_bytes az_rss <<<"$(STORAGE=azure exportal pg "$ROWS")"
read -r _ _ _ _ az_small_rss <<<"$(STORAGE=azure exportal pg "$SMALL")"

# latency STORAGE ROLE → "p50 p95" of submit → worker start (the job's created_at → started_at)
# over 50 one-row jobs, submitted one after another.
latency() {
  STORAGE=$1 ROLE=$2 start_server
  trap 'kill "$server_pid" $worker_pid 2>/dev/null' EXIT
  sleep 1
  local ids=() id
  for _ in $(seq 1 50); do
    id=$(curl -fs -H 'x-forwarded-user: bench' -H 'content-type: application/json' \
          -d '{"dataset":"tiny","format":"csv","params":{"max_id":7}}' "$BASE/api/v1/exports" |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    while :; do
      curl -fs -H 'x-forwarded-user: bench' "$BASE/api/v1/exports/$id" | grep -q '"status":"succeeded"' && break
      sleep 0.02
    done
    ids+=("$id")
  done
  curl -fs -H 'x-forwarded-user: bench' "$BASE/api/v1/exports" | python3 -c '
import json, sys
from datetime import datetime
d = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
ms = sorted((d(j["started_at"]) - d(j["created_at"])).total_seconds() * 1000 for j in json.load(sys.stdin))
print(f"{ms[len(ms) // 2]:.0f} {ms[int(len(ms) * 0.95) - 1]:.0f}")'
  stop_server
}
read -r lat_local_50 lat_local_95 <<<"$(latency local all)"
read -r lat_az_50 lat_az_95 <<<"$(latency azure all)"
read -r lat_split_50 lat_split_95 <<<"$(latency azure web)"

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
rate() { python3 -c "print(f'{$1 / $2 / 1e6:.2f}')"; }
echo
echo "CSV export of $ROWS rows ($QUERY_COLUMNS), $(nproc) cores, $(date -u +%Y-%m-%d);"
echo "seconds: median of $RUNS alternating runs [lowest–highest]; speed: baseline median / Exportal median"
echo
echo "| run | seconds | M rows/s | file MB | speed vs baseline | server peak RSS, $SMALL rows | server peak RSS, $ROWS rows |"
echo "|---|---|---|---|---|---|---|"
echo "| psql COPY (baseline) | $(summary 0 "${copy_runs[@]}") | $(rate "$ROWS" "$copy_s") | $(python3 -c "print(f'{$(stat -c %s "$work/copy.csv")/1e6:.0f}')") | 1.00 | | |"
echo "| Exportal, PostgreSQL → local store | $(summary 0 "${pg_runs[@]}"), wall $(median 1 "${pg_runs[@]}") | $(rate "$pg_rows" "$pg_worker") | $(python3 -c "print(f'{$pg_bytes/1e6:.0f}')") | $(ratio "$copy_s" "$pg_worker") × COPY | $pg_small_rss MB | $pg_rss MB |"
echo "| sqlite3 -csv (baseline) | $(summary 0 "${sqlite_runs[@]}") | $(rate "$ROWS" "$sqlite_s") | $(python3 -c "print(f'{$(stat -c %s "$work/sqlite.csv")/1e6:.0f}')") | 1.00 | | |"
echo "| Exportal, SQLite → local store | $(summary 0 "${lite_runs[@]}"), wall $(median 1 "${lite_runs[@]}") | $(rate "$lite_rows" "$lite_worker") | $(python3 -c "print(f'{$lite_bytes/1e6:.0f}')") | $(ratio "$sqlite_s" "$lite_worker") × sqlite3 | $lite_small_rss MB | $lite_rss MB |"
if [ -n "${BASELINE_SERVER:-}" ]; then
  old_pg=$(median 0 "${old_pg_runs[@]}") old_lite=$(median 0 "${old_lite_runs[@]}")
  echo "| baseline build, PostgreSQL → local store | $(summary 0 "${old_pg_runs[@]}") | | | $(ratio "$copy_s" "$old_pg") × COPY; this build $(ratio "$old_pg" "$pg_worker") × baseline build | | $(highest 4 "${old_pg_runs[@]}") MB |"
  echo "| baseline build, SQLite → local store | $(summary 0 "${old_lite_runs[@]}") | | | $(ratio "$sqlite_s" "$old_lite") × sqlite3; this build $(ratio "$old_lite" "$lite_worker") × baseline build | | $(highest 4 "${old_lite_runs[@]}") MB |"
fi
echo "| Exportal, PostgreSQL → Azurite (blob) | $az_worker (wall $az_wall) | $(rate "$az_rows" "$az_worker") | $(python3 -c "print(f'{$az_bytes/1e6:.0f}')") | $(ratio "$copy_s" "$az_worker") × COPY | $az_small_rss MB | $az_rss MB |"
echo
echo "Submit → worker start (job created_at → started_at), 50 one-row jobs one after another:"
echo
echo "| deployment | p50 ms | p95 ms |"
echo "|---|---|---|"
echo "| role all, local store | $lat_local_50 | $lat_local_95 |"
echo "| role all, Azurite | $lat_az_50 | $lat_az_95 |"
echo "| web + separate worker, Azurite | $lat_split_50 | $lat_split_95 |"
