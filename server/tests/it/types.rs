//! Every column type of a real PostgreSQL and MariaDB schema exports, in every format, through
//! the same catalogue and pipeline users get (no casts in the datasets' SQL). Each file is read
//! back by an independent reader and compared with the database's own text output: `psql`'s
//! `COPY … (FORMAT csv)` and the `mariadb` client's batch output.

use crate::support::service_url;
use app::jobs::{ExportFormat, Job, JobStatus};
use calamine::Data;
use chrono::{DateTime, NaiveTime};
use serde_json::{json, Value};
use server::blobs::local::LocalBlobStore;
use server::catalog::Catalog;
use server::export::{self, Counters, ExportContext};
use sqlx::Executor;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What an export of one dataset produced, per format, and the catalogue's column types.
struct Exported {
    columns: Vec<String>,
    types: BTreeMap<String, String>,
    files: BTreeMap<&'static str, Vec<u8>>,
}

async fn export_every_format(catalog_text: &str) -> Exported {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(
        Catalog::from_toml(catalog_text, dir.path())
            .await
            .unwrap_or_else(|e| panic!("catalogue loads: {e}")),
    );
    let info = catalog.get("types").unwrap().info.clone();
    let columns: Vec<String> = info.columns.iter().map(|c| c.name.clone()).collect();
    let types = info
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.kind.to_string()))
        .collect();
    let files_dir = dir.path().join("files");
    let ctx = ExportContext {
        catalog,
        blobs: Arc::new(LocalBlobStore::open(&files_dir).await.unwrap()),
        temp_dir: dir.path().to_path_buf(),
        row_cap: 1000,
        csv_crlf: false,
    };
    let mut files = BTreeMap::new();
    for format in ExportFormat::ALL {
        let mut job = Job::queued(
            uuid::Uuid::new_v4().simple().to_string(),
            "alice",
            "types",
            format,
            columns.clone(),
        );
        job.status = JobStatus::Running;
        job.attempts = 1;
        job.revision = 1;
        export::run(
            &ctx,
            &job,
            &CancellationToken::new(),
            Arc::new(Counters::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("{format}: {e}"));
        let bytes = std::fs::read(files_dir.join(export::blob_name(&job))).unwrap();
        files.insert(format.as_str(), bytes);
    }
    Exported {
        columns,
        types,
        files,
    }
}

/// The XLSX file's cells by row (the header is row 0) and column name, through calamine.
fn xlsx_cells(out: &Exported) -> impl Fn(usize, &str) -> Data + '_ {
    use calamine::Reader;
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(out.files["xlsx"].clone())).unwrap();
    let range = book.worksheet_range("Data").unwrap();
    move |row, column| {
        let c = out.columns.iter().position(|x| x == column).unwrap();
        range.get((row, c)).cloned().unwrap_or(Data::Empty)
    }
}

fn catalog(url: &str, sql: &str) -> String {
    format!(
        r#"
[sources.db]
url = "{url}"

[[datasets]]
id = "types"
title = "Every type"
source = "db"
sql = "{sql}"
"#
    )
}

/// The database's own text of each cell (`None` for NULL), one map per row.
type Reference = Vec<BTreeMap<String, Option<String>>>;

/// NULL as the reference tools print it, chosen so no value in the tables looks like it.
const NULL: &str = "<NULL>";

fn csv_rows(bytes: &[u8], null: Option<&str>) -> Reference {
    let mut reader = csv::Reader::from_reader(bytes);
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| {
                    let v = (Some(v) != null).then(|| v.to_string());
                    (h.clone(), v)
                })
                .collect()
        })
        .collect()
}

fn ndjson_rows(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// PostgreSQL's array text (`{a,"b c",NULL,{1,2}}`) as JSON: elements as strings, NULL as
/// null, nested arrays as arrays. An independent reading of the format, for the comparisons.
fn pg_array(text: &str) -> Value {
    fn parse(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Value {
        assert_eq!(chars.next(), Some('{'));
        let mut items = Vec::new();
        loop {
            match chars.peek().copied() {
                Some('}') => {
                    chars.next();
                    return Value::Array(items);
                }
                Some(',') => {
                    chars.next();
                }
                Some('{') => items.push(parse(chars)),
                Some('"') => {
                    chars.next();
                    let mut s = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => s.push(chars.next().unwrap()),
                            '"' => break,
                            c => s.push(c),
                        }
                    }
                    items.push(Value::String(s));
                }
                Some(_) => {
                    let mut s = String::new();
                    while let Some(&c) = chars.peek() {
                        if c == ',' || c == '}' {
                            break;
                        }
                        s.push(c);
                        chars.next();
                    }
                    items.push(if s == "NULL" {
                        Value::Null
                    } else {
                        Value::String(s)
                    });
                }
                None => panic!("unterminated array"),
            }
        }
    }
    parse(&mut text.chars().peekable())
}

/// Array elements read as numbers, for integer arrays.
fn numbers(v: Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.into_iter().map(numbers).collect()),
        Value::String(s) => json!(s.parse::<i64>().unwrap()),
        other => other,
    }
}

/// What a CSV cell holds for a text value: formula-like text gets its leading `'`.
fn csv_text(text: &str) -> String {
    if ["=", "+", "-", "@"].iter().any(|p| text.starts_with(p)) {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

fn time(text: &str) -> NaiveTime {
    NaiveTime::parse_from_str(text, "%H:%M:%S%.f").unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn instant(text: &str) -> DateTime<chrono::FixedOffset> {
    // psql writes `+00` or `-05`; Exportal writes RFC 3339.
    let b = text.as_bytes();
    let text = if b.len() > 3
        && matches!(b[b.len() - 3], b'+' | b'-')
        && b[b.len() - 4].is_ascii_digit()
    {
        format!("{text}:00")
    } else {
        text.to_string()
    };
    DateTime::parse_from_rfc3339(&text.replacen(' ', "T", 1))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

const PG_TABLE: &str = r#"
CREATE TYPE {t}_mood AS ENUM ('sad', 'ok', 'happy ☺');
CREATE DOMAIN {t}_posint AS integer CHECK (VALUE > 0);
CREATE TYPE {t}_pair AS (a int, b text);
CREATE TABLE {t} (
  id int PRIMARY KEY,
  u uuid, j json, jb jsonb, mood {t}_mood, pos {t}_posint,
  t time, ttz timetz, iv interval,
  ip inet, net cidr, mac macaddr, cash money,
  n numeric, o oid, ch "char", big bigint, ts timestamptz, d date,
  tags text[], nums int8[], moods {t}_mood[], ivs interval[], docs jsonb[],
  b bit(3), vb varbit, x xml, r int4range, p point, pair {t}_pair, tsv tsvector
);
INSERT INTO {t} VALUES
 (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', E'{"b": [1, 2.50, "x"],\n "a": null}', '{"name": "Zoë ☺ \"q\"", "n": 1.50}',
  'happy ☺', 7, '12:30:45.25', '12:30:45+05:30', '-1 year -2 mons +3 days -04:05:06.5',
  '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', 1234.56,
  'NaN', 4294967295, 'x', 9007199254740993, '-infinity', 'infinity',
  ARRAY['a', 'b c', '"quoted"', E'back\\slash', '', 'NULL', NULL, '{}'], '{1234567890123456789,-9007199254740993}',
  '{sad,"happy ☺"}', '{"1 day","-2 hours"}', ARRAY['{"k": [1]}'::jsonb, NULL],
  B'101', B'1', '<a>1 &amp; 2</a>', '[1,5)', '(1.5,-2)', ROW(1, 'x y'), 'a fat cat'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  'Infinity', NULL, NULL, -9223372036854775808, '2024-03-31 01:30:00+00', '2024-02-29',
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, '00000000-0000-0000-0000-000000000000', '[]', '"text"', 'sad', 1, '00:00:00', '23:59:59.999999-12', '0 seconds',
  '::1', '::/0', 'ff:ff:ff:ff:ff:ff', -0.01,
  '-12.500', 0, ' ', 0, '1999-12-31 23:59:59.5+00', '0044-03-15 BC',
  '{}', '{{1,2},{3,4}}', '{}', '{}', '{}',
  B'000', B'', '<b/>', 'empty', '(0,0)', ROW(NULL, ''), '');
"#;

#[tokio::test]
async fn every_postgres_type_exports_as_postgres_prints_it() {
    let url = service_url("EXPORTAL_TEST_POSTGRES_URL");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let table = format!("t_{}", uuid::Uuid::new_v4().simple());
    pool.execute(PG_TABLE.replace("{t}", &table).as_str())
        .await
        .unwrap();
    let sql = format!("SELECT * FROM {table} ORDER BY id");
    let out = export_every_format(&catalog(&url, &sql)).await;

    let shown = |c: &str| out.types[c].as_str();
    for (column, want) in [
        ("u", "uuid"),
        ("j", "json"),
        ("jb", "json"),
        ("mood", "enum"),
        ("pos", "integer"),
        ("t", "time"),
        ("ttz", "time"),
        ("iv", "interval"),
        ("ip", "network"),
        ("mac", "network"),
        ("cash", "money"),
        ("n", "decimal"),
        ("o", "integer"),
        ("ch", "text"),
        ("big", "integer"),
        ("ts", "datetime"),
        ("tags", "array<text>"),
        ("nums", "array<integer>"),
        ("moods", "array<enum>"),
        ("ivs", "array<interval>"),
        ("docs", "array<json>"),
        ("b", "text"),
        ("x", "text"),
        ("r", "text"),
        ("p", "geometry"),
        ("pair", "text"),
        ("tsv", "text"),
    ] {
        assert_eq!(shown(column), want, "catalogue type of {column}");
    }

    // The database's own text: psql's CSV, NULL spelled out.
    let psql = std::env::var("EXPORTAL_TEST_POSTGRES_BIN")
        .map(|bin| format!("{bin}/psql"))
        .unwrap_or_else(|_| "psql".into());
    let reference = tokio::process::Command::new(psql)
        .args(["-X", "-q", "-d", &url, "-c"])
        .arg(format!(
            "COPY ({sql}) TO STDOUT (FORMAT csv, HEADER, NULL '{NULL}')"
        ))
        .output()
        .await
        .expect("psql runs");
    assert!(reference.status.success(), "{:?}", reference);
    let reference = csv_rows(&reference.stdout, Some(NULL));
    assert_eq!(reference.len(), 3);

    // CSV: every cell is PostgreSQL's text, but for the forms Exportal writes its own way
    // (booleans, timestamps in RFC 3339, times with 3/6/9 fraction digits, bytes in base64).
    let csv = csv_rows(&out.files["csv"], None);
    assert_eq!(csv.len(), 3);
    for (row, want) in csv.iter().zip(&reference) {
        for column in &out.columns {
            let (got, want) = (
                row[column].clone().unwrap_or_default(),
                want[column].clone(),
            );
            let Some(want) = want else {
                assert_eq!(got, "", "csv {column}: NULL is an empty field");
                continue;
            };
            match column.as_str() {
                "t" => assert_eq!(time(&got), time(&want), "csv t"),
                "ts" if want.ends_with("infinity") => assert_eq!(got, csv_text(&want)),
                "ts" => assert_eq!(instant(&got), instant(&want), "csv ts"),
                "d" if want.ends_with(" BC") => {
                    // ISO 8601's year -43 is 44 BC.
                    assert_eq!(got, "-0043-03-15", "csv d");
                }
                // Typed numbers are never taken for formulas.
                "id" | "pos" | "o" | "big" | "n" => assert_eq!(got, want, "csv {column}"),
                _ => assert_eq!(got, csv_text(&want), "csv {column}"),
            }
        }
    }

    // NDJSON and JSON: the same values, with JSON embedded, arrays as arrays and 64-bit
    // integers with every digit.
    let ndjson = ndjson_rows(&out.files["ndjson"]);
    let json: Vec<Value> = serde_json::from_slice(&out.files["json"]).unwrap();
    assert_eq!(ndjson, json, "ndjson and json hold the same rows");
    for (row, want) in ndjson.iter().zip(&reference) {
        for column in &out.columns {
            let got = &row[column];
            let Some(want) = want[column].clone() else {
                assert_eq!(got, &Value::Null, "ndjson {column}");
                continue;
            };
            let expected = match column.as_str() {
                "id" | "pos" | "o" | "big" => json!(want.parse::<i64>().unwrap()),
                "j" | "jb" => serde_json::from_str(&want).unwrap(),
                "nums" => numbers(pg_array(&want)),
                "tags" | "moods" | "ivs" => pg_array(&want),
                "docs" => {
                    let Value::Array(items) = pg_array(&want) else {
                        unreachable!()
                    };
                    Value::Array(
                        items
                            .into_iter()
                            .map(|i| match i {
                                Value::String(s) => serde_json::from_str(&s).unwrap(),
                                other => other,
                            })
                            .collect(),
                    )
                }
                "t" => {
                    assert_eq!(time(got.as_str().unwrap()), time(&want), "ndjson t");
                    continue;
                }
                "ts" if !want.ends_with("infinity") => {
                    assert_eq!(instant(got.as_str().unwrap()), instant(&want), "ndjson ts");
                    continue;
                }
                "d" if want.ends_with(" BC") => json!("-0043-03-15"),
                _ => json!(want),
            };
            assert_eq!(got, &expected, "ndjson {column}");
        }
    }
    // The pretty-printed json value kept its record on one line.
    assert_eq!(
        std::str::from_utf8(&out.files["ndjson"])
            .unwrap()
            .lines()
            .count(),
        3
    );

    // XLSX: ids past 2^53 stay exact as text; everything that is not a number or a date is text.
    let at = xlsx_cells(&out);
    assert_eq!(at(1, "big"), Data::String("9007199254740993".into()));
    assert_eq!(at(2, "big"), Data::String("-9223372036854775808".into()));
    assert_eq!(at(3, "big"), Data::Float(0.0));
    assert_eq!(at(1, "o"), Data::Float(4294967295.0));
    assert_eq!(
        at(1, "u"),
        Data::String("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
    );
    assert_eq!(
        at(1, "nums"),
        Data::String("{1234567890123456789,-9007199254740993}".into())
    );
    assert_eq!(at(1, "mood"), Data::String("happy ☺".into()));
    assert_eq!(at(1, "n"), Data::String("NaN".into()));
    assert_eq!(at(3, "n"), Data::Float(-12.5));
    assert!(matches!(at(1, "t"), Data::DateTime(_)), "{:?}", at(1, "t"));
    assert_eq!(
        at(1, "iv"),
        Data::String(reference[0]["iv"].clone().unwrap())
    );
    assert_eq!(at(2, "u"), Data::Empty);
    // Every text cell holds PostgreSQL's own text, whole (XLSX needs no formula guard).
    for column in [
        "u", "j", "jb", "mood", "ttz", "iv", "ip", "net", "mac", "cash", "ch", "tags", "moods",
        "ivs", "docs", "b", "vb", "x", "r", "p", "pair", "tsv",
    ] {
        for (row, want) in reference.iter().enumerate() {
            let got = at(row + 1, column);
            match want[column].as_deref() {
                None => assert_eq!(got, Data::Empty, "xlsx {column} row {}", row + 1),
                // An empty string cell reads back as either.
                Some("") => assert!(
                    matches!(&got, Data::Empty) || got == Data::String(String::new()),
                    "xlsx {column} row {}: {got:?}",
                    row + 1
                ),
                Some(text) => assert_eq!(
                    got,
                    Data::String(text.to_string()),
                    "xlsx {column} row {}",
                    row + 1
                ),
            }
        }
    }

    pool.execute(
        format!(
            "DROP TABLE {table}; DROP TYPE {table}_pair; DROP DOMAIN {table}_posint; DROP TYPE {table}_mood"
        )
        .as_str(),
    )
    .await
    .unwrap();
}

const MARIADB_TABLE: &str = r#"
CREATE TABLE {t} (
  id INT PRIMARY KEY,
  j JSON, u UUID, i6 INET6, i4 INET4, b1 BIT(1), b8 BIT(8), b64 BIT(64),
  tm TIME, tm6 TIME(6), g GEOMETRY, zd DATE, zdt DATETIME, ts TIMESTAMP NULL,
  ub BIGINT UNSIGNED, dec65 DECIMAL(65,30), e ENUM('a','b c'), s SET('x','y'), y YEAR,
  bl BLOB, vb VARBINARY(16), binv VARCHAR(20) COLLATE utf8mb4_bin, txt TEXT
) CHARACTER SET utf8mb4
"#;

const MARIADB_ROWS: &str = r#"
INSERT INTO {t} VALUES
 (1, '{"a": [1, "é"], "b": null}', 'e0e8f7b8-1d4c-11ee-be56-0242ac120002', '2001:db8::ff00:42:8329',
  '192.168.0.1', b'1', b'10100101', 0xFFFFFFFFFFFFFFFF, '-838:59:59', '-00:00:01.5',
  ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0),(2 2,3 2,3 3,2 2))'),
  '0000-00-00', '0000-00-00 00:00:00', '2024-03-31 01:30:00',
  18446744073709551615, '12345678901234567890123456789012345.123456789012345678901234567890',
  'b c', 'x,y', 2024, x'00ff10', x'deadbeef', 'Zoë', 'plain'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, '[]', '00000000-0000-0000-0000-000000000000', '::', '0.0.0.0', b'0', b'0', 0,
  '100:00:00', '838:59:59.999999', ST_GeomFromText('POINT(1.5 -2)'),
  '2024-00-15', '2024-02-29 23:59:59', '1999-12-31 23:59:59',
  0, '-0.000000000000000000000000000001', 'a', '', 1901, x'', x'00', '', '')
"#;

/// `mysql://user:password@host:port/database` as the `mariadb` client's arguments.
fn mariadb_client_args(url: &str) -> Vec<String> {
    let rest = url.split_once("://").unwrap().1;
    let (credentials, rest) = rest.split_once('@').unwrap();
    let (user, password) = credentials.split_once(':').unwrap();
    let (address, database) = rest.split_once('/').unwrap();
    let (host, port) = address.split_once(':').unwrap();
    vec![
        "--no-defaults".into(),
        format!("--host={host}"),
        format!("--port={port}"),
        format!("--user={user}"),
        format!("--password={password}"),
        format!("--database={}", database.split('?').next().unwrap()),
    ]
}

#[tokio::test]
async fn every_mariadb_type_exports_as_mariadb_prints_it() {
    let url = service_url("EXPORTAL_TEST_MYSQL_URL");
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    let table = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = pool.acquire().await.unwrap();
    conn.execute(MARIADB_TABLE.replace("{t}", &table).as_str())
        .await
        .unwrap();
    // Zero dates are refused by the default strict mode, but real databases hold them.
    conn.execute("SET SESSION sql_mode = ''").await.unwrap();
    conn.execute(MARIADB_ROWS.replace("{t}", &table).as_str())
        .await
        .unwrap();
    drop(conn);
    let sql = format!("SELECT * FROM {table} ORDER BY id");
    // No `json_columns`: MariaDB's extended metadata says which column is JSON.
    let out = export_every_format(&catalog(&url, &sql)).await;

    for (column, want) in [
        ("j", "json"),
        ("u", "text"),
        ("i6", "text"),
        ("b1", "integer"),
        ("b64", "integer"),
        ("tm", "time"),
        ("g", "geometry"),
        ("zd", "date"),
        ("zdt", "datetime"),
        ("ts", "datetime"),
        ("ub", "integer"),
        ("dec65", "decimal"),
        ("e", "enum"),
        // The driver does not pass on the SET flag: a SET is text.
        ("s", "text"),
        ("bl", "bytes"),
        ("vb", "bytes"),
        ("binv", "text"),
    ] {
        assert_eq!(out.types[column], want, "catalogue type of {column}");
    }

    // The server's own text, through the `mariadb` client; BIT as its number, geometry as
    // WKT and bytes as base64, the forms Exportal documents for them.
    let reference = tokio::process::Command::new("mariadb")
        .args(mariadb_client_args(&url))
        .args(["--batch", "--raw", "-e"])
        .arg(format!(
            "SET time_zone = '+00:00'; SELECT id, j, u, i6, i4, CAST(b1 AS UNSIGNED) AS b1, \
             CAST(b8 AS UNSIGNED) AS b8, CAST(b64 AS UNSIGNED) AS b64, tm, tm6, ST_AsText(g) AS g, \
             zd, zdt, ts, ub, dec65, e, s, y, TO_BASE64(bl) AS bl, TO_BASE64(vb) AS vb, binv, txt \
             FROM {table} ORDER BY id"
        ))
        .output()
        .await
        .expect("the mariadb client runs");
    assert!(reference.status.success(), "{reference:?}");
    let reference: Reference = {
        let text = String::from_utf8(reference.stdout).unwrap();
        let mut lines = text.lines();
        let headers: Vec<&str> = lines.next().unwrap().split('\t').collect();
        lines
            .map(|line| {
                headers
                    .iter()
                    .zip(line.split('\t'))
                    .map(|(h, v)| (h.to_string(), (v != "NULL").then(|| v.to_string())))
                    .collect()
            })
            .collect()
    };
    assert_eq!(reference.len(), 3);
    // Exportal writes date-times in RFC 3339 (`T`, and `Z` for TIMESTAMP, which is in UTC).
    let iso = |v: &str| v.replacen(' ', "T", 1);

    let csv = csv_rows(&out.files["csv"], None);
    for (row, want) in csv.iter().zip(&reference) {
        for column in &out.columns {
            let got = row[column].clone().unwrap_or_default();
            let Some(want) = want[column].clone() else {
                assert_eq!(got, "", "csv {column}: NULL is an empty field");
                continue;
            };
            let want = match column.as_str() {
                "zdt" if !want.starts_with("0000") => iso(&want),
                "ts" => format!("{}Z", iso(&want)),
                "id" | "b1" | "b8" | "b64" | "ub" | "dec65" | "y" => want,
                _ => csv_text(&want),
            };
            assert_eq!(got, want, "csv {column}");
        }
    }

    let ndjson = ndjson_rows(&out.files["ndjson"]);
    let json: Vec<Value> = serde_json::from_slice(&out.files["json"]).unwrap();
    assert_eq!(ndjson, json);
    for (row, want) in ndjson.iter().zip(&reference) {
        for column in &out.columns {
            let got = &row[column];
            let Some(want) = want[column].clone() else {
                assert_eq!(got, &Value::Null, "ndjson {column}");
                continue;
            };
            let expected = match column.as_str() {
                "j" => serde_json::from_str(&want).unwrap(),
                "id" | "b1" | "b8" | "b64" | "ub" | "y" => {
                    serde_json::from_str::<Value>(&want).unwrap()
                }
                "zdt" if !want.starts_with("0000") => json!(iso(&want)),
                "ts" => json!(format!("{}Z", iso(&want))),
                _ => json!(want),
            };
            assert_eq!(got, &expected, "ndjson {column}");
        }
    }
    // Every digit of the unsigned maximum, as a JSON number.
    assert!(std::str::from_utf8(&out.files["ndjson"])
        .unwrap()
        .contains(r#""ub":18446744073709551615"#));

    let at = xlsx_cells(&out);
    assert_eq!(at(1, "ub"), Data::String("18446744073709551615".into()));
    assert_eq!(at(1, "b64"), Data::String("18446744073709551615".into()));
    assert_eq!(at(1, "b8"), Data::Float(165.0));
    assert_eq!(
        at(1, "dec65"),
        Data::String("12345678901234567890123456789012345.123456789012345678901234567890".into())
    );
    assert_eq!(at(1, "zd"), Data::String("0000-00-00".into()));
    assert_eq!(at(1, "tm"), Data::String("-838:59:59".into()));
    assert_eq!(
        at(1, "u"),
        Data::String("e0e8f7b8-1d4c-11ee-be56-0242ac120002".into())
    );
    assert!(
        matches!(at(3, "zdt"), Data::DateTime(_)),
        "{:?}",
        at(3, "zdt")
    );

    pool.execute(format!("DROP TABLE {table}").as_str())
        .await
        .unwrap();
}

#[tokio::test]
async fn sqlite_values_of_every_storage_class_export_whatever_the_declared_type() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("types.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    // Declared types are only hints in SQLite: each column holds every storage class.
    pool.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, d DATE, b BOOLEAN, x, j TEXT);
         INSERT INTO t VALUES
          (1, 'not a number', 'someday', 'yes', 1.5, '{\"k\": [1, 2]}'),
          (2, 2.25, 20240229, 2, x'00ff', 'not json'),
          (3, x'01', '2024-02-29', 0, 'text', NULL),
          (4, NULL, NULL, NULL, 9007199254740993, '[1,\n2]');",
    )
    .await
    .unwrap();
    pool.close().await;
    let text = catalog(
        &format!("sqlite://{}", db.display()),
        "SELECT * FROM t ORDER BY id",
    ) + "json_columns = [\"j\"]\n";
    let out = export_every_format(&text).await;
    assert_eq!(out.types["x"], "unknown");
    assert_eq!(out.types["j"], "json");
    let rows = ndjson_rows(&out.files["ndjson"]);
    assert_eq!(
        rows,
        vec![
            json!({"id": 1, "n": "not a number", "d": "someday", "b": "yes", "x": 1.5, "j": {"k": [1, 2]}}),
            json!({"id": 2, "n": 2.25, "d": 20240229, "b": true, "x": "AP8=", "j": "not json"}),
            json!({"id": 3, "n": "AQ==", "d": "2024-02-29", "b": false, "x": "text", "j": null}),
            json!({"id": 4, "n": null, "d": null, "b": null, "x": 9007199254740993i64, "j": [1, 2]}),
        ]
    );
    let csv = csv_rows(&out.files["csv"], None);
    assert_eq!(csv[3]["j"].as_deref(), Some("[1,\n2]"));
    assert_eq!(csv[1]["x"].as_deref(), Some("AP8="));
}

#[tokio::test]
async fn mariadb_character_sets_are_read_at_start_up_without_running_the_query() {
    let url = service_url("EXPORTAL_TEST_MYSQL_URL");
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    let table = format!("t_{}", uuid::Uuid::new_v4().simple());
    pool.execute(
        format!(
            "CREATE TABLE {table} (raw VARBINARY(4), word VARCHAR(4) COLLATE utf8mb4_bin);
             INSERT INTO {table} VALUES (x'00ff', 'ab')"
        )
        .as_str(),
    )
    .await
    .unwrap();
    // Had the query run, its connection would hold this named lock.
    let lock = format!("exportal_{table}");
    let sql = format!("SELECT raw, word, GET_LOCK('{lock}', 0) AS got FROM {table}");
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::from_toml(&catalog(&url, &sql), dir.path())
        .await
        .unwrap();
    let free: i64 = sqlx::query_scalar(&format!("SELECT IS_FREE_LOCK('{lock}')"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(free, 1, "the catalogue ran the dataset's query");
    let types: Vec<String> = catalog
        .get("types")
        .unwrap()
        .info
        .columns
        .iter()
        .map(|c| c.kind.to_string())
        .collect();
    assert_eq!(types, ["bytes", "text", "integer"]);
    pool.execute(format!("DROP TABLE {table}").as_str())
        .await
        .unwrap();
}
