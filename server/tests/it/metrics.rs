//! `GET /metrics` as Prometheus sees it: values after known sequences of jobs (counted, not just
//! present), on web and worker instances; the queue, poison and socket gauges; the bearer token.

use crate::support::{orders, TestServer, DEMO_ORDERS};
use app::jobs::ExportRequest;
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Value};
use server::blobs::{local::LocalBlobStore, BlobError, BlobMeta, BlobStore, ByteStream, Download};
use server::catalog::{demo, Catalog};
use server::export::ExportContext;
use server::jobs::{local::LocalJobStore, Jobs};
use server::live::Hub;
use server::metrics::Metrics;
use server::queue::{local::LocalQueue, Queue};
use server::service::{Limits, Service};
use server::worker::{Outcome, Worker, WorkerConfig};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// One sample line of the text format: `name{label="value",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape.
#[derive(Debug)]
struct Scrape(Vec<Sample>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name_end = line
                .find(['{', ' '])
                .expect("a name then labels or a value");
            let name = line[..name_end].to_string();
            let mut rest = line[name_end..].chars().peekable();
            let mut labels = BTreeMap::new();
            if rest.peek() == Some(&'{') {
                rest.next();
                loop {
                    match rest.next() {
                        Some('}') => break,
                        Some(',') => continue,
                        Some(c) => {
                            let mut key = c.to_string();
                            for c in rest.by_ref() {
                                if c == '=' {
                                    break;
                                }
                                key.push(c);
                            }
                            assert_eq!(rest.next(), Some('"'), "{line}");
                            let mut value = String::new();
                            loop {
                                match rest.next().expect("a closed label value") {
                                    '"' => break,
                                    '\\' => match rest.next() {
                                        Some('n') => value.push('\n'),
                                        Some(c) => value.push(c),
                                        None => panic!("{line}"),
                                    },
                                    c => value.push(c),
                                }
                            }
                            labels.insert(key, value);
                        }
                        None => panic!("unclosed labels: {line}"),
                    }
                }
            }
            let value: String = rest.collect();
            let value = value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no value: {line}"));
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Scrape(samples)
    }

    /// The value of the series with exactly these labels, if it exists.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut found = self
            .0
            .iter()
            .filter(|s| s.name == name && s.labels == wanted);
        let value = found.next().map(|s| s.value);
        assert!(found.next().is_none(), "{name} {labels:?} is there twice");
        value
    }

    /// Every series of `name`, whatever its labels.
    fn all(&self, name: &str) -> Vec<&Sample> {
        self.0.iter().filter(|s| s.name == name).collect()
    }
}

/// Scrapes `/metrics` as Prometheus would: no user identity, no cookie.
async fn scrape(server: &TestServer) -> Scrape {
    let res = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Scrape::parse(&res.text().await.unwrap())
}

/// Scrapes until `done` holds (the queue gauges are sampled, sockets close asynchronously).
async fn scrape_until(server: &TestServer, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let m = scrape(server).await;
        if done(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn file_bytes_on_disk(files: &std::path::Path) -> u64 {
    std::fs::read_dir(files)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[tokio::test]
async fn a_known_sequence_of_exports_is_counted_where_each_step_happened() {
    // A web instance and a worker instance on one data directory: the worker starts only
    // after the cancel, so the cancelled job never runs.
    let shared = tempfile::tempdir().unwrap();
    let data = shared.path().join("data");
    let data_arg = data.display().to_string();
    let web = TestServer::start(&["--role", "web", "--data-dir", &data_arg]).await;
    let alice = web.user("alice");
    let first = alice.submit(orders("csv")).await;
    let second = alice.submit(orders("csv")).await;
    let cancelled = alice.submit(orders("ndjson")).await;
    let refused = alice
        .post("/api/v1/exports")
        .json(&json!({"dataset": "no_such_dataset", "format": "csv"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let cancel = alice
        .post(&format!(
            "/api/v1/exports/{}/cancel",
            cancelled["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);

    let m = scrape(&web).await;
    let orders_csv = [("dataset", "orders"), ("format", "csv")];
    let orders_ndjson = [("dataset", "orders"), ("format", "ndjson")];
    assert_eq!(
        m.get("exportal_jobs_submitted_total", &orders_csv),
        Some(2.0)
    );
    assert_eq!(
        m.get("exportal_jobs_submitted_total", &orders_ndjson),
        Some(1.0)
    );
    assert_eq!(
        m.all("exportal_jobs_submitted_total").len(),
        2,
        "a refused submit creates no job"
    );
    assert_eq!(
        m.get(
            "exportal_jobs_finished_total",
            &[
                ("dataset", "orders"),
                ("format", "ndjson"),
                ("status", "cancelled")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(m.all("exportal_jobs_finished_total").len(), 1);
    assert!(
        m.all("exportal_export_duration_seconds_count").is_empty(),
        "a job cancelled before it started has no duration"
    );
    let submits = |status: &'static str| {
        m.get(
            "exportal_http_requests_total",
            &[
                ("route", "/api/v1/exports"),
                ("method", "POST"),
                ("status", status),
            ],
        )
    };
    assert_eq!(submits("202"), Some(3.0));
    assert_eq!(submits("400"), Some(1.0));
    assert_eq!(
        m.get(
            "exportal_http_requests_total",
            &[
                ("route", "/api/v1/exports/{id}/cancel"),
                ("method", "POST"),
                ("status", "200"),
            ],
        ),
        Some(1.0),
        "routes are their templates, never the job ids"
    );
    assert_eq!(
        m.get(
            "exportal_http_request_duration_seconds_count",
            &[("route", "/api/v1/exports"), ("method", "POST")]
        ),
        Some(4.0)
    );
    // The cancelled job's message stays until a worker meets it and drops it.
    assert_eq!(m.get("exportal_queue_depth", &[]), Some(3.0));
    assert_eq!(m.get("exportal_poison_queue_depth", &[]), Some(0.0));
    assert_eq!(m.get("exportal_exports_running", &[]), Some(0.0));

    let worker = TestServer::start(&["--role", "worker", "--data-dir", &data_arg]).await;
    let mut rows = 0.0;
    let mut bytes = 0.0;
    for job in [&first, &second] {
        let done = alice
            .wait_for(
                job["id"].as_str().unwrap(),
                &["succeeded", "failed"],
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(done["status"], "succeeded", "{done}");
        rows += done["file"]["rows"].as_f64().unwrap();
        bytes += done["file"]["bytes"].as_f64().unwrap();
    }
    assert_eq!(rows, 2.0 * DEMO_ORDERS as f64);
    assert_eq!(bytes, file_bytes_on_disk(&data.join("files")) as f64);

    let m = scrape_until(&worker, "emptied the queue", |m| {
        m.get("exportal_queue_depth", &[]) == Some(0.0)
    })
    .await;
    let succeeded = [
        ("dataset", "orders"),
        ("format", "csv"),
        ("status", "succeeded"),
    ];
    assert_eq!(m.get("exportal_jobs_finished_total", &succeeded), Some(2.0));
    assert_eq!(
        m.all("exportal_jobs_finished_total").len(),
        1,
        "the cancel was counted on the web instance, where it happened"
    );
    assert_eq!(m.get("exportal_export_rows_total", &orders_csv), Some(rows));
    assert_eq!(
        m.get("exportal_export_bytes_total", &orders_csv),
        Some(bytes)
    );
    assert_eq!(
        m.get("exportal_export_duration_seconds_count", &succeeded),
        Some(2.0)
    );
    let mut inf = succeeded.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(
        m.get("exportal_export_duration_seconds_bucket", &inf),
        Some(2.0)
    );
    assert!(
        m.get("exportal_export_duration_seconds_sum", &succeeded)
            .unwrap()
            > 0.0
    );
    assert_eq!(
        m.get("exportal_job_start_delay_seconds_count", &[]),
        Some(2.0),
        "two jobs started; the cancelled one never did"
    );
    assert_eq!(m.get("exportal_exports_running", &[]), Some(0.0));
    assert!(m.all("exportal_jobs_submitted_total").is_empty());
    assert!(m.all("exportal_jobs_retried_total").is_empty());
    assert_eq!(m.get("exportal_poison_queue_depth", &[]), Some(0.0));

    worker.running.shutdown().await.unwrap();
    web.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_socket_gauge_follows_open_live_connections() {
    let server = TestServer::start(&[]).await;
    let mut request = format!("ws://{}/ws", server.running.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-user", "alice".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let snapshot = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(matches!(snapshot, Ok(Some(Ok(_)))), "{snapshot:?}");

    let m = scrape(&server).await;
    assert_eq!(m.get("exportal_ws_connections", &[]), Some(1.0));
    assert_eq!(
        m.get(
            "exportal_http_requests_total",
            &[("route", "/ws"), ("method", "GET"), ("status", "101")]
        ),
        Some(1.0)
    );

    ws.close(None).await.unwrap();
    drop(ws);
    scrape_until(&server, "counted the socket closed", |m| {
        m.get("exportal_ws_connections", &[]) == Some(0.0)
    })
    .await;
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_poisoned_message_shows_in_the_poison_gauge_and_counter() {
    let server = TestServer::start(&[]).await;
    let pool = server::embedded::open(&server.data.path().join("data").join("exportal.db"))
        .await
        .unwrap();
    let queue = LocalQueue::new(pool);
    queue
        .send("{not a job message", Duration::ZERO)
        .await
        .unwrap();

    let m = scrape_until(&server, "poisoned the message", |m| {
        m.get("exportal_poison_queue_depth", &[]) == Some(1.0)
    })
    .await;
    assert_eq!(
        m.get("exportal_jobs_poisoned_total", &[("reason", "unreadable")]),
        Some(1.0)
    );
    assert_eq!(m.all("exportal_jobs_poisoned_total").len(), 1);
    assert_eq!(m.get("exportal_queue_depth", &[]), Some(0.0));
    assert_eq!(
        m.get("exportal_queue_sample_failures_total", &[]),
        Some(0.0)
    );
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_a_token_the_scrape_needs_it_and_still_no_user() {
    const TOKEN: &str = "scrape-token-0123456789";
    let server = TestServer::start(&["--metrics-token", TOKEN]).await;
    let http = reqwest::Client::new();
    for authorization in [None, Some("Bearer wrong-token-0123456789"), Some(TOKEN)] {
        let mut req = http.get(server.url("/metrics"));
        if let Some(value) = authorization {
            req = req.header("authorization", value);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{authorization:?}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        assert!(body["error"]["message"].as_str().is_some());
    }

    let res = http
        .get(server.url("/metrics"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let m = Scrape::parse(&res.text().await.unwrap());
    assert_eq!(
        m.get(
            "exportal_http_requests_total",
            &[("route", "/metrics"), ("method", "GET"), ("status", "401")]
        ),
        Some(3.0)
    );

    // Everything else still needs a user in header mode.
    let res = http
        .get(server.url("/api/v1/exports"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_worker_instance_serves_metrics_and_unknown_paths_share_one_label() {
    let server = TestServer::start(&["--role", "worker"]).await;
    let http = reqwest::Client::new();
    for path in ["/no/such/page", "/another/made-up/path"] {
        let res = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 404);
    }
    let m = scrape(&server).await;
    assert_eq!(
        m.get(
            "exportal_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        Some(2.0)
    );
    let routes: Vec<&str> = m
        .all("exportal_http_requests_total")
        .iter()
        .map(|s| s.labels["route"].as_str())
        .collect();
    assert!(routes.iter().all(|r| !r.contains("made-up")), "{routes:?}");
    server.running.shutdown().await.unwrap();
}

/// Local files whose first `fail_puts` writes fail as if storage were unavailable.
struct FlakyBlobs {
    inner: LocalBlobStore,
    fail_puts: AtomicU32,
}

#[async_trait]
impl BlobStore for FlakyBlobs {
    async fn put(&self, name: &str, meta: &BlobMeta, body: ByteStream) -> Result<u64, BlobError> {
        if self
            .fail_puts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(BlobError::Io("injected: storage unavailable".into()));
        }
        self.inner.put(name, meta, body).await
    }
    async fn delete(&self, name: &str) -> Result<(), BlobError> {
        self.inner.delete(name).await
    }
    async fn size(&self, name: &str) -> Result<Option<u64>, BlobError> {
        self.inner.size(name).await
    }
    async fn download(
        &self,
        name: &str,
        meta: &BlobMeta,
        ttl: Duration,
    ) -> Result<Download, BlobError> {
        self.inner.download(name, meta, ttl).await
    }
    async fn ping(&self) -> Result<(), BlobError> {
        self.inner.ping().await
    }
}

/// A worker and a service sharing one [`Metrics`], driven one message at a time.
#[tokio::test]
async fn retries_and_poisoned_jobs_are_counted_by_how_they_came_about() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    demo::ensure_database(&db, 500).await.unwrap();
    let catalog = Arc::new(
        Catalog::from_toml(&demo::catalog_toml(&db, 500), dir.path())
            .await
            .unwrap(),
    );
    let pool = server::embedded::open(&dir.path().join("exportal.db"))
        .await
        .unwrap();
    let jobs = Jobs::new(Arc::new(LocalJobStore::new(pool.clone())), Hub::new());
    let queue: Arc<dyn Queue> = Arc::new(LocalQueue::new(pool.clone()));
    let blobs = Arc::new(FlakyBlobs {
        inner: LocalBlobStore::open(&dir.path().join("files"))
            .await
            .unwrap(),
        fail_puts: AtomicU32::new(1),
    });
    let metrics = Arc::new(Metrics::new().watch_queue(queue.clone()));
    let wake = Arc::new(tokio::sync::Notify::new());
    let worker = Arc::new(Worker::new(
        queue.clone(),
        jobs.clone(),
        Arc::new(ExportContext {
            catalog: catalog.clone(),
            blobs: blobs.clone(),
            temp_dir: dir.path().to_path_buf(),
            row_cap: u64::MAX,
            csv_crlf: true,
        }),
        WorkerConfig {
            max_attempts: 2,
            retry_base: Duration::ZERO,
            metrics: metrics.clone(),
            ..WorkerConfig::default()
        },
        wake.clone(),
    ));
    let service = Service {
        catalog,
        jobs,
        queue: queue.clone(),
        blobs,
        limits: Limits {
            max_active_jobs: 10,
            row_cap: u64::MAX,
            download_ttl: Duration::from_secs(60),
        },
        wake,
        worker: Some(worker.clone()),
        preview_slots: Default::default(),
        audit: Arc::new(server::audit::local::LocalAuditLog::new(pool)),
        queue_is_approximate: false,
        stats_cache: Default::default(),
        metrics: metrics.clone(),
    };
    let request: ExportRequest = serde_json::from_value(orders("csv")).unwrap();
    let next = || async {
        for _ in 0..200 {
            if let Some(m) = queue
                .receive(1, Duration::from_secs(5))
                .await
                .unwrap()
                .pop()
            {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no message became visible");
    };

    // One job: its first attempt fails on storage and is retried, the second succeeds.
    service
        .submit("alice", request.clone(), None, None)
        .await
        .unwrap();
    assert_eq!(worker.process(next().await).await, Outcome::Retrying);
    assert_eq!(worker.process(next().await).await, Outcome::Succeeded);

    // Another: its message comes back twice from workers that died, then is poisoned; its
    // owner runs it again.
    let (poisoned, _) = service.submit("alice", request, None, None).await.unwrap();
    for _ in 0..2 {
        let m = next().await;
        queue.extend(&m, Duration::ZERO).await.unwrap();
    }
    assert_eq!(worker.process(next().await).await, Outcome::Poisoned);
    service.retry("alice", &poisoned.id, None).await.unwrap();

    let m = Scrape::parse(&metrics.render().await);
    let orders_csv = [("dataset", "orders"), ("format", "csv")];
    let csv = |extra: (&'static str, &'static str)| [orders_csv[0], orders_csv[1], extra];
    assert_eq!(
        m.get("exportal_jobs_submitted_total", &orders_csv),
        Some(2.0)
    );
    assert_eq!(
        m.get("exportal_jobs_retried_total", &csv(("trigger", "failure"))),
        Some(1.0)
    );
    assert_eq!(
        m.get("exportal_jobs_retried_total", &csv(("trigger", "user"))),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "exportal_jobs_finished_total",
            &csv(("status", "succeeded"))
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get("exportal_jobs_finished_total", &csv(("status", "failed"))),
        Some(1.0),
        "the poisoned job failed"
    );
    assert_eq!(
        m.get(
            "exportal_jobs_poisoned_total",
            &[("reason", "attempts_exhausted")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get("exportal_export_rows_total", &orders_csv),
        Some(500.0)
    );
    assert_eq!(
        m.get("exportal_job_start_delay_seconds_count", &[]),
        Some(1.0),
        "the first job's first attempt; its retry and the poisoned job's deliveries are not starts"
    );
    assert_eq!(m.get("exportal_poison_queue_depth", &[]), Some(1.0));
    assert_eq!(
        m.get("exportal_queue_depth", &[]),
        Some(1.0),
        "the retry's message"
    );
    assert_eq!(m.get("exportal_exports_running", &[]), Some(0.0));
}
