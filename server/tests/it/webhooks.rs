//! Completion webhooks: real servers post to real receivers on 127.0.0.1, which check the
//! signature the way the README tells receivers to, and answer as each test scripts them
//! (failures, redirects, slowness) to show the retries, the back-off, the durability across a
//! restart and the refusal of unsafe configuration.

use crate::support::{orders, service_url, TestServer};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use server::webhooks::azure::AzureOutbox;
use server::webhooks::local::LocalOutbox;
use server::webhooks::{Delivery, Outbox, OutboxError};
use sha2::Sha256;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const SECRET: &str = "whsec-test-0123456789";

/// What a receiver answers to one request.
#[derive(Clone)]
enum Answer {
    Status(u16),
    Redirect(String),
    /// Waits this long, then answers 200.
    Slow(Duration),
}

struct Hit {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

#[derive(Clone)]
struct ReceiverState {
    /// Answers in order; 200 once they run out.
    script: Arc<Mutex<Vec<Answer>>>,
    hits: Arc<Mutex<Vec<Hit>>>,
}

/// An HTTP receiver on 127.0.0.1 that records every request.
struct Receiver {
    addr: SocketAddr,
    state: ReceiverState,
}

async fn receive(State(s): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> Response {
    s.hits.lock().unwrap().push(Hit {
        headers,
        body,
        at: Instant::now(),
    });
    let answer = {
        let mut script = s.script.lock().unwrap();
        (!script.is_empty()).then(|| script.remove(0))
    };
    match answer {
        None => StatusCode::OK.into_response(),
        Some(Answer::Status(code)) => (
            StatusCode::from_u16(code).unwrap(),
            "receiver says no".repeat(1000),
        )
            .into_response(),
        Some(Answer::Redirect(to)) => {
            (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response()
        }
        Some(Answer::Slow(d)) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
    }
}

impl Receiver {
    async fn start(script: Vec<Answer>) -> Receiver {
        let state = ReceiverState {
            script: Arc::new(Mutex::new(script)),
            hits: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn count(&self) -> usize {
        self.state.hits.lock().unwrap().len()
    }

    /// Waits until `n` requests arrived; returns their events (signature checked) and times.
    async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<(Value, Instant)> {
        let deadline = Instant::now() + timeout;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "the receiver got {} of {n} deliveries",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let hits = self.state.hits.lock().unwrap();
        hits.iter().map(|h| (verified(h), h.at)).collect()
    }

    /// Asserts that no more than `n` requests arrive within `wait`.
    async fn assert_stays_at(&self, n: usize, wait: Duration) {
        tokio::time::sleep(wait).await;
        assert_eq!(self.count(), n, "more deliveries than expected");
    }
}

/// Checks a delivery as a receiver should (README, "Webhooks"): the HMAC of "<t>.<raw body>"
/// with the shared secret, compared in constant time, and a recent `t`. Returns the event.
fn verified(hit: &Hit) -> Value {
    let header = hit.headers["exportal-signature"].to_str().unwrap();
    let (mut t, mut v1) = (None, None);
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().unwrap()),
            Some(("v1", v)) => v1 = Some(hex::decode(v).unwrap()),
            _ => {}
        }
    }
    let (t, v1) = (t.expect("t="), v1.expect("v1="));
    let age = chrono::Utc::now().timestamp() - t;
    assert!((-5..=300).contains(&age), "signature time is {age}s old");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&hit.body);
    mac.verify_slice(&v1)
        .expect("the signature matches the body");
    assert_eq!(hit.headers["content-type"], "application/json");
    let event: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(
        hit.headers["exportal-event-id"].to_str().unwrap(),
        event["id"].as_str().unwrap()
    );
    event
}

fn hook_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--webhook-url", url, "--webhook-secret", SECRET];
    args.extend_from_slice(extra);
    args
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_succeeded_export_is_announced_once_signed_with_its_file_facts_and_a_link_to_the_job() {
    let receiver = Receiver::start(vec![]).await;
    let url = receiver.url();
    let server = TestServer::start(&hook_args(
        &url,
        &["--public-url", "https://exports.example.com"],
    ))
    .await;
    let alice = server.user("alice");
    let job = alice.submit(orders("csv")).await;
    let id = job["id"].as_str().unwrap();
    let done = alice.wait_for(id, &["succeeded"], WAIT).await;

    let events = receiver.wait_for(1, WAIT).await;
    let event = &events[0].0;
    let file = &done["file"];
    assert_eq!(event["type"], "export.succeeded");
    assert_eq!(event["status"], "succeeded");
    assert_eq!(event["job_id"], id);
    assert_eq!(event["owner"], "alice");
    assert_eq!(event["dataset"], "orders");
    assert_eq!(event["format"], "csv");
    assert_eq!(event["rows"], file["rows"]);
    assert_eq!(event["rows"], crate::support::DEMO_ORDERS);
    assert_eq!(event["bytes"], file["bytes"]);
    assert_eq!(event["sha256"], file["sha256"]);
    assert_eq!(event["finished_at"], done["finished_at"]);
    assert_eq!(
        event["job_url"],
        format!("https://exports.example.com/api/v1/exports/{id}")
    );
    assert!(event.get("error").is_none(), "{event}");
    let text = event.to_string();
    assert!(!text.contains("download"), "no link to the file: {text}");
    if let Some(blob) = file["blob"].as_str() {
        assert!(!text.contains(blob), "no storage name: {text}");
    }
    receiver
        .assert_stays_at(1, Duration::from_millis(500))
        .await;
}

/// A datasets file with `fine` (its own webhook) and `broken` (fails at its third row,
/// announced to the server's webhook).
fn datasets_file(dir: &Path, fine_webhook: &str) -> String {
    let file = dir.join("datasets.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[sources.mem]
url = "sqlite::memory:"

[[datasets]]
id = "fine"
title = "Fine"
source = "mem"
sql = "SELECT 1 AS n UNION ALL SELECT 2"
webhook = "{fine_webhook}"

[[datasets]]
id = "broken"
title = "Broken"
source = "mem"
sql = "SELECT n, CASE WHEN n > 2 THEN json('not json') ELSE 'ok' END AS v FROM (SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3)"
"#
        ),
    )
    .unwrap();
    file.display().to_string()
}

#[tokio::test]
async fn a_dataset_webhook_takes_the_place_of_the_servers_and_a_failure_carries_its_error() {
    let server_receiver = Receiver::start(vec![]).await;
    let dataset_receiver = Receiver::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let datasets = datasets_file(dir.path(), &dataset_receiver.url());
    let url = server_receiver.url();
    let server = TestServer::start(&hook_args(&url, &["--datasets", &datasets])).await;
    let bob = server.user("bob");

    let fine = bob
        .submit(json!({"dataset": "fine", "format": "ndjson"}))
        .await;
    let fine = bob
        .wait_for(fine["id"].as_str().unwrap(), &["succeeded"], WAIT)
        .await;
    let event = &dataset_receiver.wait_for(1, WAIT).await[0].0;
    assert_eq!(event["job_id"], fine["id"]);
    assert_eq!(event["status"], "succeeded");
    assert_eq!(event["rows"], 2);
    assert_eq!(event["sha256"], fine["file"]["sha256"]);
    assert_eq!(
        event["job_url"],
        format!("/api/v1/exports/{}", fine["id"].as_str().unwrap()),
        "without EXPORTAL_PUBLIC_URL, the path alone"
    );

    let broken = bob
        .submit(json!({"dataset": "broken", "format": "csv"}))
        .await;
    let broken = bob
        .wait_for(broken["id"].as_str().unwrap(), &["failed"], WAIT)
        .await;
    let event = &server_receiver.wait_for(1, WAIT).await[0].0;
    assert_eq!(event["type"], "export.failed");
    assert_eq!(event["job_id"], broken["id"]);
    assert_eq!(event["dataset"], "broken");
    assert_eq!(event["error"], broken["error"]);
    assert!(event["error"]["code"].is_string(), "{event}");
    assert!(event.get("sha256").is_none(), "no file, no digest: {event}");
    assert_eq!(
        dataset_receiver.count(),
        1,
        "each event goes to one receiver"
    );
    server_receiver
        .assert_stays_at(1, Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn a_cancel_on_a_web_instance_is_announced_by_that_instance() {
    let receiver = Receiver::start(vec![]).await;
    let url = receiver.url();
    // No worker runs here: the job stays queued, and the cancel ends it at once.
    let server = TestServer::start(&hook_args(&url, &["--role", "web"])).await;
    let carol = server.user("carol");
    let job = carol.submit(orders("csv")).await;
    let id = job["id"].as_str().unwrap();
    let res = carol
        .post(&format!("/api/v1/exports/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let event = &receiver.wait_for(1, WAIT).await[0].0;
    assert_eq!(event["type"], "export.cancelled");
    assert_eq!(event["job_id"], id);
    assert_eq!(event["error"]["code"], "cancelled");
    assert_eq!(event["rows"], 0);
    receiver
        .assert_stays_at(1, Duration::from_millis(300))
        .await;
}

/// Asserts the deliveries of one event: the same id and body every time, and pauses between
/// attempts of at least half the doubling back-off (equal jitter) from `base`.
fn assert_retried_with_back_off(hits: &[(Value, Instant)], base: Duration) {
    for (i, pair) in hits.windows(2).enumerate() {
        assert_eq!(pair[0].0, pair[1].0, "every attempt sends the same event");
        let pause = pair[1].1 - pair[0].1;
        let least = base * 2u32.pow(i as u32) / 2;
        assert!(
            pause >= least,
            "attempt {} came {pause:?} after the previous one (back-off at least {least:?})",
            i + 2
        );
    }
}

#[tokio::test]
async fn a_failing_receiver_gets_the_event_again_with_back_off_until_it_accepts_it() {
    let receiver = Receiver::start(vec![Answer::Status(500), Answer::Status(503)]).await;
    let url = receiver.url();
    let server = TestServer::start(&hook_args(&url, &["--webhook-retry-base", "200ms"])).await;
    let dave = server.user("dave");
    let job = dave.submit(orders("csv")).await;
    let id = job["id"].as_str().unwrap();
    dave.wait_for(id, &["succeeded"], WAIT).await;

    let hits = receiver.wait_for(3, WAIT).await;
    assert_eq!(hits[0].0["job_id"], id);
    assert_retried_with_back_off(&hits, Duration::from_millis(200));
    // Accepted on the third attempt: never sent again.
    receiver.assert_stays_at(3, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_slow_receiver_counts_as_failed_after_the_timeout_and_gets_the_event_again() {
    let receiver = Receiver::start(vec![Answer::Slow(Duration::from_secs(3))]).await;
    let url = receiver.url();
    let server = TestServer::start(&hook_args(
        &url,
        &[
            "--webhook-timeout",
            "300ms",
            "--webhook-retry-base",
            "100ms",
        ],
    ))
    .await;
    let erin = server.user("erin");
    let job = erin.submit(orders("csv")).await;
    let hits = receiver.wait_for(2, WAIT).await;
    assert_eq!(hits[1].0["job_id"], job["id"]);
    assert!(
        hits[1].1 - hits[0].1 < Duration::from_secs(3),
        "the second attempt did not wait for the slow answer"
    );
    receiver.assert_stays_at(2, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_redirect_is_a_failed_delivery_never_followed_and_the_event_is_abandoned_after_the_last_attempt(
) {
    let elsewhere = Receiver::start(vec![]).await;
    let receiver = Receiver::start(vec![
        Answer::Redirect(elsewhere.url()),
        Answer::Redirect(elsewhere.url()),
        Answer::Status(200),
    ])
    .await;
    let url = receiver.url();
    let server = TestServer::start(&hook_args(
        &url,
        &[
            "--webhook-retry-base",
            "50ms",
            "--webhook-max-attempts",
            "2",
        ],
    ))
    .await;
    let frank = server.user("frank");
    frank.submit(orders("csv")).await;
    receiver.wait_for(2, WAIT).await;
    // Two attempts allowed, both redirected: the event is dropped, the redirect never taken.
    receiver.assert_stays_at(2, Duration::from_secs(1)).await;
    assert_eq!(elsewhere.count(), 0);
}

/// Starts a server on `args`, lets its first delivery fail, stops it before the retry is due
/// (a first back-off of 3 to 6 s), starts another on the same storage and checks that the
/// event arrives from it.
async fn restart_between_failure_and_retry(args: &[&str], receiver: &Receiver) {
    let first = TestServer::start(args).await;
    let gina = first.user("gina");
    let job = gina.submit(orders("csv")).await;
    let id = job["id"].as_str().unwrap().to_string();
    let failed = receiver.wait_for(1, Duration::from_secs(60)).await;
    first.running.shutdown().await.unwrap();
    let stopped = Instant::now();
    assert_eq!(
        receiver.count(),
        1,
        "the first process stopped before its retry"
    );

    let second = TestServer::start(args).await;
    let hits = receiver.wait_for(2, WAIT).await;
    assert!(hits[1].1 > stopped, "delivered by the second process");
    assert_eq!(hits[1].0, failed[0].0, "the same event");
    assert_eq!(hits[1].0["job_id"], id.as_str());
    assert!(
        hits[1].1 - hits[0].1 >= Duration::from_secs(3),
        "after its back-off"
    );
    receiver
        .assert_stays_at(2, Duration::from_millis(500))
        .await;
    second.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_delivery_that_failed_before_a_restart_is_made_by_the_next_process() {
    let receiver = Receiver::start(vec![Answer::Status(502)]).await;
    let url = receiver.url();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let args = hook_args(&url, &["--data-dir", &data, "--webhook-retry-base", "6s"]);
    restart_between_failure_and_retry(&args, &receiver).await;
}

async fn start_error(args: &[&str]) -> String {
    let mut all = vec!["--addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().display().to_string();
    all.extend_from_slice(&["--data-dir", &data_arg, "--demo-orders", "10"]);
    let settings = match server::config::Settings::from_args(all) {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    let leptos = leptos::config::LeptosOptions::builder()
        .output_name("exportal")
        .build();
    match server::start(settings, leptos).await {
        Ok(running) => {
            running.shutdown().await.unwrap();
            panic!("started with {args:?}")
        }
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn start_up_refuses_unsafe_or_unsigned_webhooks_naming_what_is_wrong() {
    let secret = ["--webhook-secret", SECRET];
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            [&["--webhook-url", "ftp://hooks.example.com/x"][..], &secret].concat(),
            &["--webhook-url", "use http or https"],
        ),
        (
            [
                &["--webhook-url", "https://me:pw@hooks.example.com/"][..],
                &secret,
            ]
            .concat(),
            &["--webhook-url", "user name or password"],
        ),
        (
            [
                &[
                    "--webhook-url",
                    "https://internal.example.com/",
                    "--webhook-hosts",
                    "hooks.example.com, other.example.com",
                ][..],
                &secret,
            ]
            .concat(),
            &["internal.example.com", "EXPORTAL_WEBHOOK_HOSTS"],
        ),
        (
            vec!["--webhook-url", "https://hooks.example.com/"],
            &["EXPORTAL_WEBHOOK_SECRET", "required"],
        ),
        (
            vec![
                "--webhook-url",
                "https://hooks.example.com/",
                "--webhook-secret",
                "short",
            ],
            &["--webhook-secret", "at least 16"],
        ),
    ];
    for (args, expected) in cases {
        let e = start_error(&args).await;
        for part in expected {
            assert!(e.contains(part), "{args:?}: {e}");
        }
        assert!(!e.contains(SECRET), "the secret is never shown: {e}");
    }

    // The same rules for a dataset's own webhook.
    let dir = tempfile::tempdir().unwrap();
    let file = datasets_file(dir.path(), "gopher://hooks.example.com/");
    let e = start_error(&["--datasets", &file]).await;
    assert!(
        e.contains("dataset `fine`") && e.contains("key `webhook`") && e.contains("http or https"),
        "{e}"
    );
    let file = datasets_file(dir.path(), "https://internal.example.com/h");
    let e = start_error(&[
        "--datasets",
        &file,
        "--webhook-secret",
        SECRET,
        "--webhook-hosts",
        "hooks.example.com",
    ])
    .await;
    assert!(
        e.contains("dataset `fine`") && e.contains("EXPORTAL_WEBHOOK_HOSTS"),
        "{e}"
    );
    let file = datasets_file(dir.path(), "https://hooks.example.com/h");
    let e = start_error(&["--datasets", &file]).await;
    assert!(
        e.contains("EXPORTAL_WEBHOOK_SECRET") && e.contains("fine"),
        "{e}"
    );
}

fn azure_args(tag: &str) -> Vec<String> {
    vec![
        "--storage".into(),
        "azure".into(),
        "--azure-connection-string".into(),
        service_url("EXPORTAL_TEST_AZURE_CONNECTION_STRING"),
        "--azure-queue".into(),
        format!("q{tag}"),
        "--azure-files-container".into(),
        format!("f{tag}"),
        "--azure-jobs-container".into(),
        format!("j{tag}"),
    ]
}

#[tokio::test]
async fn on_azure_storage_a_failing_receiver_gets_the_event_again_until_it_accepts_it() {
    let receiver = Receiver::start(vec![Answer::Status(500), Answer::Status(500)]).await;
    let url = receiver.url();
    let azure = azure_args(&uuid::Uuid::new_v4().simple().to_string()[..10]);
    let mut args: Vec<&str> = azure.iter().map(String::as_str).collect();
    args.extend(hook_args(&url, &["--webhook-retry-base", "200ms"]));
    let server = TestServer::start(&args).await;
    let hank = server.user("hank");
    let job = hank.submit(orders("csv")).await;
    let id = job["id"].as_str().unwrap();
    let done = hank
        .wait_for(id, &["succeeded"], Duration::from_secs(60))
        .await;

    let hits = receiver.wait_for(3, WAIT).await;
    assert_eq!(hits[0].0["job_id"], id);
    assert_eq!(hits[0].0["sha256"], done["file"]["sha256"]);
    assert_retried_with_back_off(&hits, Duration::from_millis(200));
    receiver.assert_stays_at(3, Duration::from_secs(2)).await;
    server.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn on_azure_storage_a_delivery_that_failed_before_a_restart_is_made_by_the_next_process() {
    let receiver = Receiver::start(vec![Answer::Status(502)]).await;
    let url = receiver.url();
    let azure = azure_args(&uuid::Uuid::new_v4().simple().to_string()[..10]);
    let mut args: Vec<&str> = azure.iter().map(String::as_str).collect();
    args.extend(hook_args(&url, &["--webhook-retry-base", "6s"]));
    restart_between_failure_and_retry(&args, &receiver).await;
}

/// What every outbox adapter promises: an event stored once, a due entry claimed by one caller
/// at a time until its claim runs out, a stale claim refused, reschedules kept.
async fn outbox_claims_reschedules_and_removes(outbox: Arc<dyn Outbox>) {
    let now = chrono::Utc::now();
    let secs = chrono::Duration::seconds;
    let entry = |id: &str, body: &str, next_at| Delivery {
        id: id.into(),
        job_id: "j".into(),
        url: "http://127.0.0.1:9/hook".into(),
        body: body.into(),
        created_at: now,
        attempts: 0,
        next_at,
        last_error: None,
        claim: None,
    };
    outbox
        .add(&entry("a-1", "first", now - secs(1)))
        .await
        .unwrap();
    outbox
        .add(&entry("a-1", "second", now - secs(1)))
        .await
        .unwrap();
    outbox
        .add(&entry("b-1", "later", now + secs(3600)))
        .await
        .unwrap();
    let claim = Duration::from_secs(30);
    let ids = |batch: &[Delivery]| batch.iter().map(|d| d.id.clone()).collect::<Vec<_>>();

    let taken = outbox.due(now, 10, claim).await.unwrap();
    assert_eq!(ids(&taken), ["a-1"]);
    assert_eq!(
        taken[0].body, "first",
        "adding an event twice keeps the first"
    );
    assert!(
        outbox.due(now, 10, claim).await.unwrap().is_empty(),
        "a claimed entry is not handed out again"
    );

    // The claim ran out (its process died): another caller takes the entry over.
    let later = now + secs(31);
    let retaken = outbox.due(later, 10, claim).await.unwrap();
    assert_eq!(ids(&retaken), ["a-1"]);
    let mut stale = taken[0].clone();
    stale.attempts = 1;
    assert!(matches!(
        outbox.reschedule(&stale).await,
        Err(OutboxError::Lost)
    ));
    let mut current = retaken[0].clone();
    current.attempts = 1;
    current.next_at = later + secs(5);
    current.last_error = Some("the receiver answered 500".into());
    outbox.reschedule(&current).await.unwrap();
    assert!(outbox
        .due(later + secs(4), 10, claim)
        .await
        .unwrap()
        .is_empty());
    let again = outbox.due(later + secs(6), 10, claim).await.unwrap();
    assert_eq!(ids(&again), ["a-1"]);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(
        again[0].last_error.as_deref(),
        Some("the receiver answered 500")
    );
    outbox.remove(&again[0]).await.unwrap();

    let far = now + secs(7200);
    let rest = outbox.due(far, 1, claim).await.unwrap();
    assert_eq!(ids(&rest), ["b-1"], "the removed entry is gone");
    assert!(outbox.due(far, 10, claim).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_local_outbox_claims_reschedules_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let pool = server::embedded::open(&dir.path().join("exportal.db"))
        .await
        .unwrap();
    outbox_claims_reschedules_and_removes(Arc::new(LocalOutbox::new(pool))).await;
}

#[tokio::test]
async fn the_azure_outbox_claims_reschedules_and_removes() {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let settings = server::azure::AzureSettings {
        connection_string: Some(server::config::Secret(service_url(
            "EXPORTAL_TEST_AZURE_CONNECTION_STRING",
        ))),
        blob_url: None,
        queue_url: None,
        queue: format!("q{tag}"),
        files_container: format!("f{tag}"),
        jobs_container: format!("j{tag}"),
        ca_file: None,
    };
    let clients = server::azure::clients(&settings).unwrap();
    server::jobs::azure::AzureJobStore::new(clients.jobs)
        .ensure()
        .await
        .unwrap();
    outbox_claims_reschedules_and_removes(Arc::new(AzureOutbox::new(clients.outbox))).await;
}
