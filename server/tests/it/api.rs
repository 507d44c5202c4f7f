//! The REST API: the whole life of an export, access control between users, and every error.

use crate::support::{orders, TestServer, DEMO_ORDERS};
use serde_json::{json, Value};
use std::time::Duration;

const DONE: &[&str] = &["succeeded", "failed", "cancelled"];

#[tokio::test]
async fn datasets_describe_their_columns_params_and_formats() {
    let server = TestServer::start(&[]).await;
    let res = server
        .user("alice")
        .get("/api/v1/datasets")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let datasets: Value = res.json().await.unwrap();
    let orders = datasets
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "orders")
        .unwrap();
    assert_eq!(orders["title"], "Orders");
    let columns: Vec<&str> = orders["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "id",
            "customer",
            "status",
            "total",
            "currency",
            "paid",
            "created_at",
            "shipped_on",
            "note"
        ]
    );
    assert_eq!(orders["columns"][0]["type"], "integer");
    assert_eq!(orders["columns"][6]["type"], "datetime");
    let status = orders["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "status")
        .unwrap();
    assert_eq!(status["type"], "enum");
    assert_eq!(status["required"], false);
    assert_eq!(status["values"][0], "pending");
    assert_eq!(orders["formats"], json!(["csv", "ndjson", "json", "xlsx"]));
    assert!(orders.get("sql").is_none(), "the SQL stays on the server");
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_export_runs_to_a_downloadable_file_with_its_facts() {
    let server = TestServer::start(&[]).await;
    let alice = server.user("alice");
    let job = alice.submit(orders("csv")).await;
    assert_eq!(job["status"], "queued");
    assert_eq!(job["progress"]["total_rows"], DEMO_ORDERS);
    let id = job["id"].as_str().unwrap();

    let done = alice.wait_for(id, DONE, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["file"]["rows"], DEMO_ORDERS);
    assert_eq!(done["progress"]["rows"], DEMO_ORDERS);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());

    let res = alice.download(id).await;
    assert_eq!(res.status(), 200);
    let disposition = res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"orders-"),
        "{disposition}"
    );
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let bytes = res.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, done["file"]["bytes"].as_u64().unwrap());
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        done["file"]["sha256"].as_str().unwrap()
    );
    let records = csv::Reader::from_reader(&bytes[..]).records().count();
    assert_eq!(records as u64, DEMO_ORDERS);

    let list: Value = alice
        .get("/api/v1/exports")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id);
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn filters_and_columns_shape_the_file_and_gzip_compresses_it() {
    let server = TestServer::start(&[]).await;
    let alice = server.user("alice");
    let job = alice
        .submit(json!({
            "dataset": "orders", "format": "ndjson", "gzip": true,
            "params": {"status": "paid", "from": "2024-01-01"},
            "columns": ["status", "id"]
        }))
        .await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["columns"], json!(["status", "id"]));
    let done = alice.wait_for(id, DONE, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let res = alice.download(id).await;
    assert_eq!(res.headers()["content-type"], "application/gzip");
    let gz = res.bytes().await.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rows.len() as u64,
        DEMO_ORDERS / 5,
        "every fifth demo order is paid"
    );
    assert!(rows
        .iter()
        .all(|r| r["status"] == "paid" && r.as_object().unwrap().len() == 2));
    assert!(
        text.starts_with("{\"status\":\"paid\",\"id\":"),
        "column order is kept"
    );
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_preview_shows_the_first_rows_and_the_count() {
    let server = TestServer::start(&[]).await;
    let res = server
        .user("alice")
        .post("/api/v1/preview")
        .json(&json!({"dataset": "orders", "format": "csv", "columns": ["id", "note"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let preview: Value = res.json().await.unwrap();
    assert_eq!(preview["columns"], json!(["id", "note"]));
    assert_eq!(preview["rows"].as_array().unwrap().len(), 20);
    assert_eq!(preview["rows"][0], json!([1, null]));
    assert_eq!(preview["estimated_rows"], DEMO_ORDERS);
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn users_never_see_cancel_or_download_each_others_exports() {
    let server = TestServer::start(&[]).await;
    let (alice, bob) = (server.user("alice"), server.user("bob"));
    let job = alice.submit(orders("csv")).await;
    let id = job["id"].as_str().unwrap();
    alice.wait_for(id, DONE, Duration::from_secs(30)).await;

    for res in [
        bob.get(&format!("/api/v1/exports/{id}"))
            .send()
            .await
            .unwrap(),
        bob.post(&format!("/api/v1/exports/{id}/cancel"))
            .send()
            .await
            .unwrap(),
        bob.post(&format!("/api/v1/exports/{id}/retry"))
            .send()
            .await
            .unwrap(),
        bob.download(id).await,
    ] {
        assert_eq!(res.status(), 404, "another user's job must look absent");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    let list: Value = bob
        .get("/api/v1/exports")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!([]));
    assert_eq!(alice.download(id).await.status(), 200);
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn cookie_identity_is_per_browser_and_survives_requests() {
    let server = TestServer::start(&["--auth", "cookie"]).await;
    let browser = |_: u8| {
        reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap()
    };
    let (one, two) = (browser(1), browser(2));
    let res = one.get(server.url("/api/v1/exports")).send().await.unwrap();
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.starts_with("exportal_id=") && set_cookie.contains("HttpOnly"),
        "{set_cookie}"
    );
    let job: Value = one
        .post(server.url("/api/v1/exports"))
        .json(&orders("json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let mine = one
        .get(server.url(&format!("/api/v1/exports/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), 200, "the same browser keeps its identity");
    let theirs = two
        .get(server.url(&format!("/api/v1/exports/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);
    let forged = reqwest::Client::new()
        .get(server.url(&format!("/api/v1/exports/{id}")))
        .header(
            "cookie",
            format!(
                "exportal_id={}.{}",
                job["owner"].as_str().unwrap(),
                "00".repeat(32)
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        404,
        "a cookie without the server's signature names nobody"
    );
    server.running.shutdown().await.unwrap();
}

async fn error_of(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let body: Value = res
        .json()
        .await
        .unwrap_or_else(|e| panic!("error body must be JSON ({status}): {e}"));
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn every_bad_request_gets_a_clear_json_error() {
    let server = TestServer::start(&[]).await;
    let alice = server.user("alice");
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"dataset": "nope", "format": "csv"}),
            "Unknown dataset `nope`",
        ),
        (
            json!({"dataset": "orders", "format": "pdf"}),
            "unknown variant `pdf`",
        ),
        (
            json!({"dataset": "orders", "format": "xlsx", "gzip": true}),
            "already compressed",
        ),
        (
            json!({"dataset": "orders", "format": "csv", "params": {"from": "yesterday"}}),
            "expected a date as YYYY-MM-DD",
        ),
        (
            json!({"dataset": "orders", "format": "csv", "params": {"status": "lost"}}),
            "expected one of: pending, paid",
        ),
        (
            json!({"dataset": "orders", "format": "csv", "params": {"min_total": "lots"}}),
            "expected a number",
        ),
        (
            json!({"dataset": "orders", "format": "csv", "params": {"colour": "red"}}),
            "unknown parameter `colour`",
        ),
        (
            json!({"dataset": "orders", "format": "csv", "columns": ["id", "secret"]}),
            "unknown column `secret`",
        ),
        (
            json!({"dataset": "orders", "format": "csv", "columns": []}),
            "choose at least one column",
        ),
        (
            json!({"dataset": "orders", "format": "csv", "columns": ["id", "id"]}),
            "chosen twice",
        ),
        (
            json!({"dataset": "orders", "format": "csv", "extra": 1}),
            "unknown field `extra`",
        ),
    ];
    for (body, expected) in cases {
        let (status, code, message) = error_of(
            alice
                .post("/api/v1/exports")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, code.as_str()),
            (400, "bad_request"),
            "{body}: {message}"
        );
        assert!(
            message.contains(expected),
            "{body}: {message:?} should mention {expected:?}"
        );
    }

    let (status, _, message) = error_of(
        alice
            .post("/api/v1/exports")
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{message}");

    let (status, code, _) = error_of(
        alice
            .get("/api/v1/exports/does-not-exist")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code, _) = error_of(alice.get("/api/v1/nothing-here").send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code, _) = error_of(
        alice
            .http
            .delete(server.url("/api/v1/exports"))
            .header("x-forwarded-user", "alice")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    // Percent-encoded bytes that are not UTF-8 cannot be an id: refused in the error shape.
    let (status, code, _) =
        error_of(alice.get("/api/v1/exports/%ff%fe").send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "bad_request"));

    let (status, code, message) =
        error_of(reqwest::get(server.url("/api/v1/exports")).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    assert!(message.contains("x-forwarded-user"), "{message}");

    let (status, _, message) = error_of(
        alice
            .post("/api/v1/exports")
            .header("idempotency-key", "")
            .json(&orders("csv"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{message}");
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_concurrent_job_limit_is_enforced_before_queueing() {
    // A worker-less web instance keeps jobs queued, so the limit is reached deterministically.
    let server = TestServer::start(&["--role", "web", "--max-active-jobs", "2"]).await;
    let alice = server.user("alice");
    alice.submit(orders("csv")).await;
    alice.submit(orders("csv")).await;
    let (status, code, message) = error_of(
        alice
            .post("/api/v1/exports")
            .json(&orders("csv"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (429, "too_many_requests"));
    assert!(message.contains("2 exports in progress"), "{message}");
    // Another user has limits of their own.
    server.user("bob").submit(orders("csv")).await;
    let list: Value = alice
        .get("/api/v1/exports")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "the refused export was never stored"
    );
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_row_cap_refuses_an_export_whose_count_is_known() {
    let server = TestServer::start(&["--row-cap", "2000"]).await;
    let (status, code, message) = error_of(
        server
            .user("alice")
            .post("/api/v1/exports")
            .json(&orders("csv"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "bad_request"));
    assert!(
        message.contains(&format!("would have {DEMO_ORDERS} rows"))
            && message.contains("at most 2000"),
        "{message}"
    );
    let ok = server
        .user("alice")
        .submit(json!({"dataset": "customers", "format": "csv", "params": {"country": "JP"}}))
        .await;
    assert_eq!(ok["status"], "queued");
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_job() {
    let server = TestServer::start(&["--role", "web"]).await;
    let alice = server.user("alice");
    let send = |user: &crate::support::User| {
        user.post("/api/v1/exports")
            .header("idempotency-key", "order-42")
            .json(&orders("csv"))
            .send()
    };
    let first: Value = send(&alice).await.unwrap().json().await.unwrap();
    let second: Value = send(&alice).await.unwrap().json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    let list: Value = alice
        .get("/api/v1/exports")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let bobs: Value = send(&server.user("bob"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(bobs["id"], first["id"], "keys are per user");
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_queued_export_can_be_cancelled_and_retried() {
    let server = TestServer::start(&["--role", "web"]).await;
    let alice = server.user("alice");
    let job = alice.submit(orders("csv")).await;
    let id = job["id"].as_str().unwrap();
    let res = alice
        .post(&format!("/api/v1/exports/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cancelled: Value = res.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["error"]["code"], "cancelled");

    let (status, code, _) = error_of(alice.download(id).await).await;
    assert_eq!((status, code.as_str()), (409, "conflict"));

    let res = alice
        .post(&format!("/api/v1/exports/{id}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let retried: Value = res.json().await.unwrap();
    assert_eq!(retried["status"], "queued");
    assert!(retried.get("error").is_none());
    let (status, code, _) = error_of(
        alice
            .post(&format!("/api/v1/exports/{id}/retry"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (409, "conflict"),
        "only failed or cancelled exports are retried"
    );
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_format_of_the_demo_downloads_with_the_right_type() {
    let server = TestServer::start(&[]).await;
    let alice = server.user("alice");
    for (format, content_type) in [
        ("ndjson", "application/x-ndjson"),
        ("json", "application/json"),
        (
            "xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
    ] {
        let job = alice.submit(orders(format)).await;
        let id = job["id"].as_str().unwrap();
        let done = alice.wait_for(id, DONE, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let res = alice.download(id).await;
        assert_eq!(res.headers()["content-type"], content_type);
        let bytes = res.bytes().await.unwrap();
        let rows = match format {
            "ndjson" => bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count(),
            "json" => serde_json::from_slice::<Vec<Value>>(&bytes).unwrap().len(),
            _ => {
                use calamine::Reader;
                let mut book = calamine::Xlsx::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
                book.worksheet_range("Data").unwrap().rows().count() - 1
            }
        };
        assert_eq!(rows as u64, DEMO_ORDERS, "{format}");
    }
    server.running.shutdown().await.unwrap();
}

/// A PostgreSQL dataset with display names and a default time zone, served for real.
async fn events_server() -> (TestServer, String, sqlx::PgPool) {
    use sqlx::Executor;
    let url = crate::support::service_url("EXPORTAL_TEST_POSTGRES_URL");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let table = format!("events_{}", uuid::Uuid::new_v4().simple());
    pool.execute(
        format!(
            "CREATE TABLE {table} (id int, at timestamptz, doc jsonb, name text);
             INSERT INTO {table} VALUES
               (1, '2024-03-31 00:30:00+00', '{{\"a\": 1}}', 'x,y'),
               (2, '2024-03-31 01:30:00+00', NULL, 'plain;semi')"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap().keep();
    let file = dir.join("datasets.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[sources.pg]
url = "{url}"

[[datasets]]
id = "events"
title = "Events"
source = "pg"
sql = "SELECT id, at, doc, name FROM {table} ORDER BY id"

[datasets.labels]
id = "Event #"
at = "When"

[datasets.defaults]
time_zone = "Europe/Paris"
"#
        ),
    )
    .unwrap();
    let server = TestServer::start(&["--datasets", file.to_str().unwrap()]).await;
    (server, table, pool)
}

#[tokio::test]
async fn file_options_shape_the_preview_and_the_file_with_the_dataset_defaults() {
    let (server, table, pool) = events_server().await;
    let alice = server.user("alice");

    let datasets: Value = alice
        .get("/api/v1/datasets")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = &datasets[0];
    assert_eq!(events["labels"], json!({"id": "Event #", "at": "When"}));
    assert_eq!(events["defaults"], json!({"time_zone": "Europe/Paris"}));
    assert_eq!(events["columns"][2], json!({"name": "doc", "type": "json"}));

    // The preview shows what the file will hold: display names, the dataset's time zone
    // (Paris changes its offset at 01:00 UTC that night), JSON as JSON.
    let preview = alice
        .post_json(
            "/api/v1/preview",
            &json!({"dataset": "events", "format": "ndjson", "options": {"labels": true}}),
        )
        .await;
    assert_eq!(
        preview["columns"],
        json!(["Event #", "When", "doc", "name"])
    );
    assert_eq!(
        preview["rows"][0],
        json!([1, "2024-03-31T01:30:00+01:00", {"a": 1}, "x,y"])
    );
    assert_eq!(
        preview["rows"][1],
        json!([2, "2024-03-31T03:30:00+02:00", null, "plain;semi"])
    );
    // A CSV holds the document's text, and so does its preview.
    let preview = alice
        .post_json(
            "/api/v1/preview",
            &json!({"dataset": "events", "format": "csv"}),
        )
        .await;
    assert_eq!(preview["columns"], json!(["id", "at", "doc", "name"]));
    assert_eq!(preview["rows"][0][2], json!("{\"a\": 1}"));

    // Excel-ready: BOM, `;`, display names; the job keeps the options it was resolved with.
    let job = alice
        .submit(json!({"dataset": "events", "format": "csv",
                       "options": {"delimiter": ";", "bom": true, "labels": true}}))
        .await;
    assert_eq!(
        job["options"],
        json!({"delimiter": ";", "bom": true, "time_zone": "Europe/Paris", "labels": true})
    );
    let id = job["id"].as_str().unwrap();
    alice
        .wait_for(id, &["succeeded"], Duration::from_secs(30))
        .await;
    let body = alice.download(id).await.bytes().await.unwrap();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "\u{feff}Event #;When;doc;name\r\n\
         1;2024-03-31T01:30:00+01:00;\"{\"\"a\"\": 1}\";x,y\r\n\
         2;2024-03-31T03:30:00+02:00;;\"plain;semi\"\r\n"
    );

    // Without options: no BOM, commas, column names, and the dataset's time zone still.
    let job = alice
        .submit(json!({"dataset": "events", "format": "csv"}))
        .await;
    let id = job["id"].as_str().unwrap();
    alice
        .wait_for(id, &["succeeded"], Duration::from_secs(30))
        .await;
    let body = alice.download(id).await.bytes().await.unwrap();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "id,at,doc,name\r\n\
         1,2024-03-31T01:30:00+01:00,\"{\"\"a\"\": 1}\",\"x,y\"\r\n\
         2,2024-03-31T03:30:00+02:00,,plain;semi\r\n"
    );

    // UTC asked for: the instants as stored. NDJSON embeds the JSON.
    let job = alice
        .submit(json!({"dataset": "events", "format": "ndjson", "options": {"time_zone": "UTC"}}))
        .await;
    let id = job["id"].as_str().unwrap();
    alice
        .wait_for(id, &["succeeded"], Duration::from_secs(30))
        .await;
    let body = alice.download(id).await.text().await.unwrap();
    assert_eq!(
        body,
        "{\"id\":1,\"at\":\"2024-03-31T00:30:00Z\",\"doc\":{\"a\": 1},\"name\":\"x,y\"}\n\
         {\"id\":2,\"at\":\"2024-03-31T01:30:00Z\",\"doc\":null,\"name\":\"plain;semi\"}\n"
    );

    // Options that make no sense are refused, each with its reason.
    for (options, reason) in [
        (
            json!({"time_zone": "Mars/Olympus"}),
            "unknown time zone `Mars/Olympus`",
        ),
        (
            json!({"time_zone": "x".repeat(1000)}),
            "at most 64 characters",
        ),
        (json!({"delimiter": ":"}), "unknown variant"),
        (json!({"colour": "red"}), "unknown field `colour`"),
    ] {
        for path in ["/api/v1/preview", "/api/v1/exports"] {
            let res = alice
                .post(path)
                .json(&json!({"dataset": "events", "format": "csv", "options": options}))
                .send()
                .await
                .unwrap();
            let (status, code, message) = error_of(res).await;
            assert_eq!(
                (status, code.as_str()),
                (400, "bad_request"),
                "{path} {options}"
            );
            assert!(message.contains(reason), "{path}: {message}");
            assert!(
                message.len() < 600,
                "{path}: a short message, not {} bytes",
                message.len()
            );
        }
    }

    use sqlx::Executor;
    pool.execute(format!("DROP TABLE {table}").as_str())
        .await
        .unwrap();
}
