//! The process as a client sees it: probes, the page, server functions, the live channel.

use crate::support::TestServer;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

#[tokio::test]
async fn healthz_answers_while_the_process_is_up() {
    let server = TestServer::start(&[]).await;
    let res = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn readyz_checks_every_store_and_reports_the_one_that_fails() {
    let server = TestServer::start(&[]).await;
    let res = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    let names: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["job_store", "queue", "files"]);

    // Replace the files directory by a plain file: writes into it must now fail.
    let files = server.files_dir();
    std::fs::remove_dir_all(&files).unwrap();
    std::fs::write(&files, b"not a directory").unwrap();
    let res = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    let files_check = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "files")
        .unwrap();
    assert_eq!(files_check["ok"], false);
    assert!(files_check["detail"].as_str().is_some());
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_page_is_rendered_on_the_server() {
    let server = TestServer::start(&[]).await;
    let alice = server.user("alice");
    let res = alice.get("/").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("<title>Exportal</title>"), "{html}");
    assert!(
        html.contains("/pkg/exportal.js"),
        "hydration script missing"
    );

    let res = alice.get("/no/such/page").send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("Page not found"));
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_status_server_function_answers_over_http() {
    let server = TestServer::start(&[]).await;
    let res = server
        .user("alice")
        .post("/api/fn/status")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["role"], "all");
    assert_eq!(body["storage"], "local");

    // The page's functions take JSON only: a form post, which is what another site's HTML form
    // can send, is refused as not understood.
    let res = server
        .user("alice")
        .post("/api/fn/cancel")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("id=01a2481ad25376c3aa3eb35381eb05a0")
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not understood"), "{body}");

    // A server function's error carries the status the REST API gives the same error.
    let res = server
        .user("alice")
        .post("/api/fn/cancel")
        .json(&serde_json::json!({"id": "01a2481ad25376c3aa3eb35381eb05a0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_websocket_sends_a_snapshot_first_and_closes_for_a_restart_on_shutdown() {
    let server = TestServer::start(&[]).await;
    let mut request = format!("ws://{}/ws", server.running.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-user", "alice".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("ws connects");
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a first message arrives")
        .unwrap()
        .unwrap();
    let Message::Text(text) = first else {
        panic!("expected text, got {first:?}")
    };
    let snapshot: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        snapshot,
        serde_json::json!({"type": "snapshot", "jobs": []})
    );

    // Whatever the page sends does not break the channel.
    ws.send(Message::Text("noise".into())).await.unwrap();

    let shutdown = tokio::spawn(server.running.shutdown());
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the server closes the channel on shutdown");
    assert_eq!(u16::from(close.unwrap().code), 1012);
    shutdown.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_busy_port_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let data = tempfile::tempdir().unwrap();
    let settings = server::config::Settings::from_args([
        "--addr".to_string(),
        taken.local_addr().unwrap().to_string(),
        "--data-dir".to_string(),
        data.path().display().to_string(),
    ])
    .unwrap();
    let leptos = leptos::config::LeptosOptions::builder()
        .output_name("exportal")
        .build();
    let Err(e) = server::start(settings, leptos).await else {
        panic!("started on a busy port")
    };
    assert!(format!("{e:#}").contains("cannot listen on"), "{e:#}");
}

/// The first run of `scripts/run.sh`: no settings at all, so the data directory is the relative
/// `./data` and the demo catalogue is created in it and served.
#[tokio::test]
async fn the_demo_is_served_from_a_relative_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--data-dir",
        "data",
        "--demo-orders",
        "1000",
        "--auth",
        "header",
    ];
    let server = crate::process::Server::start_in(dir.path(), &args.map(String::from));
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/preview", server.base()))
        .header("x-forwarded-user", "alice")
        .json(&serde_json::json!({"dataset": "orders", "format": "csv"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let preview: serde_json::Value = res.json().await.unwrap();
    assert_eq!(preview["estimated_rows"], 1000, "{preview}");
    assert!(dir.path().join("data").join("demo.db").is_file());
}
