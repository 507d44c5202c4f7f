//! The worker driven one message at a time: retries, permanent failures, cancellation,
//! idempotent redelivery and poison messages.

use app::jobs::{ExportRequest, JobStatus};
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::json;
use server::blobs::{local::LocalBlobStore, BlobError, BlobMeta, BlobStore, ByteStream, Download};
use server::catalog::{demo, Catalog};
use server::export::ExportContext;
use server::jobs::{local::LocalJobStore, Jobs};
use server::live::Hub;
use server::queue::{local::LocalQueue, JobMessage, Queue};
use server::service::{Limits, Service};
use server::worker::{Outcome, Worker, WorkerConfig};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("demo.db");
        demo::ensure_database(&db, ROWS).await.unwrap();
        let catalog = Arc::new(
            Catalog::from_toml(&demo::catalog_toml(&db, ROWS), dir.path())
                .await
                .unwrap(),
        );
        let pool = server::embedded::open(&dir.path().join("exportal.db"))
            .await
            .unwrap();
        let jobs = Jobs::new(Arc::new(LocalJobStore::new(pool.clone())), Hub::new());
        let queue: Arc<dyn Queue> = Arc::new(LocalQueue::new(pool));
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
            visibility: Duration::from_secs(3),
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
        let request: ExportRequest =
            serde_json::from_value(json!({"dataset": "orders", "format": format})).unwrap();
        self.service
            .submit("alice", request, None)
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
    assert_eq!(job.file.unwrap().rows, ROWS);
    assert_eq!(h.files(), [format!("{id}.csv")]);
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
    let job = h.service.cancel("alice", &id).await.unwrap();
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
        .download("alice", &kept)
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
