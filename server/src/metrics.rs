//! What operators watch: job throughput and outcomes, export times, the queue, live sockets and
//! HTTP traffic, as Prometheus series (`GET /metrics`, see `http::metrics`).
//!
//! One [`Metrics`] per process holds the registry and the typed families; the service and the
//! worker call one method per event, so the instrumentation stays a line at each place a job
//! changes. Counters are per process: a deployment of several instances is summed by Prometheus.
//!
//! Every label value is bounded: dataset ids come from the operator's catalogue, formats and
//! statuses are enums, HTTP routes are the router's templates (never the raw path) and methods
//! outside the standard ones share one value. Nothing a user types becomes a label.

use crate::queue::Queue;
use app::jobs::{Job, JobStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// The `Content-Type` of what [`Metrics::render`] returns (the Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Queue depths older than this are sampled again at a scrape; younger ones are served as they
/// are, so several Prometheus servers scraping at once cost one look at the queue.
const QUEUE_SAMPLE_MAX_AGE: Duration = Duration::from_secs(1);
/// A queue that does not answer within this is reported by the failure counter, not by a
/// scrape that times out.
const QUEUE_SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Exports run from well under a second to hours.
const EXPORT_SECONDS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// From a worker waking at once (milliseconds) to a backlog of an hour.
const START_DELAY_SECONDS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
const HTTP_SECONDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    dataset: String,
    format: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    dataset: String,
    format: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    dataset: String,
    format: &'static str,
    /// See [`RetryTrigger`].
    trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoisonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    route: String,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StorageLabels {
    service: &'static str,
    method: &'static str,
}

/// Requests sent to Azure Storage by this process, by service and method. Process-wide: the
/// storage clients are built before (and apart from) the [`Metrics`] that report them, and a
/// storage request costs the same whoever sends it.
static STORAGE_REQUESTS: LazyLock<Family<StorageLabels, Counter>> = LazyLock::new(Family::default);

/// Counts one request (one try: a retried request is billed again) to Azure Storage;
/// `service` is `blob` or `queue`. Called by the storage clients' pipeline.
pub fn storage_request(service: &'static str, method: &'static str) {
    STORAGE_REQUESTS
        .get_or_create(&StorageLabels { service, method })
        .inc();
}

/// The requests to `service` with `method` counted so far in this process.
pub fn storage_requests(service: &'static str, method: &'static str) -> u64 {
    STORAGE_REQUESTS
        .get(&StorageLabels { service, method })
        .map_or(0, |c| c.get())
}

/// Who sent a job back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryTrigger {
    /// An attempt failed and another follows after a back-off.
    Failure,
    /// The owner asked for a failed or cancelled export to run again.
    User,
    /// An admin redrove it.
    Redrive,
}

impl RetryTrigger {
    fn as_str(self) -> &'static str {
        match self {
            RetryTrigger::Failure => "failure",
            RetryTrigger::User => "user",
            RetryTrigger::Redrive => "redrive",
        }
    }
}

/// Why a message went to the poison queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonReason {
    /// Delivered more often than the attempt limit, or its job's attempts were used up.
    AttemptsExhausted,
    /// Not a job message at all.
    Unreadable,
}

impl PoisonReason {
    fn as_str(self) -> &'static str {
        match self {
            PoisonReason::AttemptsExhausted => "attempts_exhausted",
            PoisonReason::Unreadable => "unreadable",
        }
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn export_histogram() -> Histogram {
    Histogram::new(EXPORT_SECONDS)
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_SECONDS)
}

/// The process's metrics. Cheap to update from any task; see the module doc.
pub struct Metrics {
    registry: Registry,
    jobs_submitted: Family<JobLabels, Counter>,
    jobs_finished: Family<EndLabels, Counter>,
    jobs_retried: Family<RetryLabels, Counter>,
    jobs_poisoned: Family<PoisonLabels, Counter>,
    export_duration: HistogramFamily<EndLabels>,
    start_delay: Histogram,
    rows: Family<JobLabels, Counter>,
    bytes: Family<JobLabels, Counter>,
    queue_depth: Gauge,
    poison_depth: Gauge,
    queue_sample_failures: Counter,
    exports_running: Gauge,
    ws_connections: Gauge,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: HistogramFamily<LatencyLabels>,
    /// Whose depths the gauges report (none: they stay 0).
    queue: Option<Arc<dyn Queue>>,
    /// When the depths were last sampled successfully; the lock makes concurrent scrapes
    /// share one sample.
    sampled: tokio::sync::Mutex<Option<Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Holds one place in the running-exports gauge until dropped (a panic included).
pub struct RunningExport(Gauge);

impl Drop for RunningExport {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn job_labels(job: &Job) -> JobLabels {
    JobLabels {
        dataset: job.dataset.clone(),
        format: job.format.as_str(),
    }
}

/// The method as a label: the standard ones by name, anything else as `other` (a client
/// may send any token as a method).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The route label of a request that matched no route (static files, unknown paths).
pub const UNMATCHED_ROUTE: &str = "unmatched";

impl Metrics {
    /// Every series registered, all at zero; queue depths are not sampled (see
    /// [`Metrics::watch_queue`]).
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("exportal"),
            jobs_submitted: Family::default(),
            jobs_finished: Family::default(),
            jobs_retried: Family::default(),
            jobs_poisoned: Family::default(),
            export_duration: Family::new_with_constructor(export_histogram),
            start_delay: Histogram::new(START_DELAY_SECONDS),
            rows: Family::default(),
            bytes: Family::default(),
            queue_depth: Gauge::default(),
            poison_depth: Gauge::default(),
            queue_sample_failures: Counter::default(),
            exports_running: Gauge::default(),
            ws_connections: Gauge::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_histogram),
            queue: None,
            sampled: tokio::sync::Mutex::new(None),
        };
        let r = &mut m.registry;
        r.register(
            "jobs_submitted",
            "Export jobs created by submits on this instance",
            m.jobs_submitted.clone(),
        );
        r.register(
            "jobs_finished",
            "Export jobs that reached a final state (succeeded, failed, cancelled) on this instance",
            m.jobs_finished.clone(),
        );
        r.register(
            "jobs_retried",
            "Export jobs sent back to the queue: trigger=failure after a failed attempt (with a \
             back-off), trigger=user when the owner asked, trigger=redrive when an admin did",
            m.jobs_retried.clone(),
        );
        r.register(
            "jobs_poisoned",
            "Queue messages moved to the poison queue",
            m.jobs_poisoned.clone(),
        );
        r.register_with_unit(
            "export_duration",
            "Time from the start of a job's last attempt to its final state",
            Unit::Seconds,
            m.export_duration.clone(),
        );
        r.register_with_unit(
            "job_start_delay",
            "Time from a job's creation to the start of its first attempt",
            Unit::Seconds,
            m.start_delay.clone(),
        );
        r.register(
            "export_rows",
            "Rows in the files of succeeded exports",
            m.rows.clone(),
        );
        r.register_with_unit(
            "export",
            "Bytes in the files of succeeded exports",
            Unit::Bytes,
            m.bytes.clone(),
        );
        r.register(
            "queue_depth",
            "Messages in the job queue, visible or not (sampled at scrape time)",
            m.queue_depth.clone(),
        );
        r.register(
            "poison_queue_depth",
            "Messages in the poison queue (sampled at scrape time)",
            m.poison_depth.clone(),
        );
        r.register(
            "queue_sample_failures",
            "Scrapes at which the queue depths could not be read (the gauges keep their last values)",
            m.queue_sample_failures.clone(),
        );
        r.register(
            "exports_running",
            "Export attempts running in this process's worker",
            m.exports_running.clone(),
        );
        r.register(
            "ws_connections",
            "Open live connections (/ws) on this instance",
            m.ws_connections.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            m.http_requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request (until the response head; a streamed body is not included)",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        r.register(
            "storage_requests",
            "Requests sent to Azure Storage by this process (every try), by service (blob, queue) \
             and method: what the account bills as transactions",
            STORAGE_REQUESTS.clone(),
        );
        m
    }

    /// Reports the depths of `queue` (and of its poison queue) in the queue gauges.
    pub fn watch_queue(self, queue: Arc<dyn Queue>) -> Self {
        Self {
            queue: Some(queue),
            ..self
        }
    }

    /// A job was created by a submit.
    pub fn job_submitted(&self, job: &Job) {
        self.jobs_submitted.get_or_create(&job_labels(job)).inc();
    }

    /// An attempt of `job` (as stored by the start) has started.
    pub fn attempt_started(&self, job: &Job) {
        if job.attempts != 1 {
            return;
        }
        if let Some(started) = job.started_at {
            self.start_delay
                .observe(seconds_between(job.created_at, started));
        }
    }

    /// `job` was just stored in a new state: a final one is counted with its duration (and
    /// its file, when it succeeded); `retrying` counts as a retry after a failure. Other
    /// states are not counted, so every change may be passed here.
    pub fn job_changed(&self, job: &Job) {
        let status = match job.status {
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled => job.status,
            JobStatus::Retrying => {
                self.retried(job, RetryTrigger::Failure);
                return;
            }
            _ => return,
        };
        let labels = EndLabels {
            dataset: job.dataset.clone(),
            format: job.format.as_str(),
            status: status.as_str(),
        };
        self.jobs_finished.get_or_create(&labels).inc();
        // A job cancelled before any attempt started has no duration.
        if let (Some(started), Some(finished)) = (job.started_at, job.finished_at) {
            self.export_duration
                .get_or_create(&labels)
                .observe(seconds_between(started, finished));
        }
        if let (JobStatus::Succeeded, Some(file)) = (status, &job.file) {
            let labels = job_labels(job);
            self.rows.get_or_create(&labels).inc_by(file.rows);
            self.bytes.get_or_create(&labels).inc_by(file.bytes);
        }
    }

    /// `job` was sent back to the queue by `trigger`.
    pub fn retried(&self, job: &Job, trigger: RetryTrigger) {
        let labels = RetryLabels {
            dataset: job.dataset.clone(),
            format: job.format.as_str(),
            trigger: trigger.as_str(),
        };
        self.jobs_retried.get_or_create(&labels).inc();
    }

    /// A message was moved to the poison queue.
    pub fn poisoned(&self, reason: PoisonReason) {
        self.jobs_poisoned
            .get_or_create(&PoisonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts an export as running until the returned guard is dropped.
    pub fn export_running(&self) -> RunningExport {
        self.exports_running.inc();
        RunningExport(self.exports_running.clone())
    }

    /// Records one answered HTTP request; `route` is the matched route template.
    pub fn http_request(
        &self,
        route: &str,
        method: &axum::http::Method,
        status: u16,
        elapsed: Duration,
    ) {
        let method = method_label(method);
        self.http_requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method,
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&LatencyLabels {
                route: route.to_string(),
                method,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the open live connections gauge (the socket table is the source of truth).
    pub fn set_ws_connections(&self, open: usize) {
        self.ws_connections.set(open as i64);
    }

    /// Every series in the Prometheus text format, with the queue depths sampled if they are
    /// older than a moment. A queue that fails or does not answer never fails the scrape.
    pub async fn render(&self) -> String {
        self.sample_queue().await;
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    async fn sample_queue(&self) {
        let Some(queue) = &self.queue else {
            return;
        };
        let mut sampled = self.sampled.lock().await;
        if sampled.is_some_and(|at| at.elapsed() < QUEUE_SAMPLE_MAX_AGE) {
            return;
        }
        let depths = tokio::time::timeout(QUEUE_SAMPLE_TIMEOUT, async {
            tokio::try_join!(queue.depth(), queue.poison_len())
        })
        .await;
        match depths {
            Ok(Ok((depth, poison))) => {
                self.queue_depth.set(depth as i64);
                self.poison_depth.set(poison as i64);
                *sampled = Some(Instant::now());
            }
            Ok(Err(e)) => {
                tracing::warn!("metrics: cannot read the queue depths: {e}");
                self.queue_sample_failures.inc();
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = QUEUE_SAMPLE_TIMEOUT.as_millis() as u64,
                    "metrics: the queue depths did not come in time"
                );
                self.queue_sample_failures.inc();
            }
        }
    }
}

/// Seconds from `a` to `b`; 0 when clocks of instances disagree and `b` looks earlier.
fn seconds_between(a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>) -> f64 {
    (b - a).to_std().map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{QueueError, Received};
    use app::jobs::{ExportFormat, FileFacts};
    use async_trait::async_trait;
    use chrono::{TimeZone, Utc};
    use std::sync::atomic::{AtomicBool, Ordering};

    fn job(status: JobStatus) -> Job {
        let mut job = Job::queued(
            "j1",
            "alice",
            "orders",
            ExportFormat::Csv,
            vec!["id".into()],
        );
        job.created_at = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        job.status = status;
        job
    }

    fn end(status: &'static str) -> EndLabels {
        EndLabels {
            dataset: "orders".into(),
            format: "csv",
            status,
        }
    }

    fn orders_csv() -> JobLabels {
        JobLabels {
            dataset: "orders".into(),
            format: "csv",
        }
    }

    fn retries(m: &Metrics, trigger: &'static str) -> u64 {
        m.jobs_retried
            .get(&RetryLabels {
                dataset: "orders".into(),
                format: "csv",
                trigger,
            })
            .map_or(0, |c| c.get())
    }

    #[tokio::test]
    async fn storage_requests_are_reported_by_service_and_method() {
        let before = storage_requests("queue", "DELETE");
        storage_request("queue", "DELETE");
        assert_eq!(storage_requests("queue", "DELETE"), before + 1);
        let text = Metrics::new().render().await;
        assert!(
            text.contains("exportal_storage_requests_total{service=\"queue\",method=\"DELETE\"}"),
            "{text}"
        );
    }

    #[test]
    fn a_succeeded_job_counts_once_with_its_duration_rows_and_bytes() {
        let m = Metrics::new();
        let mut done = job(JobStatus::Succeeded);
        done.started_at = Some(done.created_at + chrono::Duration::seconds(2));
        done.finished_at = Some(done.created_at + chrono::Duration::seconds(5));
        done.file = Some(FileFacts {
            name: "orders.csv".into(),
            bytes: 1234,
            rows: 10,
            sha256: String::new(),
            content_type: "text/csv".into(),
            expires_at: done.created_at,
            blob: None,
        });
        m.job_changed(&done);
        assert_eq!(m.jobs_finished.get(&end("succeeded")).unwrap().get(), 1);
        let duration = m.export_duration.get(&end("succeeded")).unwrap();
        assert_eq!((duration.count(), duration.sum()), (1, 3.0));
        assert_eq!(m.rows.get(&orders_csv()).unwrap().get(), 10);
        assert_eq!(m.bytes.get(&orders_csv()).unwrap().get(), 1234);
    }

    #[test]
    fn a_job_cancelled_before_it_started_counts_without_a_duration() {
        let m = Metrics::new();
        let mut cancelled = job(JobStatus::Cancelled);
        cancelled.finished_at = Some(cancelled.created_at);
        m.job_changed(&cancelled);
        assert_eq!(m.jobs_finished.get(&end("cancelled")).unwrap().get(), 1);
        assert!(m.export_duration.get(&end("cancelled")).is_none());
        assert!(m.rows.get(&orders_csv()).is_none());
    }

    #[test]
    fn retrying_counts_as_a_retry_after_failure_and_active_states_count_nothing() {
        let m = Metrics::new();
        m.job_changed(&job(JobStatus::Retrying));
        m.retried(&job(JobStatus::Queued), RetryTrigger::User);
        for status in [JobStatus::Queued, JobStatus::Running] {
            m.job_changed(&job(status));
        }
        assert_eq!(retries(&m, "failure"), 1);
        assert_eq!(retries(&m, "user"), 1);
        assert!(m.jobs_finished.is_empty());
    }

    #[test]
    fn only_the_first_attempt_gives_a_start_delay() {
        let m = Metrics::new();
        let mut started = job(JobStatus::Running);
        started.attempts = 1;
        started.started_at = Some(started.created_at + chrono::Duration::milliseconds(1500));
        m.attempt_started(&started);
        started.attempts = 2;
        m.attempt_started(&started);
        assert_eq!((m.start_delay.count(), m.start_delay.sum()), (1, 1.5));
    }

    #[test]
    fn the_running_gauge_is_released_when_the_guard_drops() {
        let m = Metrics::new();
        let a = m.export_running();
        let b = m.export_running();
        assert_eq!(m.exports_running.get(), 2);
        drop(a);
        drop(b);
        assert_eq!(m.exports_running.get(), 0);
    }

    #[test]
    fn methods_outside_the_standard_ones_share_one_label() {
        use axum::http::Method;
        assert_eq!(method_label(&Method::POST), "POST");
        let made_up = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&made_up), "other");
    }

    /// A queue whose depth reads fail on demand; nothing else of it is used here.
    struct Depths {
        fail: AtomicBool,
    }

    #[async_trait]
    impl Queue for Depths {
        async fn send(&self, _: &str, _: Duration) -> Result<(), QueueError> {
            Err(QueueError::Unavailable("not used".into()))
        }
        async fn receive(&self, _: usize, _: Duration) -> Result<Vec<Received>, QueueError> {
            Err(QueueError::Unavailable("not used".into()))
        }
        async fn extend(&self, _: &Received, _: Duration) -> Result<Received, QueueError> {
            Err(QueueError::Unavailable("not used".into()))
        }
        async fn delete(&self, _: &Received) -> Result<(), QueueError> {
            Err(QueueError::Unavailable("not used".into()))
        }
        async fn dead_letter(&self, _: &Received) -> Result<(), QueueError> {
            Err(QueueError::Unavailable("not used".into()))
        }
        async fn poison_len(&self) -> Result<usize, QueueError> {
            self.ping().await.map(|()| 2)
        }
        async fn depth(&self) -> Result<usize, QueueError> {
            self.ping().await.map(|()| 7)
        }
        async fn remove_poisoned(&self, _: &str) -> Result<usize, QueueError> {
            Err(QueueError::Unavailable("not used".into()))
        }
        async fn ping(&self) -> Result<(), QueueError> {
            if self.fail.load(Ordering::SeqCst) {
                Err(QueueError::Unavailable("injected".into()))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn a_queue_that_fails_is_counted_and_the_scrape_still_answers() {
        let queue = Arc::new(Depths {
            fail: AtomicBool::new(false),
        });
        let m = Metrics::new().watch_queue(queue.clone());
        let text = m.render().await;
        assert!(text.contains("\nexportal_queue_depth 7\n"), "{text}");
        assert!(text.contains("\nexportal_poison_queue_depth 2\n"), "{text}");

        queue.fail.store(true, Ordering::SeqCst);
        let cached = m.render().await;
        assert_eq!(m.queue_sample_failures.get(), 0, "a fresh sample is reused");
        assert!(cached.contains("\nexportal_queue_depth 7\n"));

        tokio::time::sleep(QUEUE_SAMPLE_MAX_AGE).await;
        let text = m.render().await;
        assert_eq!(m.queue_sample_failures.get(), 1);
        assert!(
            text.contains("\nexportal_queue_depth 7\n")
                && text.contains("\nexportal_queue_sample_failures_total 1\n"),
            "the last depths stay, the failure is told: {text}"
        );
    }

    #[test]
    fn series_follow_the_prometheus_naming_rules() {
        let m = Metrics::new();
        let mut done = job(JobStatus::Succeeded);
        done.started_at = Some(done.created_at);
        done.finished_at = Some(done.created_at);
        done.attempts = 1;
        done.file = Some(FileFacts {
            name: "orders.csv".into(),
            bytes: 1,
            rows: 1,
            sha256: String::new(),
            content_type: "text/csv".into(),
            expires_at: done.created_at,
            blob: None,
        });
        m.job_submitted(&done);
        m.attempt_started(&done);
        m.job_changed(&done);
        m.retried(&done, RetryTrigger::Redrive);
        m.poisoned(PoisonReason::Unreadable);
        m.http_request("/healthz", &axum::http::Method::GET, 200, Duration::ZERO);
        // Families appear once they have a series; every one has one now.
        let text = futures::executor::block_on(m.render());
        let mut names = Vec::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut parts = line.split(' ').skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("exportal_"), "{line}");
            assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "exportal_jobs_submitted_total",
                "exportal_jobs_finished_total",
                "exportal_jobs_retried_total",
                "exportal_jobs_poisoned_total",
                "exportal_export_duration_seconds",
                "exportal_job_start_delay_seconds",
                "exportal_export_rows_total",
                "exportal_export_bytes_total",
                "exportal_queue_depth",
                "exportal_poison_queue_depth",
                "exportal_queue_sample_failures_total",
                "exportal_exports_running",
                "exportal_ws_connections",
                "exportal_http_requests_total",
                "exportal_http_request_duration_seconds",
            ]
        );
    }
}
