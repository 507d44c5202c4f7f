//! Every driver through the real pipeline into every format, parsed back and compared with
//! the rows in the database: NULLs, Unicode, quotes, newlines, decimals, timestamps, booleans
//! and formula-like text. PostgreSQL and MariaDB are the servers scripts/test.sh starts.

use crate::support::service_url;
use app::jobs::{ExportFormat, Job, JobStatus};
use serde_json::{json, Value};
use server::blobs::local::LocalBlobStore;
use server::catalog::Catalog;
use server::export::{self, Counters, ExportContext, ExportFailure};
use sqlx::Executor;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The rows every database holds, as NDJSON reads them back.
fn expected(decimals_exact: bool) -> Vec<Value> {
    let dec = |exact: &str, float: f64| {
        if decimals_exact {
            json!(exact)
        } else {
            json!(float)
        }
    };
    vec![
        json!({"id": 1, "name": "Zoë \"Z\" O'Brien, Jr.", "note": "line one\nline two", "amount": dec("12345.67", 12345.67),
               "ratio": 0.5, "active": true, "born": "2024-02-29", "seen_at": "2024-03-01T12:30:45"}),
        json!({"id": 2, "name": "=HYPERLINK(\"http://evil\")", "note": null, "amount": dec("-0.50", -0.5),
               "ratio": -1.25, "active": false, "born": null, "seen_at": null}),
        json!({"id": 3, "name": "日本語 🚀", "note": "@SUM(A1), \"quoted\"", "amount": if decimals_exact { json!("0.00") } else { json!(0) },
               "ratio": null, "active": null, "born": "1999-12-31", "seen_at": "1999-12-31T23:59:59"}),
    ]
}

const INSERT: &str = "INSERT INTO {t} (id, name, note, amount, ratio, active, born, seen_at) VALUES
 (1, 'Zoë \"Z\" O''Brien, Jr.', 'line one\nline two', 12345.67, 0.5, TRUE, '2024-02-29', '2024-03-01 12:30:45'),
 (2, '=HYPERLINK(\"http://evil\")', NULL, -0.50, -1.25, FALSE, NULL, NULL),
 (3, '日本語 🚀', '@SUM(A1), \"quoted\"', 0, NULL, NULL, '1999-12-31', '1999-12-31 23:59:59')";

fn table_name() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

fn catalog_toml(url: &str, table: &str) -> String {
    format!(
        r#"
[sources.db]
url = "{url}"

[[datasets]]
id = "things"
title = "Things"
source = "db"
sql = "SELECT id, name, note, amount, ratio, active, born, seen_at FROM {table} WHERE id >= :min_id ORDER BY id"

[[datasets.params]]
name = "min_id"
type = "integer"
required = true
"#
    )
}

fn job(format: ExportFormat, columns: Vec<String>) -> Job {
    let mut job = Job::queued(
        uuid::Uuid::new_v4().simple().to_string(),
        "alice",
        "things",
        format,
        columns,
    );
    job.status = JobStatus::Running;
    job.params = [("min_id".to_string(), json!(1))].into_iter().collect();
    job.attempts = 1;
    job.revision = 1;
    job
}

/// Exports the table in every format and checks each file against the expected rows.
async fn check_every_format(catalog_text: String, decimals_exact: bool) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(
        Catalog::from_toml(&catalog_text, dir.path())
            .await
            .expect("catalogue loads"),
    );
    let info = catalog.get("things").unwrap().info.clone();
    let kinds: Vec<Value> = info
        .columns
        .iter()
        .map(|c| serde_json::to_value(&c.kind).unwrap())
        .collect();
    assert_eq!(kinds[0], "integer");
    assert_eq!(kinds[1], "text");
    let columns: Vec<String> = info.columns.iter().map(|c| c.name.clone()).collect();
    let files = dir.path().join("files");
    let ctx = ExportContext {
        catalog,
        blobs: Arc::new(LocalBlobStore::open(&files).await.unwrap()),
        temp_dir: dir.path().to_path_buf(),
        row_cap: 1000,
        csv_crlf: true,
    };
    let expected = expected(decimals_exact);
    for format in ExportFormat::ALL {
        let job = job(format, columns.clone());
        let out = export::run(
            &ctx,
            &job,
            &CancellationToken::new(),
            Arc::new(Counters::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(out.rows, 3, "{format}");
        let bytes = std::fs::read(files.join(export::blob_name(&job))).unwrap();
        assert_eq!(bytes.len() as u64, out.bytes);
        match format {
            ExportFormat::Ndjson => {
                let rows: Vec<Value> = std::str::from_utf8(&bytes)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                assert_eq!(rows, expected, "ndjson");
            }
            ExportFormat::Json => {
                let rows: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(rows, expected, "json");
            }
            ExportFormat::Csv => {
                let mut reader = csv::Reader::from_reader(&bytes[..]);
                assert_eq!(
                    reader.headers().unwrap().iter().collect::<Vec<_>>(),
                    columns
                );
                let rows: Vec<Vec<String>> = reader
                    .records()
                    .map(|r| r.unwrap().iter().map(String::from).collect())
                    .collect();
                for (row, want) in rows.iter().zip(&expected) {
                    for (cell, column) in row.iter().zip(&columns) {
                        let want = &want[column];
                        let text = match want {
                            Value::Null => String::new(),
                            Value::String(s)
                                if ["=", "+", "-", "@"].iter().any(|p| s.starts_with(p))
                                    && column != "amount" =>
                            {
                                format!("'{s}")
                            }
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        assert_eq!(cell, &text, "csv column {column}");
                    }
                }
                assert_eq!(rows.len(), 3);
            }
            ExportFormat::Xlsx => {
                use calamine::{Data, Reader};
                let mut book = calamine::Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
                let range = book.worksheet_range("Data").unwrap();
                let rows: Vec<&[Data]> = range.rows().collect();
                assert_eq!(rows.len(), 4);
                assert_eq!(rows[1][0], Data::Float(1.0));
                assert_eq!(rows[1][1], Data::String("Zoë \"Z\" O'Brien, Jr.".into()));
                assert_eq!(rows[1][3], Data::Float(12345.67));
                assert_eq!(rows[1][5], Data::Bool(true));
                assert!(
                    matches!(rows[1][6], Data::DateTime(_)),
                    "date cell: {:?}",
                    rows[1][6]
                );
                assert!(
                    matches!(rows[1][7], Data::DateTime(_)),
                    "datetime cell: {:?}",
                    rows[1][7]
                );
                assert_eq!(
                    rows[2][1],
                    Data::String("=HYPERLINK(\"http://evil\")".into())
                );
                assert_eq!(rows[2][2], Data::Empty);
                assert_eq!(rows[3][1], Data::String("日本語 🚀".into()));
            }
        }
    }

    // A query the database rejects at run time is a permanent failure with its reason.
    let mut bad = job(ExportFormat::Csv, columns.clone());
    bad.params.insert("min_id".into(), json!(1));
    bad.columns = vec!["nope".into()];
    let e = export::run(
        &ctx,
        &bad,
        &CancellationToken::new(),
        Arc::new(Counters::default()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            ExportFailure::Permanent {
                code: "dataset_changed",
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn sqlite_rows_survive_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("things.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let table = table_name();
    pool.execute(format!(
        "CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT, amount NUMERIC, ratio REAL, active BOOLEAN, born DATE, seen_at DATETIME)"
    ).as_str()).await.unwrap();
    pool.execute(INSERT.replace("{t}", &table).replace("\\n", "\n").as_str())
        .await
        .unwrap();
    pool.close().await;
    // SQLite has no decimal type: NUMERIC values come back as numbers.
    check_every_format(
        catalog_toml(&format!("sqlite://{}", db.display()), &table),
        false,
    )
    .await;
}

#[tokio::test]
async fn postgres_rows_survive_every_format() {
    let url = service_url("EXPORTAL_TEST_POSTGRES_URL");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let table = table_name();
    pool.execute(format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT NOT NULL, note TEXT, amount NUMERIC(12,2), ratio DOUBLE PRECISION, active BOOLEAN, born DATE, seen_at TIMESTAMP)"
    ).as_str()).await.unwrap();
    pool.execute(
        INSERT
            .replace("{t}", &table)
            .replace("'line one\\nline two'", "E'line one\\nline two'")
            .as_str(),
    )
    .await
    .unwrap();
    check_every_format(catalog_toml(&url, &table), true).await;
    pool.execute(format!("DROP TABLE {table}").as_str())
        .await
        .unwrap();
}

#[tokio::test]
async fn mariadb_rows_survive_every_format() {
    let url = service_url("EXPORTAL_TEST_MYSQL_URL");
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    let table = table_name();
    pool.execute(format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT NOT NULL, note TEXT, amount DECIMAL(12,2), ratio DOUBLE, active BOOLEAN, born DATE, seen_at DATETIME) CHARACTER SET utf8mb4"
    ).as_str()).await.unwrap();
    pool.execute(INSERT.replace("{t}", &table).as_str())
        .await
        .unwrap();
    check_every_format(catalog_toml(&url, &table), true).await;
    pool.execute(format!("DROP TABLE {table}").as_str())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_start_up_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = catalog_toml(
        &format!("postgres://nobody:secret@127.0.0.1:{port}/db"),
        "t",
    )
    .replace("[sources.db]", "[sources.db]\nconnect_timeout_secs = 2");
    let e = Catalog::from_toml(&toml, std::path::Path::new("."))
        .await
        .err()
        .expect("must fail");
    assert!(
        e.contains("source `db`") && e.contains("not reachable"),
        "{e}"
    );
    assert!(!e.contains("secret"), "the password must not leak: {e}");
}

#[tokio::test]
async fn datasets_file_mistakes_name_the_dataset_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    pool.execute("CREATE TABLE t (id INTEGER, owner TEXT)")
        .await
        .unwrap();
    pool.close().await;
    let base = format!("[sources.s]\nurl = \"sqlite://{}\"\n", db.display());
    let cases = [
        ("[[datasets]]\nid = \"Bad Id\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t\"\n", "dataset `Bad Id`: key `id`"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"nope\"\nsql = \"SELECT id FROM t\"\n", "dataset `a`: key `source`: no source named `nope` (declared: s)"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t WHERE id = :x\"\n", "dataset `a`: key `sql`: placeholder :x is not a declared parameter"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT nope FROM t\"\n", "dataset `a`: key `sql`"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t\"\nformats = [\"pdf\"]\n", "key `formats`: unknown format `pdf`"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t WHERE id = :k\"\n[[datasets.params]]\nname = \"k\"\ntype = \"enum\"\n", "param `k`: an enum needs `values"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t WHERE owner = :user\"\n[[datasets.params]]\nname = \"user\"\ntype = \"string\"\n", "reserved"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t\"\ncolour = 1\n", "unknown field `colour`"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t WHERE owner = 'x :user\"\n", "dataset `a`: key `sql`: an unterminated string literal (at line 1, column 32)"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t /* :user\"\n", "dataset `a`: key `sql`: an unterminated /* comment"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t WHERE owner = ?\"\n", "dataset `a`: key `sql`: the SQL has a positional parameter `?`"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t\"\njson_columns = [\"doc\"]\n", "dataset `a`: key `json_columns`: the query has no column `doc`"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t\"\n[datasets.labels]\nname = \"Name\"\n", "dataset `a`: key `labels`: the query has no column `name`"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t\"\n[datasets.labels]\nid = \" \"\n", "dataset `a`: key `labels.id`: a display name has 1 to 200 characters"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t\"\n[datasets.defaults]\ntime_zone = \"Europe/Atlantis\"\n", "dataset `a`: key `defaults.time_zone`: unknown time zone `Europe/Atlantis`"),
        ("[[datasets]]\nid = \"a\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t\"\n[datasets.defaults]\ndelimiter = \":\"\n", "unknown variant `:`"),
    ];
    for (dataset, expected) in cases {
        let e = Catalog::from_toml(&format!("{base}{dataset}"), dir.path())
            .await
            .err()
            .expect("must fail");
        assert!(e.contains(expected), "{e:?} should contain {expected:?}");
    }
    // :user binds the caller's identity without being declared.
    let ok = format!("{base}[[datasets]]\nid = \"mine\"\ntitle = \"T\"\nsource = \"s\"\nsql = \"SELECT id FROM t WHERE owner = :user\"\n");
    let catalog = Catalog::from_toml(&ok, dir.path()).await.unwrap();
    assert!(catalog.get("mine").unwrap().info.params.is_empty());
}

/// Computes for several seconds before its one row (bounded, so a broken interrupt fails the
/// tests below instead of hanging them).
const SLOW_SQLITE: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000000) SELECT max(i) FROM n";

async fn slow_sqlite_source(
    dir: &std::path::Path,
    statement_timeout: std::time::Duration,
) -> Arc<dyn server::source::Source> {
    let db = dir.join("slow.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    pool.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER)")
        .await
        .unwrap();
    pool.close().await;
    let options = server::source::SourceOptions {
        // One query at a time, so a query that keeps running blocks the next one.
        max_connections: 1,
        connect_timeout: std::time::Duration::from_secs(5),
        statement_timeout,
    };
    server::source::connect("lite", &format!("sqlite://{}", db.display()), &options)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_sqlite_query_past_its_statement_timeout_fails_with_a_reason() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let source = slow_sqlite_source(dir.path(), std::time::Duration::from_secs(1)).await;
    let first = source.rows(SLOW_SQLITE, &[]).next().await.unwrap();
    let e = first.expect_err("the query is stopped");
    assert!(e.message.contains("statement timeout"), "{e}");
    assert_eq!(e.kind, server::source::SourceErrorKind::Query);
}

#[tokio::test]
async fn an_abandoned_sqlite_query_stops_and_frees_its_connection() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let source = slow_sqlite_source(dir.path(), std::time::Duration::ZERO).await;
    {
        let mut rows = source.rows(SLOW_SQLITE, &[]);
        // Long enough for the query to start computing; then the reader goes away (a cancel).
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(300), rows.next()).await;
        assert!(pending.is_err(), "no row yet");
    }
    // Without the interrupt the query would hold the only connection for seconds and this
    // would wait for a connection until the 5 s connect timeout.
    source
        .ping()
        .await
        .expect("the abandoned query gave its connection back");
}

async fn postgres_source(
    max_connections: u32,
    statement_timeout: std::time::Duration,
) -> Arc<dyn server::source::Source> {
    let options = server::source::SourceOptions {
        max_connections,
        connect_timeout: std::time::Duration::from_secs(5),
        statement_timeout,
    };
    let url = service_url("EXPORTAL_TEST_POSTGRES_URL");
    server::source::connect("pg", &url, &options).await.unwrap()
}

async fn first_column(
    source: &dyn server::source::Source,
    sql: &str,
    params: &[server::source::Param],
) -> Result<Vec<server::source::Value>, server::source::SourceError> {
    use futures::TryStreamExt;
    source
        .rows(sql, params)
        .map_ok(|row| row[0].clone())
        .try_collect()
        .await
}

/// PostgreSQL's rows come through `COPY`, which takes no bound parameters: the values are
/// bound to settings of the COPY's transaction and read back in the statement. They must select
/// exactly what the same values bound to a prepared statement select, and text must never
/// become SQL.
#[tokio::test]
async fn postgres_parameters_select_the_same_rows_as_bound_ones() {
    use server::source::{Param, Value as V};
    let url = service_url("EXPORTAL_TEST_POSTGRES_URL");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let table = table_name();
    pool.execute(
        format!(
            "CREATE TABLE {table} (id INT, t TEXT, n BIGINT, f FLOAT8, b BOOL, d DATE, ts TIMESTAMP);
             INSERT INTO {table} VALUES
              (1, E'O''Brien \\\\ $1 :x', -9223372036854775808, -0.5, NULL, '2024-02-29', '2024-02-29 23:59:01.00025'),
              (2, ''');DROP TABLE {table};--', 7, 1e300, FALSE, '0001-03-01 BC', '0001-03-01 10:00:00 BC'),
              (3, '日本語 🚀', 0, 'Infinity', NULL, NULL, NULL)"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let day = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
    let sql = format!(
        "SELECT id FROM {table} WHERE (t = $1 OR n = $2 OR f = $3 OR b = $4 OR d = $5 OR ts = $6) \
         AND ($7::text IS NULL) ORDER BY id"
    );
    // Every parameter has a value that matches nothing, so each case matches on the ones it
    // changes. (A bound NULL is typed `text`, which `n = $2` would reject.)
    let none = || {
        vec![
            Param::Text("nothing".into()),
            Param::Int(12345),
            Param::Float(3.0),
            Param::Bool(true),
            Param::Date(day(1970, 1, 1)),
            Param::DateTime(day(1970, 1, 1).and_hms_opt(0, 0, 0).unwrap()),
            Param::Null,
        ]
    };
    let with = |changes: Vec<(usize, Param)>| {
        let mut params = none();
        for (i, p) in changes {
            params[i] = p;
        }
        params
    };
    let cases: Vec<(Vec<Param>, Vec<i64>)> = vec![
        (
            with(vec![(0, Param::Text("O'Brien \\ $1 :x".into()))]),
            vec![1],
        ),
        (
            with(vec![(
                0,
                Param::Text("');DROP TABLE x;--".replace('x', &table)),
            )]),
            vec![2],
        ),
        (
            with(vec![
                (1, Param::Int(i64::MIN)),
                (2, Param::Float(f64::INFINITY)),
            ]),
            vec![1, 3],
        ),
        (
            with(vec![
                (0, Param::Text("日本語 🚀".into())),
                (2, Param::Float(-0.5)),
            ]),
            vec![1, 3],
        ),
        (with(vec![(3, Param::Bool(false))]), vec![2]),
        (
            with(vec![
                (4, Param::Date(day(0, 3, 1))),
                (
                    5,
                    Param::DateTime(day(2024, 2, 29).and_hms_micro_opt(23, 59, 1, 250).unwrap()),
                ),
            ]),
            vec![1, 2],
        ),
        (
            with(vec![
                (0, Param::Text("日本語 🚀".into())),
                (6, Param::Text("not null".into())),
            ]),
            vec![],
        ),
    ];
    let source = postgres_source(2, std::time::Duration::from_secs(30)).await;
    for (params, want) in cases {
        let mut bound = sqlx::query_scalar::<_, i32>(&sql);
        for p in &params {
            bound = match p {
                Param::Null => bound.bind(None::<String>),
                Param::Bool(b) => bound.bind(*b),
                Param::Int(i) => bound.bind(*i),
                Param::Float(f) => bound.bind(*f),
                Param::Text(s) => bound.bind(s.clone()),
                Param::Date(d) => bound.bind(*d),
                Param::DateTime(dt) => bound.bind(*dt),
            };
        }
        let by_binding: Vec<i64> = bound
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect();
        assert_eq!(by_binding, want, "bound {params:?}");
        let by_copy = first_column(source.as_ref(), &sql, &params).await.unwrap();
        let want: Vec<V> = want.into_iter().map(V::Int).collect();
        assert_eq!(by_copy, want, "copy {params:?}");
    }
    // An empty optional parameter takes the type of where it stands, so an optional filter
    // works against any column type. (Bound, a NULL is typed `text`, and `n >= $1` would be
    // refused.) PostgreSQL takes a parameter's type from its first use, hence the order.
    let optional = format!(
        "SELECT id FROM {table} WHERE (n >= $1 OR $1 IS NULL) AND (d >= $2 OR $2 IS NULL) \
         AND (t = $3 OR $3 IS NULL) ORDER BY id"
    );
    for (params, want) in [
        (vec![Param::Null, Param::Null, Param::Null], vec![1, 2, 3]),
        (vec![Param::Int(0), Param::Null, Param::Null], vec![2, 3]),
        (
            vec![Param::Null, Param::Date(day(2000, 1, 1)), Param::Null],
            vec![1],
        ),
        (
            vec![Param::Null, Param::Null, Param::Text("日本語 🚀".into())],
            vec![3],
        ),
    ] {
        let got = first_column(source.as_ref(), &optional, &params)
            .await
            .unwrap();
        let want: Vec<V> = want.into_iter().map(V::Int).collect();
        assert_eq!(got, want, "{params:?}");
    }

    let left: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 3, "the table is still there, with its rows");
    pool.execute(format!("DROP TABLE {table}").as_str())
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_query_errors_and_timeouts_are_reasons_and_leave_the_pool_usable() {
    use server::source::{SourceErrorKind, Value as V};
    // One connection: a connection left in a bad state would fail the next query.
    let source = postgres_source(1, std::time::Duration::from_secs(1)).await;

    let e = first_column(source.as_ref(), "SELECT 1 FROM pg_sleep(5)", &[])
        .await
        .expect_err("stopped by the statement timeout");
    assert!(e.message.contains("statement timeout"), "{e}");
    assert_eq!(e.kind, SourceErrorKind::Query);

    // Fails after PostgreSQL has already sent rows.
    let mut rows = source.rows("SELECT 10 / (5 - n) FROM generate_series(1, 10) AS n", &[]);
    let mut seen = Vec::new();
    let failure = loop {
        use futures::StreamExt;
        match rows.next().await.expect("an error before the end") {
            Ok(row) => seen.push(row[0].clone()),
            Err(e) => break e,
        }
    };
    drop(rows);
    // Users get a short, stable message; the database's own words are for the log.
    assert_eq!(
        failure.message,
        "The database `pg` rejected the query (error 22012)."
    );
    assert!(failure.detail.contains("division by zero"), "{failure:?}");
    assert_eq!(seen.len(), 4);

    let e = first_column(source.as_ref(), "SELEC 1", &[])
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        "The database `pg` rejected the query (error 42601)."
    );
    assert!(e.detail.contains("syntax error"), "{e:?}");

    // A type without a decoder is exported as PostgreSQL prints it.
    assert_eq!(
        first_column(source.as_ref(), "SELECT point(1, 2) AS shape", &[])
            .await
            .unwrap(),
        [server::source::Value::Text("(1,2)".into())]
    );

    assert_eq!(
        first_column(source.as_ref(), "SELECT 42::int8;", &[])
            .await
            .unwrap(),
        vec![V::Int(42)]
    );
}

#[tokio::test]
async fn an_abandoned_postgres_query_stops_on_the_server_and_frees_its_connection() {
    use futures::StreamExt;
    let url = service_url("EXPORTAL_TEST_POSTGRES_URL");
    let watcher = sqlx::PgPool::connect(&url).await.unwrap();
    let marker = uuid::Uuid::new_v4().simple().to_string();
    // Rows for far longer than the test runs, if nobody stops them (in the select list, the
    // series streams; in FROM it would be computed in full before the first row).
    let sql = format!("SELECT generate_series(1, 2000000000) AS n, '{marker}' AS marker");
    let source = postgres_source(1, std::time::Duration::ZERO).await;
    let running = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
        )
        .bind(format!("%{marker}%"))
        .fetch_one(&watcher)
        .await
        .unwrap()
    };
    {
        let mut rows = source.rows(&sql, &[]);
        for _ in 0..1000 {
            rows.next().await.unwrap().unwrap();
        }
        assert_eq!(running().await, 1, "the query runs while it is read");
    }
    // The only connection is usable again (a hang here would end at the 5 s connect timeout).
    source.ping().await.expect("the connection was given back");
    let mut gone = false;
    for _ in 0..100 {
        if running().await == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "the server stopped the abandoned query");
}

/// Previews and counts: the database itself stops the query at the given limit (a statement
/// timeout local to the query's transaction), and the backend does not stay behind.
#[tokio::test]
async fn a_limited_postgres_query_is_stopped_by_the_server_and_its_backend_ends() {
    use futures::TryStreamExt;
    use server::source::{Param, SourceErrorKind, Value as V};
    let url = service_url("EXPORTAL_TEST_POSTGRES_URL");
    let watcher = sqlx::PgPool::connect(&url).await.unwrap();
    let marker = uuid::Uuid::new_v4().simple().to_string();
    // No pool-wide limit, one connection: only the per-query limit can stop it, and the pool
    // must be usable afterwards.
    let source = postgres_source(1, std::time::Duration::ZERO).await;
    let sql = format!("SELECT '{marker}' AS marker, $1::int8 AS n FROM pg_sleep(30)");
    let started = std::time::Instant::now();
    let e = server::source::complete(source.batches_limited(
        &sql,
        &[Param::Int(1)],
        std::time::Duration::from_millis(300),
    ))
    .try_collect::<Vec<_>>()
    .await
    .expect_err("stopped by the server");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "hang guard"
    );
    assert_eq!(
        e.message,
        "The query on `pg` ran longer than its statement timeout and was stopped."
    );
    assert_eq!(e.kind, SourceErrorKind::Query);
    assert!(e.detail.contains("57014"), "{e:?}");
    let mut gone = false;
    for _ in 0..100 {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
        )
        .bind(format!("%{marker}%"))
        .fetch_one(&watcher)
        .await
        .unwrap();
        if left == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "the backend that ran the query is gone");

    // A query within its limit runs as usual, its values bound, and the limit does not stay
    // on the connection for the next query.
    let rows = server::source::complete(source.batches_limited(
        "SELECT $1::int8 + 1",
        &[Param::Int(41)],
        std::time::Duration::from_secs(5),
    ))
    .try_collect::<Vec<_>>()
    .await
    .unwrap();
    assert_eq!(rows.concat(), vec![vec![V::Int(42)]]);
    let slow = first_column(source.as_ref(), "SELECT 1 FROM pg_sleep(0.5)", &[]).await;
    assert_eq!(slow.unwrap(), vec![V::Int(1)]);
    let left: String = {
        let mut rows = source.rows("SELECT current_setting('statement_timeout')", &[]);
        use futures::StreamExt;
        match rows.next().await.unwrap().unwrap().remove(0) {
            V::Text(t) => t,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(left, "0", "the pool's own limit is back");
}

async fn mariadb_source(max_connections: u32) -> Arc<dyn server::source::Source> {
    let options = server::source::SourceOptions {
        max_connections,
        connect_timeout: std::time::Duration::from_secs(5),
        statement_timeout: std::time::Duration::ZERO,
    };
    let url = service_url("EXPORTAL_TEST_MYSQL_URL");
    server::source::connect("maria", &url, &options)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_limited_mariadb_query_is_stopped_by_the_server() {
    use futures::TryStreamExt;
    use server::source::{Param, SourceErrorKind, Value as V};
    let url = service_url("EXPORTAL_TEST_MYSQL_URL");
    let watcher = sqlx::MySqlPool::connect(&url).await.unwrap();
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let source = mariadb_source(1).await;
    let sql = format!("SELECT SLEEP(30) AS s, '{marker}' AS marker, ? AS n");
    let started = std::time::Instant::now();
    let e = server::source::complete(source.batches_limited(
        &sql,
        &[Param::Int(1)],
        std::time::Duration::from_millis(300),
    ))
    .try_collect::<Vec<_>>()
    .await
    .expect_err("stopped by the server");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "hang guard"
    );
    assert_eq!(
        e.message,
        "The query on `maria` ran longer than its statement timeout and was stopped."
    );
    assert_eq!(e.kind, SourceErrorKind::Query);
    assert!(e.detail.contains("1969"), "{e:?}");
    let running: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE ? AND ID <> CONNECTION_ID()",
    )
    .bind(format!("%{marker}%"))
    .fetch_one(&watcher)
    .await
    .unwrap();
    assert_eq!(running, 0, "the statement no longer runs");

    let rows = server::source::complete(source.batches_limited(
        "SELECT ? + 1 AS n",
        &[Param::Int(41)],
        std::time::Duration::from_secs(5),
    ))
    .try_collect::<Vec<_>>()
    .await
    .unwrap();
    assert_eq!(rows.concat(), vec![vec![V::Int(42)]]);
    // The limit was for that statement only.
    let mut rows = source.rows("SELECT SLEEP(0.5) AS s", &[]);
    use futures::StreamExt;
    assert_eq!(rows.next().await.unwrap().unwrap(), vec![V::Int(0)]);
}

/// 1205 (lock wait timeout) is a transient error, to be retried, though its SQLSTATE (HY000)
/// says nothing: MySQL errors are classified by number.
#[tokio::test]
async fn a_mariadb_lock_wait_timeout_is_worth_a_retry() {
    use futures::TryStreamExt;
    use server::source::{Param, SourceErrorKind};
    let url = service_url("EXPORTAL_TEST_MYSQL_URL");
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    let table = table_name();
    pool.execute(format!("CREATE TABLE {table} (id INT PRIMARY KEY) ENGINE=InnoDB").as_str())
        .await
        .unwrap();
    pool.execute(format!("INSERT INTO {table} VALUES (1)").as_str())
        .await
        .unwrap();
    let mut holder = pool.acquire().await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute(format!("SELECT id FROM {table} WHERE id = 1 FOR UPDATE").as_str())
        .await
        .unwrap();
    let source = mariadb_source(1).await;
    let sql = format!(
        "SET STATEMENT innodb_lock_wait_timeout = 1 FOR SELECT id FROM {table} WHERE id = ? FOR UPDATE"
    );
    let e = server::source::complete(source.batches(&sql, &[Param::Int(1)]))
        .try_collect::<Vec<_>>()
        .await
        .expect_err("the row is locked");
    assert_eq!(e.kind, SourceErrorKind::Unavailable, "{e:?}");
    assert_eq!(
        e.message,
        "The database `maria` could not complete the query right now (error 1205)."
    );
    assert!(e.detail.contains("Lock wait timeout"), "{e:?}");
    holder.execute("ROLLBACK").await.unwrap();
    drop(holder);
    pool.execute(format!("DROP TABLE {table}").as_str())
        .await
        .unwrap();
}

/// The COPY reads each bound value through a scalar subquery: PostgreSQL plans it as an
/// InitPlan, evaluated once per query, so the filter compares with a constant and the bulk
/// path keeps its speed.
#[tokio::test]
async fn postgres_reads_each_bound_value_once_per_query() {
    use server::source::Param;
    let url = service_url("EXPORTAL_TEST_POSTGRES_URL");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let table = table_name();
    pool.execute(
        format!(
            "CREATE TABLE {table} AS SELECT g::int8 AS n, md5(g::text) AS t FROM generate_series(1, 1000) g"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let statement = server::source::postgres_copy_statement(
        &format!("SELECT n, t FROM {table} WHERE n >= $1 AND t <> $2 AND ($3 IS NULL OR t = $3)"),
        &[Param::Int(500), Param::Text("x".into()), Param::Null],
        &["bigint".into(), "text".into(), "text".into()],
    )
    .unwrap();
    let query = statement
        .strip_prefix("COPY (")
        .and_then(|q| q.strip_suffix("\n) TO STDOUT (FORMAT binary)"))
        .expect("a COPY of a query");
    let mut conn = pool.acquire().await.unwrap();
    conn.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT set_config('exportal.p1', $1, true), set_config('exportal.p2', $2, true)")
        .bind("500")
        .bind("x")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> =
        sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {query}"))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let plan = plan.join("\n");
    assert_eq!(plan.matches("InitPlan").count(), 2, "{plan}");
    let filter = plan
        .lines()
        .find(|l| l.trim_start().starts_with("Filter:"))
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(!filter.contains("current_setting"), "per row: {plan}");
    assert!(plan.contains("actual rows=501 loops=1"), "{plan}");
    conn.execute("ROLLBACK").await.unwrap();
    drop(conn);
    pool.execute(format!("DROP TABLE {table}").as_str())
        .await
        .unwrap();
}

/// Text and NULL take the type PostgreSQL inferred for the parameter, named by PostgreSQL
/// itself: an enum in another schema, with a name that needs quoting, works.
#[tokio::test]
async fn postgres_text_takes_the_inferred_type_even_one_whose_name_needs_quoting() {
    use server::source::{Param, Value as V};
    let url = service_url("EXPORTAL_TEST_POSTGRES_URL");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let schema = format!("S {}", uuid::Uuid::new_v4().simple());
    pool.execute(
        format!(
            "CREATE SCHEMA \"{schema}\";
             CREATE TYPE \"{schema}\".\"Mood\" AS ENUM ('ok', 'sad');
             CREATE TABLE \"{schema}\".t (id INT, m \"{schema}\".\"Mood\");
             INSERT INTO \"{schema}\".t VALUES (1, 'ok'), (2, 'sad'), (3, NULL)"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let source = postgres_source(1, std::time::Duration::from_secs(30)).await;
    let sql = format!("SELECT id FROM \"{schema}\".t WHERE (m = $1 OR $1 IS NULL) ORDER BY id");
    for (param, want) in [
        (Param::Text("sad".into()), vec![2]),
        (Param::Null, vec![1, 2, 3]),
    ] {
        let got = first_column(source.as_ref(), &sql, std::slice::from_ref(&param))
            .await
            .unwrap();
        let want: Vec<V> = want.into_iter().map(V::Int).collect();
        assert_eq!(got, want, "{param:?}");
    }
    // A value the type does not accept is the database's refusal, not SQL.
    let e = first_column(source.as_ref(), &sql, &[Param::Text("ok') OR (1=1".into())])
        .await
        .unwrap_err();
    assert!(e.detail.contains("invalid input value for enum"), "{e:?}");
    pool.execute(format!("DROP SCHEMA \"{schema}\" CASCADE").as_str())
        .await
        .unwrap();
}
