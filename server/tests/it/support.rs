//! Shared helpers: a spawned server and clients acting as users.

use leptos::config::LeptosOptions;
use serde_json::{json, Value};
use server::config::Settings;
use std::time::Duration;

pub struct TestServer {
    pub running: server::Running,
    pub data: tempfile::TempDir,
}

/// Demo orders in test servers: enough to stream, small enough to create in a moment.
pub const DEMO_ORDERS: u64 = 3000;

impl TestServer {
    /// Starts a server with header authentication (users are named by `x-forwarded-user`)
    /// and the demo catalogue; `extra` adds or overrides options.
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_with(
            extra,
            LeptosOptions::builder().output_name("exportal").build(),
        )
        .await
    }

    /// Like [`TestServer::start`], with the page's site options (site root, hashed names).
    pub async fn start_with(extra: &[&str], leptos: LeptosOptions) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = vec![
            "--addr".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data.path().join("data").display().to_string(),
            "--auth".into(),
            "header".into(),
            "--demo-orders".into(),
            DEMO_ORDERS.to_string(),
            "--shutdown-grace".into(),
            "5s".into(),
            "--retry-base".into(),
            "100ms".into(),
            "--poll-max".into(),
            "200ms".into(),
            // Tests send many previews and submits at once; the rate limit has its own tests.
            "--rate-burst".into(),
            "100000".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let settings = Settings::from_args(args).expect("valid test settings");
        let running = server::start(settings, leptos)
            .await
            .expect("server starts");
        TestServer { running, data }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    pub fn user(&self, name: &str) -> User {
        User {
            base: self.url(""),
            name: name.to_string(),
            http: reqwest::Client::new(),
        }
    }

    pub fn files_dir(&self) -> std::path::PathBuf {
        self.data.path().join("data").join("files")
    }
}

/// A client acting as one user.
pub struct User {
    pub base: String,
    pub name: String,
    pub http: reqwest::Client,
}

impl User {
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .header("x-forwarded-user", &self.name)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .header("x-forwarded-user", &self.name)
    }

    /// POSTs `body` and returns the answer's JSON, whatever the status.
    pub async fn post_json(&self, path: &str, body: &Value) -> Value {
        self.post(path)
            .json(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Submits an export and returns the job JSON, asserting 202.
    pub async fn submit(&self, body: Value) -> Value {
        let res = self
            .post("/api/v1/exports")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let json: Value = res.json().await.unwrap();
        assert_eq!(status, 202, "submit refused: {json}");
        json
    }

    pub async fn job(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/exports/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls until the job reaches one of `statuses` (or panics after `timeout`).
    pub async fn wait_for(&self, id: &str, statuses: &[&str], timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.job(id).await;
            if statuses.contains(&job["status"].as_str().unwrap_or_default()) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job never reached {statuses:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn download(&self, id: &str) -> reqwest::Response {
        self.get(&format!("/api/v1/exports/{id}/download"))
            .send()
            .await
            .unwrap()
    }
}

/// An export of the demo orders, all rows.
pub fn orders(format: &str) -> Value {
    json!({"dataset": "orders", "format": format})
}

/// The URL of a test database started by scripts/test.sh.
pub fn service_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the tests through scripts/test.sh, which starts the databases"
        )
    })
}
