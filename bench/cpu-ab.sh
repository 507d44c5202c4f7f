#!/usr/bin/env bash
# A/B of two release builds of the server by the CPU time the server process itself spends on
# one CSV export (user + system, from /proc/PID/stat), which a busy 2-core machine disturbs far
# less than wall time. Alternates the builds, a fresh process for every export.
#
#   bench/cpu-ab.sh OLD_BINARY NEW_BINARY [ROWS] [PAIRS]     (defaults: 3000000 rows, 5 pairs)
#
# Prints one line per export ("dataset build cpu_seconds worker_seconds"), then the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source bench/lib.sh
OLD=$1 NEW=$2 ROWS=${3:-3000000} PAIRS=${4:-5}
work=$(mktemp -d "${TMPDIR:-/tmp}/exportal-ab.XXXXXX")
source scripts/services.sh
cleanup() { stop_services; rm -rf "$work"; }
trap cleanup EXIT
start_postgres "$work"
PSQL="$EXPORTAL_TEST_POSTGRES_BIN/psql"
create_bench_data "$ROWS" "$work"
write_bench_datasets "$work/datasets.toml" "$work"

tick=$(getconf CLK_TCK)
# one BINARY DATASET → "cpu_seconds worker_seconds" of one export in a fresh server process
one() {
  local port dir pid id job before after
  port=$(free_port); dir=$(mktemp -d "$work/data.XXXXXX")
  LEPTOS_OUTPUT_NAME=exportal RUST_LOG=warn "$1" --addr "127.0.0.1:$port" --data-dir "$dir" \
    --datasets "$work/datasets.toml" --auth header --row-cap 100000000 --csv-line-ending lf >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  id=$(curl -fs -H 'x-forwarded-user: ab' -H 'content-type: application/json' \
    -d "{\"dataset\":\"$2\",\"format\":\"csv\",\"params\":{\"max_id\":$ROWS}}" "http://127.0.0.1:$port/api/v1/exports" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  while :; do
    job=$(curl -fs -H 'x-forwarded-user: ab' "http://127.0.0.1:$port/api/v1/exports/$id")
    case $job in *'"status":"succeeded"'*) break ;; *'"status":"failed"'*) echo "$job" >&2; exit 1 ;; esac
    sleep 0.05
  done
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$job" "$before" "$after" "$tick" <<'PY'
import json, sys
from datetime import datetime
j = json.loads(sys.argv[1]); d = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
print(f'{cpu:.2f} {(d(j["finished_at"]) - d(j["started_at"])).total_seconds():.2f}')
PY
}

lines=()
for ds in pg lite; do
  for _ in $(seq 1 "$PAIRS"); do
    lines+=("$ds old $(one "$OLD" "$ds")"); echo "${lines[-1]}"
    lines+=("$ds new $(one "$NEW" "$ds")"); echo "${lines[-1]}"
  done
done
printf '%s\n' "${lines[@]}" > "$work/lines"
python3 - "$work/lines" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for ds in ("pg", "lite"):
    old = statistics.median(float(r[2]) for r in rows if r[:2] == [ds, "old"])
    new = statistics.median(float(r[2]) for r in rows if r[:2] == [ds, "new"])
    print(f"{ds}: server CPU seconds, median: old {old:.2f}, new {new:.2f} (new/old {new / old:.2f})")
PY
