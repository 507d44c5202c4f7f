# Starts the servers the tests use — PostgreSQL and MariaDB from Debian's packages, Azurite from
# npm — in a throw-away directory on free loopback ports, and stops them on exit.
#
#   source scripts/services.sh; start_services "$work"
#
# Exports EXPORTAL_TEST_POSTGRES_URL, EXPORTAL_TEST_MYSQL_URL, EXPORTAL_TEST_AZURE_CONNECTION_STRING
# and the keyless Azurite's EXPORTAL_TEST_AZURE_HTTPS_{BLOB,QUEUE}_URL and EXPORTAL_TEST_AZURE_CA_FILE
# for the tests, and the servers' PIDs for stop_services (only these processes are ever stopped).
# shellcheck shell=bash

SERVICE_PIDS=()

start_postgres() {
  local dir=$1/postgres port
  chmod 755 "$1"
  port=$(free_port)
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  mkdir -p "$dir"
  chown postgres: "$dir"
  # PostgreSQL refuses to run as root: run it as the packages' postgres user.
  runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U exportal --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1
  runuser -u postgres -- "$bin/postgres" -D "$dir/data" -h 127.0.0.1 -p "$port" -k "$dir" \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off >"$dir/server.log" 2>&1 &
  for _ in $(seq 1 100); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
    sleep 0.2
  done
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" || { cat "$dir/server.log"; return 1; }
  # The postmaster's own PID (runuser's would not pass a signal on reliably).
  SERVICE_PIDS+=("$(head -n 1 "$dir/data/postmaster.pid")")
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U exportal exportal_test
  export EXPORTAL_TEST_POSTGRES_URL="postgres://exportal@127.0.0.1:$port/exportal_test"
  export EXPORTAL_TEST_POSTGRES_BIN="$bin"
}

start_mariadb() {
  local dir=$1/mariadb port
  port=$(free_port)
  mkdir -p "$dir"
  mariadb-install-db --no-defaults --user=root --datadir="$dir/data" --auth-root-authentication-method=normal \
    --skip-test-db >"$dir/install.log" 2>&1
  mariadbd --no-defaults --user=root --datadir="$dir/data" --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" \
    --bind-address=127.0.0.1 --port="$port" --skip-name-resolve --innodb-flush-log-at-trx-commit=0 \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci >"$dir/server.log" 2>&1 &
  SERVICE_PIDS+=($!)
  for _ in $(seq 1 150); do
    mariadb --no-defaults -uroot --socket="$dir/mysqld.sock" -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.2
  done
  mariadb --no-defaults -uroot --socket="$dir/mysqld.sock" -e "
    CREATE DATABASE exportal_test CHARACTER SET utf8mb4;
    CREATE USER 'exportal'@'127.0.0.1' IDENTIFIED BY 'exportal';
    GRANT ALL ON exportal_test.* TO 'exportal'@'127.0.0.1';" || { cat "$dir/server.log"; return 1; }
  export EXPORTAL_TEST_MYSQL_URL="mysql://exportal:exportal@127.0.0.1:$port/exportal_test"
}

start_services() {
  start_postgres "$1"
  start_mariadb "$1"
  start_azurite "$1"
  start_azurite_https "$1"
}

stop_services() {
  local pid
  for pid in "${SERVICE_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${SERVICE_PIDS[@]}"; do
    # Wait for a clean stop so that the data directories can be removed.
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  SERVICE_PIDS=()
}

# Azurite (npm, installed in end2end/) on free loopback ports. Exports
# EXPORTAL_TEST_AZURE_CONNECTION_STRING; the tests that stop Azurite start their own.
start_azurite() {
  local dir=$1/azurite bp qp tp
  bp=$(free_port); qp=$(free_port); tp=$(free_port)
  mkdir -p "$dir"
  end2end/node_modules/.bin/azurite --silent --location "$dir" --blobHost 127.0.0.1 --queueHost 127.0.0.1 \
    --tableHost 127.0.0.1 --blobPort "$bp" --queuePort "$qp" --tablePort "$tp" \
    --disableTelemetry >"$dir/azurite.log" 2>&1 &
  SERVICE_PIDS+=($!)
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$bp/" && curl -s -o /dev/null "http://127.0.0.1:$qp/" && break
    sleep 0.1
  done
  export EXPORTAL_TEST_AZURE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:$bp/devstoreaccount1;QueueEndpoint=http://127.0.0.1:$qp/devstoreaccount1;"
}

# A second Azurite for the keyless path: HTTPS with a certificate from a CA made here, for this
# run only, and `--oauth basic`, so that it takes Entra ID bearer tokens (it checks their
# claims, not their signature) and hands out user delegation keys. The tests trust that CA
# through EXPORTAL_AZURE_CA_FILE, never by switching verification off.
start_azurite_https() {
  local dir=$1/azurite-https bp qp tp
  bp=$(free_port); qp=$(free_port); tp=$(free_port)
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=Exportal test CA" -keyout ca-key.pem -out ca.pem \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
      -keyout key.pem -out server.csr
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
      -extfile server.ext -out cert.pem
  ) >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log"; return 1; }
  end2end/node_modules/.bin/azurite --silent --location "$dir/data" --blobHost 127.0.0.1 --queueHost 127.0.0.1 \
    --tableHost 127.0.0.1 --blobPort "$bp" --queuePort "$qp" --tablePort "$tp" \
    --oauth basic --cert "$dir/cert.pem" --key "$dir/key.pem" \
    --disableTelemetry >"$dir/azurite.log" 2>&1 &
  SERVICE_PIDS+=($!)
  for _ in $(seq 1 100); do
    curl -s -o /dev/null --cacert "$dir/ca.pem" "https://127.0.0.1:$bp/" &&
      curl -s -o /dev/null --cacert "$dir/ca.pem" "https://127.0.0.1:$qp/" && break
    sleep 0.1
  done
  export EXPORTAL_TEST_AZURE_HTTPS_BLOB_URL="https://127.0.0.1:$bp/devstoreaccount1"
  export EXPORTAL_TEST_AZURE_HTTPS_QUEUE_URL="https://127.0.0.1:$qp/devstoreaccount1"
  export EXPORTAL_TEST_AZURE_CA_FILE="$dir/ca.pem"
}
