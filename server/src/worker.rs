//! The worker: takes job messages from the queue and runs their exports.
//!
//! [`Worker::process`] handles exactly one received message and is what tests drive step by
//! step; [`Worker::run`] wraps it in the polling loop with bounded concurrency.
//!
//! Delivery is at-least-once: a message is deleted only after the job's final state is
//! stored, and its visibility is extended (a heartbeat) while the export runs, so a crashed
//! worker's job reappears after the visibility timeout and is picked up again. Redelivery is
//! harmless: a message for a job already in a final state is simply deleted, and a job's file
//! name comes from its id, so a rerun overwrites instead of duplicating. A message received more
//! often than the attempt limit is a poison message: its job fails with a readable reason and
//! the message moves to the poison queue, instead of crashing workers forever.
//!
//! Error policy: transient failures (database or storage unreachable) are retried with
//! exponential back-off and jitter, by hiding the message until the back-off ends; permanent
//! ones (bad query, row cap) fail the job at once.

use crate::blobs::BlobStore;
use crate::export::{self, Counters, ExportContext, ExportFailure, ExportOutput};
use crate::jobs::{Jobs, StoreError};
use crate::queue::{JobMessage, Queue, QueueError, Received};
use app::jobs::{FileFacts, Job, JobError, JobStatus, Progress};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

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
    /// The job was already final or is gone: the message was deleted.
    Skipped,
    /// Moved to the poison queue.
    Poisoned,
    /// The worker stopped holding the message (shutdown, or its lease was lost); another
    /// delivery will finish the job.
    Released,
}

pub struct Worker {
    pub queue: Arc<dyn Queue>,
    pub jobs: Jobs,
    pub export: Arc<ExportContext>,
    pub config: WorkerConfig,
    /// Notified on every submit on this instance, so work starts without a polling delay.
    pub wake: Arc<Notify>,
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Cancelled when the grace period of a shutdown is over: running exports are released.
    release: CancellationToken,
}

/// The delay before attempt `attempt + 1`: exponential from `base`, capped, with equal jitter.
pub fn retry_delay(attempt: u32, base: Duration, max: Duration, random: f64) -> Duration {
    let exp = base.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
    let capped = exp.min(max.as_secs_f64());
    Duration::from_secs_f64(capped / 2.0 + capped / 2.0 * random.clamp(0.0, 1.0))
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

    /// Stops a job running on this instance within moments (its record already says so).
    pub fn cancel_local(&self, job_id: &str) {
        if let Some(token) = self.running.lock().expect("lock").get(job_id) {
            token.cancel();
        }
    }

    /// Handles one received message from start to final state.
    #[tracing::instrument(skip_all, fields(message = %message.id, dequeue_count = message.dequeue_count))]
    pub async fn process(&self, message: Received) -> Outcome {
        let Some(body) = JobMessage::decode(&message.body) else {
            tracing::warn!(body = %message.body, "unreadable queue message: moving it to the poison queue");
            return match self.queue.dead_letter(&message).await {
                Ok(()) => Outcome::Poisoned,
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
        let outcome = self.process_job(message, job).await;
        tracing::info!(job = %id, ?outcome, "attempt ended");
        outcome
    }

    #[tracing::instrument(skip_all, fields(job = %job.id))]
    async fn process_job(&self, message: Received, job: Job) -> Outcome {
        if job.status.is_final() {
            tracing::info!(job = %job.id, status = %job.status, "job already final: deleting its message");
            let _ = self.queue.delete(&message).await;
            return Outcome::Skipped;
        }
        if job.cancel_requested {
            return self.finish_cancelled(&job.id, &message).await;
        }
        if message.dequeue_count > self.config.max_attempts {
            let reason = job
                .error
                .as_ref()
                .map(|e| format!(" The last attempt failed with: {}", e.message))
                .unwrap_or_default();
            let error = JobError {
                code: "attempts_exhausted".into(),
                message: format!(
                    "The export was tried {} times without finishing and was given up.{reason}",
                    message.dequeue_count - 1
                ),
            };
            let stored = self
                .store_final(&job.id, JobStatus::Failed, Some(error), None)
                .await;
            if stored.is_err() {
                return Outcome::Released;
            }
            let _ = self.queue.dead_letter(&message).await;
            return Outcome::Poisoned;
        }

        // Start the attempt.
        let started = self
            .jobs
            .modify(&job.id, |j| {
                if j.status.is_final() {
                    return false;
                }
                j.status = JobStatus::Running;
                j.attempts += 1;
                j.started_at = Some(Utc::now());
                j.progress = Progress {
                    rows: 0,
                    bytes: 0,
                    total_rows: j.progress.total_rows,
                };
                true
            })
            .await;
        let job = match started {
            Ok(j) if j.status == JobStatus::Running => j,
            Ok(_) => {
                let _ = self.queue.delete(&message).await;
                return Outcome::Skipped;
            }
            Err(e) => {
                tracing::warn!(job = %job.id, "cannot start the job ({e}); the message will come back");
                return Outcome::Released;
            }
        };
        tracing::info!(job = %job.id, attempt = job.attempts, "export started");

        let cancel = CancellationToken::new();
        self.running
            .lock()
            .expect("lock")
            .insert(job.id.clone(), cancel.clone());
        let lease = Arc::new(tokio::sync::Mutex::new(message));
        let lost = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let stop_helpers = CancellationToken::new();

        let heartbeat = tokio::spawn(heartbeat(
            self.queue.clone(),
            lease.clone(),
            self.config.visibility,
            lost.clone(),
            stop_helpers.clone(),
        ));
        let watcher = tokio::spawn(watch_progress(
            self.jobs.clone(),
            job.clone(),
            counters.clone(),
            self.config.clone(),
            cancel.clone(),
            stop_helpers.clone(),
        ));

        // The export stops on a user cancel, a lost lease, or the end of a shutdown's grace.
        let stop = CancellationToken::new();
        let result = {
            let stop2 = stop.clone();
            let (c, l, r) = (cancel.clone(), lost.clone(), self.release.clone());
            let forward = tokio::spawn(async move {
                tokio::select! {
                    _ = c.cancelled() => {},
                    _ = l.cancelled() => {},
                    _ = r.cancelled() => {},
                }
                stop2.cancel();
            });
            let result = export::run(&self.export, &job, &stop, counters.clone()).await;
            forward.abort();
            result
        };
        stop_helpers.cancel();
        let _ = heartbeat.await;
        let _ = watcher.await;
        self.running.lock().expect("lock").remove(&job.id);
        let message = lease.lock().await.clone();

        if lost.is_cancelled() {
            tracing::warn!(job = %job.id, "lost the queue message while running; another delivery will redo the job");
            return Outcome::Released;
        }
        let user_cancelled = cancel.is_cancelled()
            || matches!(self.jobs.get(&job.id).await, Ok(Some(j)) if j.cancel_requested);
        match result {
            _ if user_cancelled => {
                if result.is_ok() {
                    let _ = self.blobs().delete(&export::blob_name(&job)).await;
                }
                self.finish_cancelled(&job.id, &message).await
            }
            Err(ExportFailure::Cancelled) => self.release(&job, &message).await,
            Ok(output) => self.finish_succeeded(&job, output, &message).await,
            Err(ExportFailure::Permanent {
                code,
                message: text,
            }) => {
                tracing::warn!(job = %job.id, code, "export failed: {text}");
                self.finish_failed(&job.id, code, text, &message).await
            }
            Err(ExportFailure::Transient {
                code,
                message: text,
            }) => {
                if job.attempts >= self.config.max_attempts {
                    let text = format!("{text} (gave up after {} attempts)", job.attempts);
                    tracing::warn!(job = %job.id, code, "export failed for the last time: {text}");
                    return self.finish_failed(&job.id, code, text, &message).await;
                }
                let delay = retry_delay(
                    job.attempts,
                    self.config.retry_base,
                    self.config.retry_max,
                    rand::random(),
                );
                tracing::info!(job = %job.id, code, delay_ms = delay.as_millis() as u64, "export failed; retrying: {text}");
                let error = JobError {
                    code: code.into(),
                    message: format!(
                        "Attempt {} of {} failed: {text} Trying again in {} s.",
                        job.attempts,
                        self.config.max_attempts,
                        delay.as_secs().max(1)
                    ),
                };
                let stored = self
                    .jobs
                    .modify(&job.id, |j| {
                        if j.status.is_final() {
                            return false;
                        }
                        j.status = JobStatus::Retrying;
                        j.error = Some(error.clone());
                        true
                    })
                    .await;
                if stored.is_err() {
                    return Outcome::Released;
                }
                // Hiding the message for the back-off is the retry timer: it survives restarts.
                let _ = self.queue.extend(&message, delay).await;
                Outcome::Retrying
            }
        }
    }

    async fn store_final(
        &self,
        id: &str,
        status: JobStatus,
        error: Option<JobError>,
        file: Option<FileFacts>,
    ) -> Result<Job, StoreError> {
        self.jobs
            .modify(id, |j| {
                if j.status.is_final() {
                    return false;
                }
                j.status = status;
                j.error = error.clone();
                j.file = file.clone();
                j.finished_at = Some(Utc::now());
                if let Some(f) = &file {
                    j.progress.rows = f.rows;
                    j.progress.bytes = f.bytes;
                }
                true
            })
            .await
    }

    async fn finish_succeeded(
        &self,
        job: &Job,
        output: ExportOutput,
        message: &Received,
    ) -> Outcome {
        let retention =
            chrono::Duration::from_std(self.config.retention).unwrap_or(chrono::Duration::days(7));
        let file = FileFacts {
            name: export::download_name(job),
            bytes: output.bytes,
            rows: output.rows,
            sha256: output.sha256,
            content_type: export::content_type(job).to_string(),
            expires_at: Utc::now() + retention,
        };
        match self
            .store_final(&job.id, JobStatus::Succeeded, None, Some(file))
            .await
        {
            Ok(_) => {
                tracing::info!(job = %job.id, rows = output.rows, bytes = output.bytes, "export succeeded");
                let _ = self.queue.delete(message).await;
                Outcome::Succeeded
            }
            Err(e) => {
                tracing::warn!(job = %job.id, "cannot store the result ({e}); the message will come back");
                Outcome::Released
            }
        }
    }

    async fn finish_failed(
        &self,
        id: &str,
        code: &str,
        text: String,
        message: &Received,
    ) -> Outcome {
        let error = JobError {
            code: code.to_string(),
            message: text,
        };
        match self
            .store_final(id, JobStatus::Failed, Some(error), None)
            .await
        {
            Ok(_) => {
                let _ = self.queue.delete(message).await;
                Outcome::Failed
            }
            Err(_) => Outcome::Released,
        }
    }

    async fn finish_cancelled(&self, id: &str, message: &Received) -> Outcome {
        let error = JobError {
            code: "cancelled".into(),
            message: "Cancelled at your request.".into(),
        };
        match self
            .store_final(id, JobStatus::Cancelled, Some(error), None)
            .await
        {
            Ok(_) => {
                let _ = self.queue.delete(message).await;
                Outcome::Cancelled
            }
            Err(_) => Outcome::Released,
        }
    }

    /// Gives a job back to the queue at once (shutdown): it runs again elsewhere or after restart.
    async fn release(&self, job: &Job, message: &Received) -> Outcome {
        let _ = self
            .jobs
            .modify(&job.id, |j| {
                if j.status != JobStatus::Running {
                    return false;
                }
                j.status = JobStatus::Queued;
                true
            })
            .await;
        let _ = self.queue.extend(message, Duration::ZERO).await;
        Outcome::Released
    }

    /// Marks finished jobs older than the retention time as expired and removes their files.
    pub async fn sweep_expired(&self) -> usize {
        let retention =
            chrono::Duration::from_std(self.config.retention).unwrap_or(chrono::Duration::days(7));
        let Ok(old) = self
            .jobs
            .store
            .finished_before(Utc::now() - retention, 100)
            .await
        else {
            return 0;
        };
        let mut swept = 0;
        for job in old {
            if job.status == JobStatus::Succeeded {
                if let Err(e) = self.blobs().delete(&export::blob_name(&job)).await {
                    tracing::warn!(job = %job.id, "cannot remove an expired file: {e}");
                    continue;
                }
            }
            if self
                .jobs
                .modify(&job.id, |j| {
                    j.status = JobStatus::Expired;
                    true
                })
                .await
                .is_ok()
            {
                swept += 1;
            }
        }
        swept
    }

    /// Polls the queue until `shutdown`, running up to `concurrency` jobs at once. On shutdown,
    /// running jobs get the grace period to finish; after it they are released to the queue.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        let mut idle = self.config.poll_min;
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_sweep {
                let swept = self.sweep_expired().await;
                if swept > 0 {
                    tracing::info!(swept, "expired old exports");
                }
                next_sweep = tokio::time::Instant::now() + Duration::from_secs(60);
            }
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

/// Keeps the message hidden while the export runs; the newest receipt is kept in `lease`.
async fn heartbeat(
    queue: Arc<dyn Queue>,
    lease: Arc<tokio::sync::Mutex<Received>>,
    visibility: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let every = (visibility / 3).max(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let mut held = lease.lock().await;
        match queue.extend(&held, visibility).await {
            Ok(next) => *held = next,
            Err(QueueError::Lost) => {
                lost.cancel();
                return;
            }
            // Storage hiccup: try again at the next beat (the visibility has slack for it).
            Err(e) => tracing::warn!("heartbeat failed: {e}"),
        }
    }
}

/// Publishes progress a few times a second, stores it now and then, and notices a cancel
/// requested through the store (from another instance).
async fn watch_progress(
    jobs: Jobs,
    mut job: Job,
    counters: Arc<Counters>,
    config: WorkerConfig,
    cancel: CancellationToken,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.progress_publish);
    let mut last_store = tokio::time::Instant::now();
    let mut last_poll = tokio::time::Instant::now();
    let mut last = (0, 0);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = (
            counters.rows.load(Ordering::Relaxed),
            counters.bytes.load(Ordering::Relaxed),
        );
        if now != last {
            last = now;
            job.progress.rows = now.0;
            job.progress.bytes = now.1;
            if last_store.elapsed() >= config.progress_store {
                last_store = tokio::time::Instant::now();
                match jobs.update(&job).await {
                    Ok(stored) => job = stored,
                    Err(StoreError::Conflict) => {
                        if let Ok(Some(fresh)) = jobs.get(&job.id).await {
                            if fresh.cancel_requested {
                                cancel.cancel();
                            }
                            job = Job {
                                progress: job.progress.clone(),
                                ..fresh
                            };
                        }
                    }
                    Err(e) => tracing::debug!("progress not stored: {e}"),
                }
                continue;
            }
            jobs.hub.publish(&job);
        }
        if last_poll.elapsed() >= config.cancel_poll {
            last_poll = tokio::time::Instant::now();
            if let Ok(Some(fresh)) = jobs.get(&job.id).await {
                if fresh.cancel_requested {
                    cancel.cancel();
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
