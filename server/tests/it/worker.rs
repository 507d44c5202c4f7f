//! The worker driven one message at a time: retries, permanent failures, cancellation,
//! idempotent redelivery and poison messages; one run per job whatever the queue delivers
//! (stale messages, a second worker after a lapsed lease); a panicking export.

use app::jobs::{ExportRequest, JobStatus};
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::json;
use server::blobs::{local::LocalBlobStore, BlobError, BlobMeta, BlobStore, ByteStream, Download};
use server::catalog::{demo, sql::Dialect, Catalog};
use server::export::{self, ExportContext};
use server::jobs::{local::LocalJobStore, Jobs};
use server::live::Hub;
use server::queue::{local::LocalQueue, JobMessage, Queue};
use server::service::{Limits, Service};
use server::source::{BatchStream, Described, Param, Source, SourceError, SourceOptions};
use server::worker::{Outcome, Worker, WorkerConfig};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A real SQLite source whose driver "has a bug": its batch stream panics when the first
/// batch of an export is handed over, inside the export pipeline, as a panicking driver would.
struct PanicsMidStream(Arc<dyn Source>);

#[async_trait]
impl Source for PanicsMidStream {
    fn dialect(&self) -> Dialect {
        self.0.dialect()
    }
    async fn describe(&self, sql: &str) -> Result<Described, SourceError> {
        self.0.describe(sql).await
    }
    fn batches<'a>(&'a self, sql: &'a str, params: &'a [Param]) -> BatchStream<'a> {
        // The row count shown before the export works; reading the rows does not.
        if sql.contains("COUNT(*)") {
            return self.0.batches(sql, params);
        }
        self.0
            .batches(sql, params)
            .map(|batch| {
                drop(batch);
                panic!("injected driver bug: index out of bounds")
            })
            .boxed()
    }
    async fn ping(&self) -> Result<(), SourceError> {
        self.0.ping().await
    }
}

/// A dataset read through [`PanicsMidStream`].
fn boom_dataset() -> &'static str {
    r#"
[[datasets]]
id = "boom"
title = "Boom"
source = "buggy"
sql = "SELECT id, customer FROM orders ORDER BY id"
"#
}

/// Real local files, with faults injected: the first `fail_puts` writes fail as if the disk
/// were unavailable, and every chunk can be slowed down.
struct FaultyBlobs {
    inner: LocalBlobStore,
    fail_puts: AtomicU32,
    chunk_delay: Duration,
}

#[async_trait]
impl BlobStore for FaultyBlobs {
    async fn put(&self, name: &str, meta: &BlobMeta, body: ByteStream) -> Result<u64, BlobError> {
        if self.fail_puts.load(Ordering::SeqCst) > 0 {
            self.fail_puts.fetch_sub(1, Ordering::SeqCst);
            return Err(BlobError::Io("injected: storage unavailable".into()));
        }
        let delay = self.chunk_delay;
        let body = body.then(move |c| async move {
            tokio::time::sleep(delay).await;
            c
        });
        self.inner.put(name, meta, body.boxed()).await
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

struct Harness {
    service: Service,
    worker: Arc<Worker>,
    queue: Arc<dyn Queue>,
    blobs: Arc<FaultyBlobs>,
    dir: tempfile::TempDir,
}

/// Enough rows for several 256 KiB chunks of CSV.
const ROWS: u64 = 20_000;

impl Harness {
    async fn new(fail_puts: u32, chunk_delay: Duration, row_cap: u64, max_attempts: u32) -> Self {
        Self::with_retention(
            fail_puts,
            chunk_delay,
            row_cap,
            max_attempts,
            Duration::from_secs(3600),
        )
        .await
    }

    async fn with_retention(
        fail_puts: u32,
        chunk_delay: Duration,
        row_cap: u64,
        max_attempts: u32,
        retention: Duration,
    ) -> Self {
        Self::build(
            fail_puts,
            chunk_delay,
            row_cap,
            max_attempts,
            retention,
            Duration::from_secs(3),
        )
        .await
    }

    async fn build(
        fail_puts: u32,
        chunk_delay: Duration,
        row_cap: u64,
        max_attempts: u32,
        retention: Duration,
        visibility: Duration,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("demo.db");
        demo::ensure_database(&db, ROWS).await.unwrap();
        let sqlite = server::source::connect(
            "buggy",
            &format!("sqlite://{}", db.display()),
            &SourceOptions::default(),
        )
        .await
        .unwrap();
        let buggy: Arc<dyn Source> = Arc::new(PanicsMidStream(sqlite));
        let toml = demo::catalog_toml(&db, ROWS) + boom_dataset();
        let catalog = Arc::new(
            Catalog::from_toml_with_sources(
                &toml,
                dir.path(),
                HashMap::from([("buggy".to_string(), buggy)]),
            )
            .await
            .unwrap(),
        );
        let pool = server::embedded::open(&dir.path().join("exportal.db"))
            .await
            .unwrap();
        let jobs = Jobs::new(Arc::new(LocalJobStore::new(pool.clone())), Hub::new());
        let queue: Arc<dyn Queue> = Arc::new(LocalQueue::new(pool.clone()));
        let blobs = Arc::new(FaultyBlobs {
            inner: LocalBlobStore::open(&dir.path().join("files"))
                .await
                .unwrap(),
            fail_puts: AtomicU32::new(fail_puts),
            chunk_delay,
        });
        let export = Arc::new(ExportContext {
            catalog: catalog.clone(),
            blobs: blobs.clone(),
            temp_dir: dir.path().to_path_buf(),
            row_cap,
            csv_crlf: true,
        });
        let config = WorkerConfig {
            visibility,
            max_attempts,
            retry_base: Duration::from_millis(40),
            retry_max: Duration::from_millis(80),
            progress_store: Duration::from_millis(100),
            retention,
            ..WorkerConfig::default()
        };
        let wake = Arc::new(tokio::sync::Notify::new());
        let worker = Arc::new(Worker::new(
            queue.clone(),
            jobs.clone(),
            export,
            config,
            wake.clone(),
        ));
        let service = Service {
            catalog,
            jobs,
            queue: queue.clone(),
            blobs: blobs.clone(),
            limits: Limits {
                max_active_jobs: 10,
                row_cap: u64::MAX,
                download_ttl: Duration::from_secs(60),
            },
            wake,
            worker: Some(worker.clone()),
            preview_slots: Default::default(),
            audit: Arc::new(server::audit::local::LocalAuditLog::new(pool.clone())),
            queue_is_approximate: false,
            stats_cache: Default::default(),
            metrics: Default::default(),
        };
        Harness {
            service,
            worker,
            queue,
            blobs,
            dir,
        }
    }

    async fn submit(&self, format: &str) -> String {
        self.submit_dataset("orders", format).await
    }

    async fn submit_dataset(&self, dataset: &str, format: &str) -> String {
        let request: ExportRequest =
            serde_json::from_value(json!({"dataset": dataset, "format": format})).unwrap();
        self.service
            .submit("alice", request, None, None)
            .await
            .unwrap()
            .0
            .id
    }

    /// Receives the next message, waiting for it to become visible.
    async fn next_message(&self) -> server::queue::Received {
        for _ in 0..200 {
            if let Some(m) = self
                .queue
                .receive(1, Duration::from_secs(3))
                .await
                .unwrap()
                .pop()
            {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no message became visible");
    }

    async fn job(&self, id: &str) -> app::jobs::Job {
        self.service.get("alice", id).await.unwrap()
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path().join("files"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n != ".partial")
            .collect();
        names.sort();
        names
    }

    fn partials(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("files").join(".partial"))
            .unwrap()
            .count()
    }
}

#[tokio::test]
async fn a_transient_failure_is_retried_after_a_back_off_and_then_succeeds() {
    let h = Harness::new(1, Duration::ZERO, u64::MAX, 5).await;
    let id = h.submit("csv").await;
    assert_eq!(
        h.worker.process(h.next_message().await).await,
        Outcome::Retrying
    );
    let job = h.job(&id).await;
    assert_eq!(job.status, JobStatus::Retrying);
    let error = job.error.unwrap();
    assert_eq!(error.code, "storage_failed");
    assert!(
        error.message.starts_with("Attempt 1 of 5 failed"),
        "{}",
        error.message
    );
    assert!(
        h.files().is_empty() && h.partials() == 0,
        "a failed attempt leaves no file"
    );

    let again = h.next_message().await;
    assert_eq!(again.dequeue_count, 2);
    assert_eq!(h.worker.process(again).await, Outcome::Succeeded);
    let job = h.job(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.attempts, 2);
    assert!(job.error.is_none());
    assert_eq!(job.file.as_ref().unwrap().rows, ROWS);
    let blob = export::blob_name(&job);
    assert!(blob.starts_with(&id) && blob.ends_with(".csv"), "{blob}");
    assert_eq!(h.files(), [blob], "one file, under the name recorded");
    assert!(
        h.queue.receive(1, Duration::ZERO).await.unwrap().is_empty(),
        "message deleted after success"
    );
}

#[tokio::test]
async fn transient_failures_stop_after_the_attempt_limit() {
    let h = Harness::new(10, Duration::ZERO, u64::MAX, 2).await;
    let id = h.submit("csv").await;
    assert_eq!(
        h.worker.process(h.next_message().await).await,
        Outcome::Retrying
    );
    assert_eq!(
        h.worker.process(h.next_message().await).await,
        Outcome::Failed
    );
    let job = h.job(&id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job
        .error
        .unwrap()
        .message
        .contains("gave up after 2 attempts"));
    assert!(h.queue.receive(1, Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_permanent_failure_fails_at_once_with_a_readable_reason() {
    let h = Harness::new(0, Duration::ZERO, 100, 5).await;
    let id = h.submit("ndjson").await;
    assert_eq!(
        h.worker.process(h.next_message().await).await,
        Outcome::Failed
    );
    let job = h.job(&id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.attempts, 1, "no retry for a permanent failure");
    let error = job.error.unwrap();
    assert_eq!(error.code, "row_cap");
    assert!(
        error.message.contains("more than 100 rows"),
        "{}",
        error.message
    );
    assert!(h.files().is_empty() && h.partials() == 0);
}

#[tokio::test]
async fn a_redelivered_message_for_a_finished_job_is_only_deleted() {
    let h = Harness::new(0, Duration::ZERO, u64::MAX, 5).await;
    let id = h.submit("json").await;
    assert_eq!(
        h.worker.process(h.next_message().await).await,
        Outcome::Succeeded
    );
    let finished = h.job(&id).await;
    h.queue
        .send(&JobMessage::new(&id).encode(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        h.worker.process(h.next_message().await).await,
        Outcome::Skipped
    );
    assert_eq!(h.job(&id).await, finished, "the job is untouched");
    assert_eq!(h.files().len(), 1);
    assert!(h.queue.receive(1, Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_message_delivered_too_often_ends_in_the_poison_queue_with_a_failed_job() {
    let h = Harness::new(0, Duration::ZERO, u64::MAX, 2).await;
    let id = h.submit("csv").await;
    // Two deliveries whose workers died before finishing.
    for _ in 0..2 {
        let m = h.next_message().await;
        h.queue.extend(&m, Duration::ZERO).await.unwrap();
    }
    let third = h.next_message().await;
    assert_eq!(third.dequeue_count, 3);
    assert_eq!(h.worker.process(third).await, Outcome::Poisoned);
    let job = h.job(&id).await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert_eq!(error.code, "attempts_exhausted");
    assert!(error.message.contains("tried 2 times"), "{}", error.message);
    assert_eq!(h.queue.poison_len().await.unwrap(), 1);

    h.queue
        .send("{not a job message", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        h.worker.process(h.next_message().await).await,
        Outcome::Poisoned
    );
    assert_eq!(h.queue.poison_len().await.unwrap(), 2);
}

#[tokio::test]
async fn a_cancel_stops_a_running_export_within_a_second_and_leaves_no_file() {
    let h = Harness::new(0, Duration::from_millis(150), u64::MAX, 5).await;
    let id = h.submit("csv").await;
    let message = h.next_message().await;
    let worker = h.worker.clone();
    let run = tokio::spawn(async move { worker.process(message).await });
    for _ in 0..100 {
        if h.job(&id).await.status == JobStatus::Running && h.partials() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.job(&id).await.status, JobStatus::Running);
    let asked = tokio::time::Instant::now();
    let job = h.service.cancel("alice", &id, None).await.unwrap();
    assert!(job.cancel_requested);
    let outcome = tokio::time::timeout(Duration::from_secs(1), run)
        .await
        .expect("stops within a second")
        .unwrap();
    assert_eq!(outcome, Outcome::Cancelled);
    assert!(asked.elapsed() < Duration::from_secs(1));
    let job = h.job(&id).await;
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.file.is_none());
    assert!(h.files().is_empty());
    assert_eq!(h.partials(), 0, "the partial file is removed");
    let _ = &h.blobs;
}

#[tokio::test]
async fn finished_exports_expire_after_the_retention_time_and_their_files_are_removed() {
    let h = Harness::with_retention(0, Duration::ZERO, u64::MAX, 5, Duration::from_secs(1)).await;
    let kept = h.submit("csv").await;
    assert_eq!(
        h.worker.process(h.next_message().await).await,
        Outcome::Succeeded
    );
    assert_eq!(h.files().len(), 1);
    assert_eq!(
        h.worker.sweep_expired().await,
        0,
        "nothing is older than the retention yet"
    );

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.worker.sweep_expired().await, 1);
    let job = h.job(&kept).await;
    assert_eq!(job.status, JobStatus::Expired);
    assert!(h.files().is_empty(), "the file is removed");
    let e = h
        .service
        .download("alice", &kept, None)
        .await
        .err()
        .expect("no download after expiry");
    assert!(e.message.contains("expired"), "{}", e.message);
    assert_eq!(
        h.worker.sweep_expired().await,
        0,
        "an expired job is not swept twice"
    );
}

#[tokio::test]
async fn expired_records_are_deleted_after_the_grace_period_and_then_unknown() {
    let h = Harness::with_retention(0, Duration::ZERO, u64::MAX, 5, Duration::from_secs(1)).await;
    let gone = h.submit("csv").await;
    assert_eq!(
        h.worker.process(h.next_message().await).await,
        Outcome::Succeeded
    );
    let kept = h.submit("csv").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(h.worker.sweep_expired().await, 1);
    let store = h.service.jobs.store.clone();
    let now = chrono::Utc::now();
    assert_eq!(
        store
            .purge_expired(now - chrono::TimeDelta::minutes(1), 100)
            .await
            .unwrap(),
        0,
        "the grace period counts from the expiry"
    );
    assert_eq!(
        store
            .purge_expired(now + chrono::TimeDelta::minutes(1), 100)
            .await
            .unwrap(),
        1
    );
    assert!(h.service.get("alice", &gone).await.is_err(), "unknown now");
    assert!(store.get(&gone).await.unwrap().is_none());
    let listed: Vec<String> = h
        .service
        .list("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, vec![kept.clone()]);
    assert_eq!(
        store
            .purge_expired(now + chrono::TimeDelta::minutes(1), 100)
            .await
            .unwrap(),
        0,
        "a queued job is never deleted"
    );
}

impl Harness {
    /// A second worker on the same queue, store and files: another instance.
    fn second_worker(&self, visibility: Duration) -> Arc<Worker> {
        Arc::new(Worker::new(
            self.queue.clone(),
            self.service.jobs.clone(),
            self.worker.export.clone(),
            WorkerConfig {
                visibility,
                progress_store: Duration::from_millis(100),
                ..self.worker.config.clone()
            },
            Arc::new(tokio::sync::Notify::new()),
        ))
    }

    /// Waits until the job is running and its file is being written.
    async fn wait_running(&self, id: &str) -> app::jobs::Job {
        for _ in 0..250 {
            let job = self.job(id).await;
            if job.status == JobStatus::Running && self.partials() > 0 {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the job never started writing");
    }

    fn sha256_of(&self, blob: &str) -> String {
        let bytes = std::fs::read(self.dir.path().join("files").join(blob)).unwrap();
        hex::encode(sha2::Sha256::digest(&bytes))
    }
}

#[tokio::test]
async fn a_cancel_then_retry_while_queued_runs_the_job_exactly_once() {
    let h = Harness::new(0, Duration::ZERO, u64::MAX, 5).await;
    let id = h.submit("csv").await;
    let cancelled = h.service.cancel("alice", &id, None).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let retried = h.service.retry("alice", &id, None).await.unwrap();
    assert_eq!(retried.status, JobStatus::Queued);

    // Both messages are on the queue: the one from before the cancel and the retry's.
    let first = h.next_message().await;
    let second = h.next_message().await;
    assert_ne!(first.id, second.id);
    let (a, b) = tokio::join!(h.worker.process(first), h.worker.process(second));
    let mut outcomes = [a, b];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        [Outcome::Skipped, Outcome::Succeeded],
        "the old message is a no-op, the retry's runs"
    );
    let job = h.job(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.attempts, 1, "one run");
    assert_eq!(h.files(), [export::blob_name(&job)]);
    assert!(
        h.queue.receive(5, Duration::ZERO).await.unwrap().is_empty(),
        "both messages are gone"
    );
}

#[tokio::test]
async fn a_message_for_a_job_whose_lease_is_live_waits_instead_of_starting_a_second_run() {
    let h = Harness::new(0, Duration::from_millis(100), u64::MAX, 5).await;
    let id = h.submit("csv").await;
    let message = h.next_message().await;
    let worker = h.worker.clone();
    let run = tokio::spawn(async move { worker.process(message).await });
    let running = h.wait_running(&id).await;

    // A duplicate delivery, as after a lapsed visibility, while the first run holds its lease.
    h.queue
        .send(&JobMessage::for_job(&running).encode(), Duration::ZERO)
        .await
        .unwrap();
    let other = h.second_worker(Duration::from_secs(3));
    assert_eq!(
        other.process(h.next_message().await).await,
        Outcome::Deferred
    );
    let still = h.job(&id).await;
    assert_eq!(still.lease, running.lease, "the first run keeps the job");
    assert_eq!(still.attempts, 1);

    assert_eq!(run.await.unwrap(), Outcome::Succeeded);
    // The deferred copy comes back once the lease would have run out, and is only deleted.
    let copy = h.next_message().await;
    assert_eq!(other.process(copy).await, Outcome::Skipped);
    assert_eq!(h.job(&id).await.attempts, 1);
    assert_eq!(h.files().len(), 1);
}

#[tokio::test]
async fn two_workers_on_a_lapsed_lease_give_one_file_and_one_final_state_and_the_loser_is_refused()
{
    // The first worker renews its lease only every 10 s; the test makes the lease lapse as if
    // its process had stalled (a long pause, a clock jump), while it goes on writing.
    let h = Harness::build(
        0,
        Duration::from_millis(120),
        u64::MAX,
        5,
        Duration::from_secs(3600),
        Duration::from_secs(30),
    )
    .await;
    let id = h.submit("csv").await;
    let message = h.next_message().await;
    let first = h.worker.clone();
    let loser = tokio::spawn(async move { first.process(message).await });
    let held = h.wait_running(&id).await;
    let first_token = held.lease.clone().unwrap();

    let mut lapsed = h.job(&id).await;
    lapsed.lease_expires_at = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    h.service.jobs.update(&lapsed).await.unwrap();

    // The message comes round again (as after its visibility ran out) to another worker.
    h.queue
        .send(&JobMessage::for_job(&held).encode(), Duration::ZERO)
        .await
        .unwrap();
    let second = h.second_worker(Duration::from_secs(3));
    let redelivered = h.next_message().await;
    let winner = tokio::spawn(async move { second.process(redelivered).await });

    let loser = tokio::time::timeout(Duration::from_secs(30), loser)
        .await
        .expect("the first run stops")
        .unwrap();
    let winner = tokio::time::timeout(Duration::from_secs(30), winner)
        .await
        .expect("the second run ends")
        .unwrap();
    assert_eq!(
        loser,
        Outcome::LeaseLost,
        "the first run's writes are refused"
    );
    assert_eq!(winner, Outcome::Succeeded);

    let job = h.job(&id).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.attempts, 2);
    let file = job.file.clone().unwrap();
    let blob = file.blob.clone().unwrap();
    assert!(
        !blob.contains(&first_token),
        "the record names the winner's file: {blob}"
    );
    assert_eq!(
        h.files(),
        std::slice::from_ref(&blob),
        "one final file, the winner's"
    );
    assert_eq!(h.partials(), 0, "the loser's partial file is gone");
    assert_eq!(
        h.sha256_of(&blob),
        file.sha256,
        "the record describes those bytes"
    );
    assert_eq!(file.rows, ROWS);

    // Whatever the first run might still try to write is refused.
    let refused = h
        .service
        .jobs
        .transition(&id, |j| j.record_progress(&first_token, 1, 1))
        .await;
    assert!(matches!(
        refused,
        Err(server::jobs::ChangeError::Refused {
            reason: app::jobs::TransitionError::NotHolder,
            ..
        })
    ));
}

#[tokio::test]
async fn a_panicking_export_fails_its_job_and_the_worker_loop_goes_on() {
    let h = Harness::new(0, Duration::ZERO, u64::MAX, 5).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let looping = tokio::spawn(h.worker.clone().run(shutdown.clone()));

    let boom = h.submit_dataset("boom", "csv").await;
    let fine = h.submit("csv").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (boom_job, fine_job) = loop {
        let (b, f) = (h.job(&boom).await, h.job(&fine).await);
        if b.status.is_final() && f.status.is_final() {
            break (b, f);
        }
        assert!(tokio::time::Instant::now() < deadline, "{b:?} / {f:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(boom_job.status, JobStatus::Failed);
    assert_eq!(boom_job.attempts, 1, "a bug is not retried");
    let error = boom_job.error.clone().unwrap();
    assert_eq!(error.code, "internal_error");
    assert!(
        error.message.contains("internal error"),
        "{}",
        error.message
    );
    assert!(
        !error.message.contains("index out of bounds"),
        "the panic text goes to the log, not to the user: {}",
        error.message
    );
    assert_eq!(fine_job.status, JobStatus::Succeeded, "the worker went on");
    assert!(!looping.is_finished(), "the worker loop is alive");

    // The failed attempt's heartbeat and progress watcher stopped with it: nothing writes
    // to its record any more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.job(&boom).await.revision, boom_job.revision);
    assert_eq!(
        h.files(),
        [export::blob_name(&fine_job)],
        "the failed attempt left no file"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), looping)
        .await
        .expect("the loop stops on shutdown")
        .unwrap();
}

/// The job store as one worker sees it, with its writes failing on demand (the store is
/// unreachable from that worker only).
struct CutOffStore {
    inner: Arc<dyn server::jobs::JobStore>,
    cut: std::sync::atomic::AtomicBool,
}

impl CutOffStore {
    fn check(&self) -> Result<(), server::jobs::StoreError> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(server::jobs::StoreError::Unavailable(
                "injected: store unreachable".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl server::jobs::JobStore for CutOffStore {
    async fn search(
        &self,
        filter: &server::jobs::JobFilter,
        limit: usize,
    ) -> Result<Vec<app::jobs::Job>, server::jobs::StoreError> {
        self.inner.search(filter, limit).await
    }
    async fn create(
        &self,
        job: &app::jobs::Job,
        key: Option<&str>,
        max_active: usize,
    ) -> Result<(app::jobs::Job, bool), server::jobs::StoreError> {
        self.check()?;
        self.inner.create(job, key, max_active).await
    }
    async fn get(&self, id: &str) -> Result<Option<app::jobs::Job>, server::jobs::StoreError> {
        self.inner.get(id).await
    }
    async fn find_by_key(
        &self,
        owner: &str,
        key: &str,
    ) -> Result<Option<app::jobs::Job>, server::jobs::StoreError> {
        self.inner.find_by_key(owner, key).await
    }
    async fn list(
        &self,
        owner: &str,
        limit: usize,
    ) -> Result<Vec<app::jobs::Job>, server::jobs::StoreError> {
        self.inner.list(owner, limit).await
    }
    async fn list_ids(
        &self,
        owner: &str,
        limit: usize,
    ) -> Result<Vec<String>, server::jobs::StoreError> {
        self.inner.list_ids(owner, limit).await
    }
    async fn update(
        &self,
        job: &app::jobs::Job,
    ) -> Result<app::jobs::Job, server::jobs::StoreError> {
        self.check()?;
        self.inner.update(job).await
    }
    async fn reactivate(
        &self,
        job: &app::jobs::Job,
        max_active: usize,
    ) -> Result<app::jobs::Job, server::jobs::StoreError> {
        self.check()?;
        self.inner.reactivate(job, max_active).await
    }
    async fn active_count(&self, owner: &str) -> Result<usize, server::jobs::StoreError> {
        self.inner.active_count(owner).await
    }
    async fn finished_before(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<app::jobs::Job>, server::jobs::StoreError> {
        self.inner.finished_before(before, limit).await
    }
    async fn purge_expired(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<usize, server::jobs::StoreError> {
        self.inner.purge_expired(before, limit).await
    }
    async fn ping(&self) -> Result<(), server::jobs::StoreError> {
        self.check()?;
        self.inner.ping().await
    }
}

#[tokio::test]
async fn a_run_that_cannot_renew_its_lease_stops_before_another_worker_takes_the_job_over() {
    let h = Harness::new(0, Duration::from_millis(500), u64::MAX, 5).await;
    let store = Arc::new(CutOffStore {
        inner: h.service.jobs.store.clone(),
        cut: std::sync::atomic::AtomicBool::new(false),
    });
    let cut_off = Arc::new(Worker::new(
        h.queue.clone(),
        Jobs::new(store.clone(), Hub::new()),
        h.worker.export.clone(),
        WorkerConfig {
            visibility: Duration::from_millis(1200),
            ..h.worker.config.clone()
        },
        Arc::new(tokio::sync::Notify::new()),
    ));
    let id = h.submit("csv").await;
    let message = h.next_message().await;
    let worker = cut_off.clone();
    let run = tokio::spawn(async move { worker.process(message).await });
    let started = h.wait_running(&id).await;
    store.cut.store(true, Ordering::SeqCst);

    let outcome = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the run stops by itself while its store is unreachable")
        .unwrap();
    let stopped = chrono::Utc::now();
    assert_eq!(outcome, Outcome::LeaseLost);
    let left = h.job(&id).await;
    assert_eq!(left.status, JobStatus::Running, "it could write nothing");
    assert_eq!(left.lease, started.lease);
    // It gives up a sixth of the lease early; cleaning up may take a moment on a busy machine.
    assert!(
        left.lease_expires_at.unwrap() > stopped - chrono::Duration::seconds(1),
        "it stopped when its lease ran out, not long after: {:?} vs {stopped}",
        left.lease_expires_at
    );
    assert!(
        h.files().is_empty() && h.partials() == 0,
        "and left no file"
    );

    // The message comes back; once the lease has run out, a healthy worker takes over.
    let healthy = h.second_worker(Duration::from_secs(3));
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let outcome = healthy.process(h.next_message().await).await;
        outcomes.push(outcome.clone());
        if outcome != Outcome::Deferred {
            break;
        }
    }
    assert_eq!(outcomes.last(), Some(&Outcome::Succeeded), "{outcomes:?}");
    let job = h.job(&id).await;
    assert_eq!(job.attempts, started.attempts + 1);
    assert_eq!(h.files(), [export::blob_name(&job)]);
}
