//! A user's value is data, never SQL, on every driver: datasets whose SQL hides old filters in
//! comments and literals, and values built to close that comment or literal and stack a
//! statement, widen the filter or read another table. Each attack ends one of two ways: the
//! dataset is refused at start-up, or the value stays a value and selects exactly the rows it
//! names. Everything goes through the catalogue and the source, the path exports take.

use crate::support::service_url;
use futures::TryStreamExt;
use serde_json::{json, Value as J};
use server::catalog::Catalog;
use server::source::Value;
use sqlx::Executor;
use std::collections::BTreeMap;

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Values that try to end the comment or literal around a placeholder and run SQL of their
/// own: stack a `CREATE TABLE {pwned}`, match every row, or `UNION` the secret table in.
fn payloads(pwned: &str, secrets: &str) -> Vec<String> {
    [
        "*/ ; CREATE TABLE {pwned} (a int); --",
        "x */ OR 1=1 /*",
        "*/ */ OR 1=1 -- ",
        "' OR '1'='1",
        "'; CREATE TABLE {pwned} (a int); --",
        "\\'; CREATE TABLE {pwned} (a int); -- ",
        "\\' OR 1=1 #",
        "x' UNION ALL SELECT id, secret, secret, secret FROM {secrets} -- ",
        "' UNION ALL SELECT id, secret, secret, secret FROM {secrets} #",
        "$$ OR 1=1 $$",
        "$1 OR 1=1",
        ":note OR 1=1",
        "open' -- ",
    ]
    .iter()
    .map(|p| p.replace("{pwned}", pwned).replace("{secrets}", secrets))
    .collect()
}

/// The rows of `dataset` for these values, and its count, read the way exports and estimates
/// read them.
async fn read(
    catalog: &Catalog,
    dataset: &str,
    params: &[(&str, &str)],
) -> Result<(Vec<Vec<Value>>, Vec<Vec<Value>>), String> {
    let d = catalog.get(dataset).expect("dataset loaded");
    let given: BTreeMap<String, J> = params
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let checked = d
        .check(&given, None, "alice")
        .map_err(|e| format!("{e:?}"))?;
    let rows: Vec<Vec<Value>> =
        server::source::complete(d.source.batches(&d.bound.sql, &checked.params))
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| e.message)?
            .concat();
    let count: Vec<Vec<Value>> = server::source::complete(d.source.batches_limited(
        &d.count.sql,
        &checked.params,
        std::time::Duration::from_secs(10),
    ))
    .try_collect::<Vec<_>>()
    .await
    .map_err(|e| e.message)?
    .concat();
    Ok((rows, count))
}

fn ids(rows: &[Vec<Value>]) -> Vec<i64> {
    rows.iter()
        .map(|r| match r[0] {
            Value::Int(i) => i,
            ref other => panic!("id {other:?}"),
        })
        .collect()
}

fn count(rows: &[Vec<Value>]) -> i64 {
    match rows {
        [row] => match row[0] {
            Value::Int(n) => n,
            ref other => panic!("count {other:?}"),
        },
        other => panic!("count rows {other:?}"),
    }
}

/// Runs every payload (and, on PostgreSQL, a NUL byte) as `status` (and `note`, if the dataset takes it) and checks that each
/// one selected exactly what the value names: rows whose status is that very text (none).
async fn attack(catalog: &Catalog, dataset: &str, takes_note: bool, pwned: &str, secrets: &str) {
    // The honest request: alice's open orders, ids 1 and 3.
    let mut honest = vec![("status", "open")];
    if takes_note {
        honest.push(("note", "none"));
    }
    let (rows, n) = read(catalog, dataset, &honest).await.unwrap();
    assert_eq!(ids(&rows), [1, 3], "{dataset}");
    assert_eq!(count(&n), 2, "{dataset}");
    let mut all = payloads(pwned, secrets);
    if catalog.get(dataset).unwrap().source.dialect() == server::catalog::sql::Dialect::Postgres {
        // (MariaDB's Unicode collations ignore a NUL, so there it would match `open`.)
        all.push("open\0".into());
    }
    for payload in all {
        let mut as_status = vec![("status", payload.as_str())];
        if takes_note {
            as_status.push(("note", "none"));
        }
        let mut as_note = vec![("status", "open")];
        if takes_note {
            as_note.push(("note", payload.as_str()));
        }
        for (params, want) in [(as_status, vec![]), (as_note, vec![1, 3])] {
            match read(catalog, dataset, &params).await {
                Ok((rows, n)) => {
                    assert_eq!(ids(&rows), want, "{dataset} {params:?}");
                    assert_eq!(count(&n), want.len() as i64, "{dataset} {params:?}");
                    for row in &rows {
                        assert!(
                            !format!("{row:?}").contains("SECRET"),
                            "{dataset} {params:?} read the other table: {row:?}"
                        );
                    }
                }
                // Only the NUL byte, which PostgreSQL cannot hold in text, may fail, and then
                // as a refused value, not as SQL.
                Err(e) => assert!(
                    payload.contains('\0') && e.contains("NUL"),
                    "{dataset} {params:?}: {e}"
                ),
            }
        }
    }
}

fn catalog_text(url: &str, datasets: &[(&str, &str, &[&str])]) -> String {
    let mut text = format!("[sources.db]\nurl = \"{url}\"\n");
    for (id, sql, params) in datasets {
        text.push_str(&format!(
            "\n[[datasets]]\nid = \"{id}\"\ntitle = \"T\"\nsource = \"db\"\nsql = '''{sql}'''\n"
        ));
        for p in *params {
            text.push_str(&format!(
                "[[datasets.params]]\nname = \"{p}\"\ntype = \"string\"\n"
            ));
        }
    }
    text
}

async fn refused(url: &str, id: &str, sql: &str, params: &[&str]) -> String {
    let text = catalog_text(url, &[(id, sql, params)]);
    Catalog::from_toml(&text, std::path::Path::new("."))
        .await
        .err()
        .unwrap_or_else(|| panic!("dataset `{id}` must be refused: {sql}"))
}

const ROWS: &str = "(1, 'alice', 'open', 'none'), (2, 'bob', 'open', 'none'), \
                    (3, 'alice', 'open', 'none'), (4, 'alice', 'closed', 'none')";

#[tokio::test]
async fn postgres_values_never_become_sql() {
    let url = service_url("EXPORTAL_TEST_POSTGRES_URL");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (orders, secrets, pwned) = (unique("orders"), unique("secrets"), unique("pwned"));
    pool.execute(
        format!(
            "CREATE TABLE {orders} (id BIGINT, owner TEXT, status TEXT, note TEXT);
             INSERT INTO {orders} VALUES {ROWS};
             CREATE TABLE {secrets} (id BIGINT, secret TEXT);
             INSERT INTO {secrets} VALUES (100, 'SECRET')"
        )
        .as_str(),
    )
    .await
    .unwrap();

    // The dataset: the old filter, with its placeholder, sits in a nested comment.
    // PostgreSQL nests comments, so `:note` is not in the query and a declared `note` is
    // refused at start-up...
    let nested = format!(
        "SELECT id, owner, status, note FROM {orders} WHERE owner = :user AND status = :status \
         /* was: /* v1 */ AND note <> :note */ ORDER BY id"
    );
    let e = refused(&url, "nested", &nested, &["status", "note"]).await;
    assert!(
        e.contains("dataset `nested`") && e.contains("never uses :note"),
        "{e}"
    );
    // ... and without it, the dataset loads and `status` stays a value.
    let tricky = format!(
        "SELECT id, owner, status, note FROM {orders} WHERE owner = :user AND status = :status \
         AND note <> 'it''s :note \\' AND note <> $q$ :note $q$ \
         AND note <> E'\\' :note' -- :note\n ORDER BY id"
    );
    let text = catalog_text(
        &url,
        &[
            ("nested", &nested, &["status"]),
            ("tricky", &tricky, &["status"]),
        ],
    );
    let catalog = Catalog::from_toml(&text, std::path::Path::new("."))
        .await
        .expect("loads");
    attack(&catalog, "nested", false, &pwned, &secrets).await;
    attack(&catalog, "tricky", false, &pwned, &secrets).await;

    // With standard_conforming_strings off, PostgreSQL would end `'\'` elsewhere than the
    // scanner: such a source is refused.
    let nonstandard = format!(
        "{url}?options=-c%20standard_conforming_strings%3Doff%20-c%20escape_string_warning%3Doff"
    );
    let e = refused(
        &nonstandard,
        "lenient",
        &format!("SELECT id, '\\' , :status AS s -- ' FROM {orders}"),
        &["status"],
    )
    .await;
    assert!(
        e.contains("source `db`") && e.contains("standard_conforming_strings is `off`"),
        "{e}"
    );

    let created: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relname = $1")
        .bind(&pwned)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(created, 0, "no statement was stacked");
    let left: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {orders}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 4);
    pool.execute(format!("DROP TABLE {orders}; DROP TABLE {secrets}").as_str())
        .await
        .unwrap();
}

#[tokio::test]
async fn mariadb_values_never_become_sql() {
    let url = service_url("EXPORTAL_TEST_MYSQL_URL");
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    let (orders, secrets, pwned) = (unique("orders"), unique("secrets"), unique("pwned"));
    for sql in [
        format!("CREATE TABLE {orders} (id BIGINT, owner TEXT, status TEXT, note TEXT)"),
        format!("INSERT INTO {orders} VALUES {ROWS}"),
        format!("CREATE TABLE {secrets} (id BIGINT, secret TEXT)"),
        format!("INSERT INTO {secrets} VALUES (100, 'SECRET')"),
    ] {
        pool.execute(sql.as_str()).await.unwrap();
    }

    // MariaDB's comments do not nest: the dataset is not valid SQL there, and is
    // refused at start-up with the server's reason.
    let nested = format!(
        "SELECT id, owner, status, note FROM {orders} WHERE owner = :user AND status = :status \
         /* was: /* v1 */ AND note <> :note */ ORDER BY id"
    );
    let e = refused(&url, "nested", &nested, &["status", "note"]).await;
    assert!(e.contains("dataset `nested`: key `sql`"), "{e}");

    // `#` and `-- ` comments, backslash escapes, backticks and an executable comment.
    let tricky = format!(
        "SELECT id, owner, status, note FROM `{orders}` WHERE owner = :user \
         /*! AND status = :status */ AND note <> 'it\\'s :note' AND note <> \"\\\" :note\" \
         # AND note = :note\n AND note <> 'x' -- AND note = :note\n ORDER BY id"
    );
    let text = catalog_text(&url, &[("tricky", &tricky, &["status"])]);
    let catalog = Catalog::from_toml(&text, std::path::Path::new("."))
        .await
        .expect("loads");
    attack(&catalog, "tricky", false, &pwned, &secrets).await;

    // Code the server skips (an executable comment for a later version) holds a placeholder
    // the scanner counts: the server's own count refuses the dataset.
    let e = refused(
        &url,
        "later",
        &format!("SELECT id FROM {orders} WHERE 1 = 1 /*!99999 AND status = :status */"),
        &["status"],
    )
    .await;
    assert!(
        e.contains("dataset `later`")
            && e.contains("the database counts 0 parameter(s)")
            && e.contains("found 1 placeholder slot(s)"),
        "{e}"
    );

    let created: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_NAME = ?")
            .bind(&pwned)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(created, 0, "no statement was stacked");
    for sql in [
        format!("DROP TABLE {orders}"),
        format!("DROP TABLE {secrets}"),
    ] {
        pool.execute(sql.as_str()).await.unwrap();
    }
}

#[tokio::test]
async fn sqlite_parameters_the_scanner_does_not_know_refuse_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    pool.execute("CREATE TABLE t (id INTEGER, owner TEXT)")
        .await
        .unwrap();
    pool.close().await;
    // `@other` is SQLite's own named parameter: it would be bound to nothing.
    let e = refused(
        &format!("sqlite://{}", db.display()),
        "extra",
        "SELECT id FROM t WHERE owner = :user OR owner = @other",
        &[],
    )
    .await;
    assert!(
        e.contains("dataset `extra`")
            && e.contains("the database counts 2 parameter(s)")
            && e.contains("found 1 placeholder slot(s)"),
        "{e}"
    );
}
