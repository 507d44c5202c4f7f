# The benchmark's table, the same rows in PostgreSQL and SQLite, for the scripts in bench/.
# shellcheck shell=bash

# The columns every benchmark query reads.
QUERY_COLUMNS="id, customer, status, total, created_at, note"

# create_bench_data ROWS DIR: the `bench` table with ROWS rows in the PostgreSQL that
# scripts/services.sh started ($PSQL, $EXPORTAL_TEST_POSTGRES_URL) and in DIR/bench.db.
create_bench_data() {
  local ROWS=$1 work=$2
  "$PSQL" -q -v ON_ERROR_STOP=1 "$EXPORTAL_TEST_POSTGRES_URL" <<SQL
CREATE TABLE bench (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, status TEXT NOT NULL,
                    total NUMERIC(12,2) NOT NULL, created_at TIMESTAMPTZ NOT NULL, note TEXT);
INSERT INTO bench
SELECT i, 'Customer ' || (i % 10007), (ARRAY['pending','paid','shipped','cancelled'])[1 + i % 4],
       ((i * 7919) % 100000) / 100.0, timestamptz '2024-01-01 00:00:00+00' + (i % 31536000) * interval '1 second',
       CASE WHEN i % 10 = 0 THEN 'Gift, "wrapped"' WHEN i % 3 = 0 THEN NULL ELSE 'ok' END
FROM generate_series(1::bigint, $ROWS) AS s(i);
ANALYZE bench;
SQL
  sqlite3 "$work/bench.db" <<SQL
PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
CREATE TABLE bench (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, status TEXT NOT NULL,
                    total NUMERIC NOT NULL, created_at DATETIME NOT NULL, note TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $ROWS)
INSERT INTO bench SELECT i, 'Customer ' || (i % 10007),
  CASE i % 4 WHEN 0 THEN 'pending' WHEN 1 THEN 'paid' WHEN 2 THEN 'shipped' ELSE 'cancelled' END,
  ((i * 7919) % 100000) / 100.0, datetime(1704067200 + i % 31536000, 'unixepoch'),
  CASE WHEN i % 10 = 0 THEN 'Gift, "wrapped"' WHEN i % 3 = 0 THEN NULL ELSE 'ok' END FROM n;
SQL
}

# write_bench_datasets FILE DIR: the datasets over that table (pg, lite, and `tiny`, one row for
# latency; SQLite's file is DIR/bench.db), each taking `max_id`, the highest id exported.
write_bench_datasets() {
  local work=$2
  cat > "$1" <<TOML
[sources.pg]
url = "$EXPORTAL_TEST_POSTGRES_URL"
[sources.lite]
url = "sqlite://$work/bench.db"

[[datasets]]
id = "pg"
title = "bench (PostgreSQL)"
source = "pg"
sql = "SELECT $QUERY_COLUMNS FROM bench WHERE id <= :max_id ORDER BY id"
[[datasets.params]]
name = "max_id"
type = "integer"
required = true

[[datasets]]
id = "tiny"
title = "one row (latency)"
source = "lite"
sql = "SELECT id FROM bench WHERE id = :max_id"
[[datasets.params]]
name = "max_id"
type = "integer"
required = true

[[datasets]]
id = "lite"
title = "bench (SQLite)"
source = "lite"
sql = "SELECT $QUERY_COLUMNS FROM bench WHERE id <= :max_id ORDER BY id"
[[datasets.params]]
name = "max_id"
type = "integer"
required = true
TOML
}
