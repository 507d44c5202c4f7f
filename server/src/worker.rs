//! The worker: takes job messages from the queue and runs their exports.
//!
//! [`Worker::process`] handles exactly one received message and is what tests drive step by
//! step; [`Worker::run`] wraps it in the polling loop with bounded concurrency.
//!
//! Delivery is at-least-once: a message is deleted only after the job's final state is
//! stored, and its visibility is extended (a heartbeat) while the export runs, so a crashed
//! worker's job reappears after the visibility timeout and is picked up again.
//!
//! A job runs once at a time, whatever the queue delivers:
//! - only a message for a `queued` or `retrying` job starts an attempt, and only if it carries
//!   the job's current ticket (a message from before a cancel and retry is dropped);
//! - every attempt holds a lease: a random token on the record, with an expiry the heartbeat
//!   renews. A message for a job whose lease is live waits (it is sent again, hidden until the
//!   lease would run out); a `running` job whose lease ran out (its worker died) is taken over;
//! - every write of an attempt (lease renewal, progress, final state) is a compare-and-set that
//!   checks the token, and an attempt that cannot renew its lease in time, or finds its token
//!   replaced, stops and removes its file;
//! - each attempt writes its file under a name of its own (see `export::blob_name`), so the
//!   winner's record always names the winner's bytes.
//!
//! A message received more often than the attempt limit, or a job whose attempts are used up
//! by workers that died, fails with a readable reason and the message moves to the poison
//! queue, instead of crashing workers forever. A panic inside an export fails its job with
//! `internal_error` (details in the log) and the worker goes on; the helper tasks of an
//! attempt (heartbeat, progress, cancel forwarding) stop with it on every path, unwinding
//! included.
//!
//! Error policy: transient failures (database or storage unreachable) are retried with
//! exponential back-off and jitter, by hiding the message until the back-off ends; permanent
//! ones (bad query, row cap) fail the job at once.

use crate::blobs::BlobStore;
use crate::export::{self, Counters, ExportContext, ExportFailure, ExportOutput};
use crate::jobs::{ChangeError, Jobs};
use crate::metrics::{Metrics, PoisonReason};
use crate::queue::{JobMessage, Queue, QueueError, Received};
use app::jobs::{FileFacts, Job, JobError, JobErrorCode, Lease, TransitionError};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Added to the remaining lease time when a message waits for a running attempt, so it comes
/// back just after the lease would run out.
const DEFER_SLACK: Duration = Duration::from_secs(1);

/// How the worker behaves; see the settings of the same names.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub concurrency: usize,
    pub visibility: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub poll_min: Duration,
    pub poll_max: Duration,
    pub retention: Duration,
    pub shutdown_grace: Duration,
    /// How often progress is published live / written to the store.
    pub progress_publish: Duration,
    pub progress_store: Duration,
    /// How often a running job's record is read to notice a cancel from another instance.
    pub cancel_poll: Duration,
    /// This worker's name on the job records it runs (shown to operators).
    pub instance: String,
    /// Where job outcomes are counted: the process's (which `/metrics` reports), or by default
    /// a registry of the worker's own.
    pub metrics: Arc<Metrics>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            visibility: Duration::from_secs(30),
            max_attempts: 5,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(60),
            poll_min: Duration::from_millis(100),
            poll_max: Duration::from_secs(2),
            retention: Duration::from_secs(7 * 24 * 3600),
            shutdown_grace: Duration::from_secs(30),
            progress_publish: Duration::from_millis(250),
            // Once a second: web instances that follow the store show progress at that pace.
            progress_store: Duration::from_secs(1),
            cancel_poll: Duration::from_secs(1),
            instance: crate::config::default_instance(),
            metrics: Default::default(),
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
    /// Will run again after a back-off.
    Retrying,
    /// The job was already final, is gone, or the message was left over from before a retry:
    /// the message was deleted.
    Skipped,
    /// Moved to the poison queue.
    Poisoned,
    /// The worker gave the job back unfinished (shutdown, or the store was unavailable); the
    /// message brings it back.
    Released,
    /// Another attempt holds a live lease on the job: the message was put back, hidden until
    /// that lease would run out, and nothing ran.
    Deferred,
    /// This attempt lost its lease (it could not renew it in time, or another attempt took
    /// the job over): it stopped, wrote nothing more and removed its file.
    LeaseLost,
}

pub struct Worker {
    pub queue: Arc<dyn Queue>,
    pub jobs: Jobs,
    pub export: Arc<ExportContext>,
    pub config: WorkerConfig,
    /// Notified on every submit on this instance, so work starts without a polling delay.
    pub wake: Arc<Notify>,
    /// The attempts running here, by (job id, lease token): a cancel reaches them directly.
    running: Mutex<HashMap<(String, String), CancellationToken>>,
    /// Cancelled when the grace period of a shutdown is over: running exports are released.
    release: CancellationToken,
}

/// The delay before attempt `attempt + 1`: exponential from `base`, capped, with equal jitter.
pub fn retry_delay(attempt: u32, base: Duration, max: Duration, random: f64) -> Duration {
    let exp = base.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
    let capped = exp.min(max.as_secs_f64());
    Duration::from_secs_f64(capped / 2.0 + capped / 2.0 * random.clamp(0.0, 1.0))
}

/// A fresh lease token: random, so no two attempts ever share one.
fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The text of a panic's payload, when it is text.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Stops an attempt's helper tasks and its export on every path out of the attempt, an
/// unwinding panic or a dropped future included, and forgets the attempt.
struct AttemptGuard<'a> {
    running: &'a Mutex<HashMap<(String, String), CancellationToken>>,
    key: (String, String),
    stop_helpers: CancellationToken,
    helpers: Vec<JoinHandle<()>>,
    export: Option<AbortHandle>,
}

impl<'a> AttemptGuard<'a> {
    fn new(
        running: &'a Mutex<HashMap<(String, String), CancellationToken>>,
        key: (String, String),
        cancel: CancellationToken,
    ) -> Self {
        running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), cancel);
        Self {
            running,
            key,
            stop_helpers: CancellationToken::new(),
            helpers: Vec::new(),
            export: None,
        }
    }

    fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.helpers.push(tokio::spawn(task));
    }

    /// Stops the helpers and waits for them, so none writes or publishes after the final state.
    async fn stop(&mut self) {
        self.stop_helpers.cancel();
        for helper in self.helpers.drain(..) {
            let _ = helper.await;
        }
    }
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        self.stop_helpers.cancel();
        for helper in &self.helpers {
            helper.abort();
        }
        if let Some(export) = &self.export {
            export.abort();
        }
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// What a run shares with its helper tasks.
#[derive(Clone)]
struct Attempt {
    job_id: String,
    token: String,
    /// The user asked to cancel.
    cancel: CancellationToken,
    /// The lease is lost or may have lapsed: stop writing.
    lost: CancellationToken,
    counters: Arc<Counters>,
    /// The queue message while this attempt still holds it (`None` once another receiver
    /// took it after its visibility ran out).
    message: Arc<tokio::sync::Mutex<Option<Received>>>,
}

impl Worker {
    pub fn new(
        queue: Arc<dyn Queue>,
        jobs: Jobs,
        export: Arc<ExportContext>,
        config: WorkerConfig,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            queue,
            jobs,
            export,
            config,
            wake,
            running: Mutex::new(HashMap::new()),
            release: CancellationToken::new(),
        }
    }

    fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.export.blobs
    }

    /// The lease of an attempt: as long as the message's visibility.
    fn lease_time(&self) -> Duration {
        self.config.visibility.max(Duration::from_millis(600))
    }

    /// Stops a job running on this instance within moments (its record already says so).
    pub fn cancel_local(&self, job_id: &str) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for ((id, _), token) in running.iter() {
            if id == job_id {
                token.cancel();
            }
        }
    }

    /// Handles one received message from start to final state.
    #[tracing::instrument(skip_all, fields(message = %message.id, dequeue_count = message.dequeue_count))]
    pub async fn process(&self, message: Received) -> Outcome {
        let Some(body) = JobMessage::decode(&message.body) else {
            tracing::warn!(body = %message.body, "unreadable queue message: moving it to the poison queue");
            return match self.queue.dead_letter(&message).await {
                Ok(()) => {
                    self.config.metrics.poisoned(PoisonReason::Unreadable);
                    Outcome::Poisoned
                }
                Err(_) => Outcome::Released,
            };
        };
        let job = match self.jobs.get(&body.job).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                tracing::warn!(job = %body.job, "message for an unknown job: deleting it");
                let _ = self.queue.delete(&message).await;
                return Outcome::Skipped;
            }
            Err(e) => {
                tracing::warn!(job = %body.job, "job store unavailable ({e}); the message will come back");
                return Outcome::Released;
            }
        };
        let id = job.id.clone();
        let outcome = self.process_job(message, &body, job).await;
        tracing::info!(job = %id, ?outcome, "message handled");
        outcome
    }

    #[tracing::instrument(skip_all, fields(job = %job.id))]
    async fn process_job(&self, message: Received, body: &JobMessage, job: Job) -> Outcome {
        if job.status.is_final() {
            tracing::info!(status = %job.status, "job already final: deleting its message");
            let _ = self.queue.delete(&message).await;
            return Outcome::Skipped;
        }
        if !body.matches(&job) {
            tracing::info!("message from before the job was retried: deleting it");
            let _ = self.queue.delete(&message).await;
            return Outcome::Skipped;
        }
        let now = Utc::now();
        if job.lease_live(now) {
            return self.defer(&message, &job).await;
        }
        if job.cancel_requested {
            // Its attempt's worker is gone: the cancel it was asked for ends the job here.
            return match self
                .jobs
                .transition(&job.id, |j| j.request_cancel(Utc::now()))
                .await
            {
                Ok(job) => {
                    self.config.metrics.job_changed(&job);
                    let _ = self.queue.delete(&message).await;
                    Outcome::Cancelled
                }
                Err(e) => self.not_started(&message, e).await,
            };
        }
        let delivered = message.dequeue_count.saturating_sub(1);
        if message.dequeue_count > self.config.max_attempts
            || job.attempts >= self.config.max_attempts
        {
            let reason = job
                .error
                .as_ref()
                .map(|e| format!(" The last attempt failed with: {}", e.message))
                .unwrap_or_default();
            let error = JobError::new(
                JobErrorCode::AttemptsExhausted,
                format!(
                    "The export was tried {} times without finishing and was given up.{reason}",
                    delivered.max(job.attempts)
                ),
            );
            return match self
                .jobs
                .transition(&job.id, |j| j.give_up(error.clone(), Utc::now()))
                .await
            {
                Ok(job) => {
                    tracing::warn!("attempts used up: the job failed and its message is poisoned");
                    self.config.metrics.job_changed(&job);
                    if self.queue.dead_letter(&message).await.is_ok() {
                        self.config
                            .metrics
                            .poisoned(PoisonReason::AttemptsExhausted);
                    }
                    Outcome::Poisoned
                }
                Err(e) => self.not_started(&message, e).await,
            };
        }

        // Start the attempt: a compare-and-set from the state just read, so of two workers
        // holding messages for the job only one gets the lease.
        let lease = Lease {
            token: new_token(),
            expires_at: Utc::now() + chrono_duration(self.lease_time()),
            holder: self.config.instance.clone(),
        };
        let lease_from = Instant::now();
        let previous = job.lease.clone().map(|_| job.clone());
        let job = match self
            .jobs
            .transition(&job.id, |j| j.start_attempt(&lease, Utc::now()))
            .await
        {
            Ok(job) => job,
            Err(e) => return self.not_started(&message, e).await,
        };
        if let Some(previous) = previous {
            // Taken over from an attempt whose lease ran out: its file (if it ever committed
            // one) can never be recorded.
            tracing::warn!(
                attempt = job.attempts,
                "took over a job whose lease had run out"
            );
            let _ = self.blobs().delete(&export::blob_name(&previous)).await;
        }
        tracing::info!(attempt = job.attempts, "export started");
        self.config.metrics.attempt_started(&job);
        let _running = self.config.metrics.export_running();
        self.run_attempt(message, job, lease.token, lease_from)
            .await
    }

    /// A message that did not start an attempt: why, and what becomes of the message.
    async fn not_started(&self, message: &Received, e: ChangeError) -> Outcome {
        match e {
            ChangeError::Refused {
                reason: TransitionError::LeaseHeld { .. },
                job,
            } => self.defer(message, &job).await,
            ChangeError::Refused { job, .. } if job.status.is_final() => {
                let _ = self.queue.delete(message).await;
                Outcome::Skipped
            }
            ChangeError::Refused { reason, .. } => {
                tracing::info!("the job changed meanwhile ({reason}); the message will come back");
                let _ = self.queue.extend(message, Duration::ZERO).await;
                Outcome::Released
            }
            ChangeError::Store(e) => {
                tracing::warn!("cannot update the job ({e}); the message will come back");
                Outcome::Released
            }
        }
    }

    /// Puts the message back for when the live lease of another attempt would run out. A new
    /// copy replaces it, so deliveries spent waiting never count as attempts of this job.
    async fn defer(&self, message: &Received, job: &Job) -> Outcome {
        let now = Utc::now();
        let remaining = job
            .lease_expires_at
            .and_then(|t| (t - now).to_std().ok())
            .unwrap_or_default();
        let delay = (remaining + DEFER_SLACK).min(self.lease_time() * 2);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "another attempt holds the job: the message waits"
        );
        let copy = JobMessage::for_job(job).encode();
        match self.queue.send(&copy, delay).await {
            Ok(()) => {
                let _ = self.queue.delete(message).await;
            }
            Err(_) => {
                let _ = self.queue.extend(message, delay).await;
            }
        }
        Outcome::Deferred
    }

    /// Runs the export of a started attempt and stores how it ended.
    async fn run_attempt(
        &self,
        message: Received,
        job: Job,
        token: String,
        lease_from: Instant,
    ) -> Outcome {
        let attempt = Attempt {
            job_id: job.id.clone(),
            token: token.clone(),
            cancel: CancellationToken::new(),
            lost: CancellationToken::new(),
            counters: Arc::new(Counters::default()),
            message: Arc::new(tokio::sync::Mutex::new(Some(message))),
        };
        let mut guard = AttemptGuard::new(
            &self.running,
            (job.id.clone(), token.clone()),
            attempt.cancel.clone(),
        );
        let stop_helpers = guard.stop_helpers.clone();
        guard.spawn(heartbeat(
            self.jobs.clone(),
            self.queue.clone(),
            attempt.clone(),
            self.lease_time(),
            lease_from,
            stop_helpers.clone(),
        ));
        guard.spawn(watch_progress(
            self.jobs.clone(),
            job.clone(),
            attempt.clone(),
            self.config.clone(),
            stop_helpers.clone(),
        ));
        // The export stops on a user cancel, a lost lease, or the end of a shutdown's grace.
        let stop = CancellationToken::new();
        {
            let (stop, a, r) = (stop.clone(), attempt.clone(), self.release.clone());
            let done = stop_helpers.clone();
            guard.spawn(async move {
                tokio::select! {
                    _ = done.cancelled() => return,
                    _ = a.cancel.cancelled() => {},
                    _ = a.lost.cancelled() => {},
                    _ = r.cancelled() => {},
                }
                stop.cancel();
            });
        }
        // The export is a task of its own: a panic in it ends there, as a JoinError.
        let export_task = {
            let (ctx, job, stop, counters) = (
                self.export.clone(),
                job.clone(),
                stop.clone(),
                attempt.counters.clone(),
            );
            tokio::spawn(async move { export::run(&ctx, &job, &stop, counters).await })
        };
        guard.export = Some(export_task.abort_handle());
        let result = match export_task.await {
            Ok(result) => Ok(result),
            Err(e) if e.is_panic() => Err(panic_text(&*e.into_panic())),
            Err(e) => Err(e.to_string()),
        };
        guard.stop().await;
        let message = attempt.message.lock().await.take();
        let outcome = self.settle(&job, &attempt, result, message.as_ref()).await;
        drop(guard);
        outcome
    }

    /// Stores how the attempt ended, as the lease holder; removes its file when that cannot
    /// be recorded.
    async fn settle(
        &self,
        job: &Job,
        attempt: &Attempt,
        result: Result<Result<ExportOutput, ExportFailure>, String>,
        message: Option<&Received>,
    ) -> Outcome {
        let token = attempt.token.as_str();
        let result = match result {
            Ok(result) => result,
            Err(panic) => {
                tracing::error!(job = %job.id, "the export panicked: {panic}");
                let error = JobError::new(
                    JobErrorCode::InternalError,
                    "The export stopped because of an internal error. The operator has the details; trying again will not help until it is fixed.",
                );
                return self.fail_attempt(job, attempt, message, error).await;
            }
        };
        let written = result.as_ref().ok().map(|o| o.blob.clone());
        if attempt.lost.is_cancelled() {
            tracing::warn!(job = %job.id, "the lease was lost while running: this attempt stops and writes nothing more");
            self.remove_file(written.as_deref()).await;
            return Outcome::LeaseLost;
        }
        if attempt.cancel.is_cancelled() {
            self.remove_file(written.as_deref()).await;
            return self
                .finish(
                    job,
                    attempt,
                    message,
                    None,
                    |j| j.cancelled(token, Utc::now()),
                    Outcome::Cancelled,
                )
                .await;
        }
        match result {
            Ok(output) => {
                let retention = chrono_duration(self.config.retention);
                let file = FileFacts {
                    name: export::download_name(job),
                    bytes: output.bytes,
                    rows: output.rows,
                    sha256: output.sha256.clone(),
                    content_type: export::content_type(job).to_string(),
                    expires_at: Utc::now()
                        .checked_add_signed(retention)
                        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC),
                    blob: Some(output.blob.clone()),
                };
                let outcome = self
                    .finish(
                        job,
                        attempt,
                        message,
                        written.as_deref(),
                        |j| j.succeed(token, file.clone(), Utc::now()),
                        Outcome::Succeeded,
                    )
                    .await;
                if outcome == Outcome::Succeeded {
                    tracing::info!(job = %job.id, rows = output.rows, bytes = output.bytes, "export succeeded");
                }
                outcome
            }
            // Neither a cancel nor a lost lease: the grace period of a shutdown ended.
            Err(ExportFailure::Cancelled) => {
                let outcome = self
                    .finish(
                        job,
                        attempt,
                        None,
                        None,
                        |j| j.requeue(token),
                        Outcome::Released,
                    )
                    .await;
                if let Some(m) = message {
                    let _ = self.queue.extend(m, Duration::ZERO).await;
                }
                outcome
            }
            Err(ExportFailure::Permanent {
                code,
                message: text,
            }) => {
                tracing::warn!(job = %job.id, code, "export failed: {text}");
                let error = JobError::new(code.into(), text);
                self.fail_attempt(job, attempt, message, error).await
            }
            Err(ExportFailure::Transient {
                code,
                message: text,
            }) => {
                if job.attempts >= self.config.max_attempts {
                    let text = format!("{text} (gave up after {} attempts)", job.attempts);
                    tracing::warn!(job = %job.id, code, "export failed for the last time: {text}");
                    let error = JobError::new(code.into(), text);
                    return self.fail_attempt(job, attempt, message, error).await;
                }
                let delay = retry_delay(
                    job.attempts,
                    self.config.retry_base,
                    self.config.retry_max,
                    rand::random(),
                );
                tracing::info!(job = %job.id, code, delay_ms = delay.as_millis() as u64, "export failed; retrying: {text}");
                let error = JobError::new(
                    code.into(),
                    format!(
                        "Attempt {} of {} failed: {text} Trying again in {} s.",
                        job.attempts,
                        self.config.max_attempts,
                        delay.as_secs().max(1)
                    ),
                );
                let outcome = self
                    .finish(
                        job,
                        attempt,
                        None,
                        None,
                        |j| j.retrying(token, error.clone()),
                        Outcome::Retrying,
                    )
                    .await;
                if outcome == Outcome::Retrying {
                    // Hiding the message for the back-off is the retry timer: it survives restarts.
                    if let Some(m) = message {
                        let _ = self.queue.extend(m, delay).await;
                    }
                }
                outcome
            }
        }
    }

    /// Ends the attempt as failed with `error` (see [`Worker::finish`]).
    async fn fail_attempt(
        &self,
        job: &Job,
        attempt: &Attempt,
        message: Option<&Received>,
        error: JobError,
    ) -> Outcome {
        let token = attempt.token.as_str();
        self.finish(
            job,
            attempt,
            message,
            None,
            |j| j.fail(token, error.clone(), Utc::now()),
            Outcome::Failed,
        )
        .await
    }

    /// Writes the attempt's final state with `change` (a compare-and-set on its token), then
    /// deletes `delete` (the message, when the job is done with it). A refused write means the
    /// attempt lost the job: its file `written` is removed. A requested cancel wins over the
    /// result. The store being briefly unavailable is retried: the write stays correct however
    /// late it lands, because it is conditional on the token.
    async fn finish(
        &self,
        job: &Job,
        attempt: &Attempt,
        delete: Option<&Received>,
        written: Option<&str>,
        mut change: impl FnMut(&mut Job) -> Result<(), TransitionError> + Send,
        done: Outcome,
    ) -> Outcome {
        let token = attempt.token.as_str();
        let mut cancel = |j: &mut Job| j.cancelled(token, Utc::now());
        let mut current: &mut (dyn FnMut(&mut Job) -> Result<(), TransitionError> + Send) =
            &mut change;
        let (mut done, mut written) = (done, written);
        let mut pause = Duration::from_millis(200);
        let mut tries = 0;
        while tries < 5 {
            match self.jobs.transition(&job.id, &mut *current).await {
                Ok(stored) => {
                    self.config.metrics.job_changed(&stored);
                    if let Some(m) = delete {
                        let _ = self.queue.delete(m).await;
                    }
                    return done;
                }
                Err(ChangeError::Refused {
                    reason: TransitionError::CancelRequested,
                    ..
                }) if done != Outcome::Cancelled => {
                    self.remove_file(written).await;
                    written = None;
                    current = &mut cancel;
                    done = Outcome::Cancelled;
                }
                Err(ChangeError::Refused { reason, .. }) => {
                    tracing::warn!(job = %job.id, "the attempt's final write was refused ({reason}): another attempt holds the job");
                    self.remove_file(written).await;
                    return Outcome::LeaseLost;
                }
                Err(ChangeError::Store(e)) => {
                    tracing::warn!(job = %job.id, "cannot store the attempt's end ({e}); trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    tries += 1;
                }
            }
        }
        tracing::warn!(job = %job.id, "the attempt's end could not be stored; the message will bring the job back");
        self.remove_file(written).await;
        Outcome::Released
    }

    async fn remove_file(&self, blob: Option<&str>) {
        if let Some(name) = blob {
            if let Err(e) = self.blobs().delete(name).await {
                tracing::warn!(
                    blob = name,
                    "cannot remove the file of an attempt that lost its job: {e}"
                );
            }
        }
    }

    /// Marks finished jobs older than the retention time as expired and removes their files
    /// (at most 100; the sweeper's task does this on its own schedule, see `sweep`).
    pub async fn sweep_expired(&self) -> usize {
        let retention = chrono_duration(self.config.retention);
        let Some(before) = Utc::now().checked_sub_signed(retention) else {
            return 0;
        };
        crate::sweep::expire_finished(&self.jobs, self.blobs().as_ref(), before, 100)
            .await
            .map_or(0, |(expired, _)| expired)
    }

    /// Polls the queue until `shutdown`, running up to `concurrency` jobs at once. On shutdown,
    /// running jobs get the grace period to finish; after it they are released to the queue.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        let mut idle = self.config.poll_min;
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => p.expect("semaphore open"),
            };
            let free = slots.available_permits() + 1;
            match self
                .queue
                .receive(free.min(32), self.config.visibility)
                .await
            {
                Ok(messages) if !messages.is_empty() => {
                    idle = self.config.poll_min;
                    let mut permit = Some(permit);
                    for message in messages {
                        let p = match permit.take() {
                            Some(p) => p,
                            None => slots.clone().acquire_owned().await.expect("semaphore open"),
                        };
                        let worker = self.clone();
                        tasks.spawn(async move {
                            let _p = p;
                            worker.process(message).await
                        });
                    }
                }
                result => {
                    drop(permit);
                    if let Err(e) = result {
                        tracing::warn!("queue unavailable: {e}");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.wake.notified() => idle = self.config.poll_min,
                        _ = tokio::time::sleep(idle) => idle = (idle * 2).min(self.config.poll_max),
                    }
                }
            }
            while tasks.try_join_next().is_some() {}
        }
        if !tasks.is_empty() {
            tracing::info!(
                running = tasks.len(),
                grace_secs = self.config.shutdown_grace.as_secs(),
                "waiting for running exports"
            );
            let drained = tokio::time::timeout(self.config.shutdown_grace, async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::info!("grace period over: releasing running exports to the queue");
                self.release.cancel();
                while tasks.join_next().await.is_some() {}
            }
        }
    }
}

/// Renews the attempt's lease on the record (with the progress so far), then keeps the
/// message hidden. The attempt is lost when the record refuses the renewal (its token was
/// replaced) or when no renewal succeeded for most of the lease time: by then another worker
/// may take the job over, so this one must have stopped.
async fn heartbeat(
    jobs: Jobs,
    queue: Arc<dyn Queue>,
    attempt: Attempt,
    lease: Duration,
    lease_from: Instant,
    stop: CancellationToken,
) {
    let every = (lease / 3).max(Duration::from_millis(200));
    // Stop a sixth of the lease early: clocks of instances differ a little.
    let margin = lease / 6;
    let mut deadline = lease_from + lease - margin;
    let mut next_beat = Instant::now() + every;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next_beat.min(deadline)) => {}
        }
        if Instant::now() >= deadline {
            tracing::warn!(job = %attempt.job_id, "the lease could not be renewed in time: stopping the attempt");
            attempt.lost.cancel();
            return;
        }
        next_beat = Instant::now() + every;
        let renewing_from = Instant::now();
        let expires = Utc::now() + chrono_duration(lease);
        let (rows, bytes) = (
            attempt.counters.rows.load(Ordering::Relaxed),
            attempt.counters.bytes.load(Ordering::Relaxed),
        );
        let token = attempt.token.clone();
        let renewal = jobs.transition(&attempt.job_id, |j| {
            j.renew_lease(&token, expires, Utc::now())?;
            j.record_progress(&token, rows, bytes)
        });
        match tokio::time::timeout_at(deadline, renewal).await {
            Err(_) => continue, // the deadline check above ends the attempt
            Ok(Ok(job)) => {
                deadline = renewing_from + lease - margin;
                if job.cancel_requested {
                    attempt.cancel.cancel();
                }
            }
            Ok(Err(ChangeError::Refused { reason, .. })) => {
                tracing::warn!(job = %attempt.job_id, "the lease was refused ({reason}): stopping the attempt");
                attempt.lost.cancel();
                return;
            }
            // Storage hiccup: try again at the next beat, while the lease lasts.
            Ok(Err(ChangeError::Store(e))) => tracing::warn!("lease renewal failed: {e}"),
        }
        let mut held = attempt.message.lock().await;
        if let Some(message) = held.as_ref() {
            match queue.extend(message, lease).await {
                Ok(next) => *held = Some(next),
                // Another receiver has the message now: it finds the lease live and waits.
                Err(QueueError::Lost) => *held = None,
                Err(e) => tracing::warn!("heartbeat failed: {e}"),
            }
        }
    }
}

/// Publishes progress a few times a second, stores it now and then, and notices a cancel
/// requested through the store (from another instance) or a lease taken over.
async fn watch_progress(
    jobs: Jobs,
    mut job: Job,
    attempt: Attempt,
    config: WorkerConfig,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.progress_publish);
    let mut last_store = Instant::now();
    let mut last_poll = Instant::now();
    let mut last = (0, 0);
    let token = attempt.token.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = (
            attempt.counters.rows.load(Ordering::Relaxed),
            attempt.counters.bytes.load(Ordering::Relaxed),
        );
        if now != last {
            last = now;
            job.progress.rows = now.0;
            job.progress.bytes = now.1;
            if last_store.elapsed() >= config.progress_store {
                last_store = Instant::now();
                last_poll = Instant::now();
                match jobs
                    .transition(&attempt.job_id, |j| j.record_progress(&token, now.0, now.1))
                    .await
                {
                    Ok(stored) => {
                        if stored.cancel_requested {
                            attempt.cancel.cancel();
                        }
                        job = stored;
                    }
                    Err(ChangeError::Refused { reason, .. }) => {
                        tracing::warn!(job = %attempt.job_id, "progress refused ({reason}): stopping the attempt");
                        attempt.lost.cancel();
                        return;
                    }
                    Err(e) => tracing::debug!("progress not stored: {e}"),
                }
                continue;
            }
            jobs.hub.publish(&job);
        }
        if last_poll.elapsed() >= config.cancel_poll {
            last_poll = Instant::now();
            if let Ok(Some(fresh)) = jobs.get(&attempt.job_id).await {
                if fresh.cancel_requested {
                    attempt.cancel.cancel();
                }
                if fresh.lease.as_deref() != Some(token.as_str()) {
                    attempt.lost.cancel();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_stay_within_jitter_and_cap() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        assert_eq!(retry_delay(1, base, max, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(1, base, max, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(3, base, max, 1.0), Duration::from_secs(8));
        assert_eq!(retry_delay(30, base, max, 1.0), max);
        assert_eq!(retry_delay(30, base, max, 0.0), max / 2);
    }
}
