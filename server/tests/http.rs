//! The server as a client sees it: spawned for real on port 0 with a fresh data directory.

use futures::{SinkExt, StreamExt};
use leptos::config::LeptosOptions;
use serde_json::Value;
use server::config::{LogFormat, Role, Settings};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

struct TestServer {
    running: server::Running,
    data: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let settings = Settings {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: data.path().join("data"),
            role: Role::All,
            log_format: LogFormat::Plain,
            shutdown_grace: Duration::from_secs(5),
        };
        let leptos = LeptosOptions::builder().output_name("exportal").build();
        let running = server::start(settings, leptos)
            .await
            .expect("server starts");
        TestServer { running, data }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }
}

#[tokio::test]
async fn healthz_answers_while_the_process_is_up() {
    let server = TestServer::start().await;
    let res = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn readyz_reports_an_unwritable_data_directory() {
    let server = TestServer::start().await;
    let res = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ready");

    // Replace the data directory by a plain file: writes into it must now fail.
    let dir = server.data.path().join("data");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let res = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"][0]["name"], "data_dir");
    assert_eq!(body["checks"][0]["ok"], false);
    assert!(body["checks"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("not writable"));
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_page_is_rendered_on_the_server() {
    let server = TestServer::start().await;
    let res = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("<title>Exportal</title>"), "{html}");
    assert!(
        html.contains("data-testid=\"server-version\""),
        "status not rendered: {html}"
    );
    assert!(
        html.contains("/pkg/exportal.js"),
        "hydration script missing"
    );

    let res = reqwest::get(server.url("/no/such/page")).await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("Page not found"));
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_status_server_function_answers_over_http() {
    let server = TestServer::start().await;
    let res = reqwest::Client::new()
        .post(server.url("/api/fn/status"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["role"], "all");
    assert_eq!(body["storage"], "local");
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_websocket_greets_first_and_closes_for_a_restart_on_shutdown() {
    let server = TestServer::start().await;
    let url = format!("ws://{}/ws", server.running.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
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
    let hello: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["version"], env!("CARGO_PKG_VERSION"));

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
    let settings = Settings {
        addr: taken.local_addr().unwrap(),
        data_dir: data.path().to_path_buf(),
        role: Role::All,
        log_format: LogFormat::Plain,
        shutdown_grace: Duration::from_secs(1),
    };
    let leptos = LeptosOptions::builder().output_name("exportal").build();
    let Err(e) = server::start(settings, leptos).await else {
        panic!("started on a busy port")
    };
    assert!(format!("{e:#}").contains("cannot listen on"), "{e:#}");
}
