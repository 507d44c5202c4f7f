//! The one service layer behind both the REST API and the page's server functions: every
//! check (ownership, limits, validation) is made here, once.

use crate::audit::AuditLog;
use crate::blobs::{BlobError, BlobMeta, BlobStore, Download};
use crate::catalog::{Catalog, FieldError};
use crate::export;
use crate::jobs::{ChangeError, Jobs, StoreError};
use crate::queue::{JobMessage, Queue};
use crate::source::{Param, Value};
use crate::worker::Worker;
use app::admin::{AuditAction, AuditEntry};
use app::catalog::DatasetInfo;
use app::error::{ApiError, ErrorCode};
use app::jobs::{
    ExportFormat, ExportRequest, Job, JobError, JobErrorCode, JobStatus, Preview, TransitionError,
};
use chrono::Utc;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Rows shown in a preview.
pub const PREVIEW_ROWS: usize = 20;
/// The longest a submit waits for the row count before going ahead without it.
const COUNT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a preview query may run; the database stops it there.
const PREVIEW_TIMEOUT: Duration = Duration::from_secs(15);
/// How much longer than the database's own timeout the service waits, for the round trip.
const CLIENT_SLACK: Duration = Duration::from_secs(2);
/// Preview and count queries that may run at once on one source: with the default pool of four
/// connections, exports always keep at least two, whatever a crowd of previewers does.
pub const PREVIEW_QUERIES_PER_SOURCE: usize = 2;
/// How long a preview waits for one of those before answering "busy".
const PREVIEW_SLOT_WAIT: Duration = Duration::from_secs(5);
/// Jobs listed per user.
const LIST_LIMIT: usize = 200;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_active_jobs: usize,
    pub row_cap: u64,
    pub download_ttl: Duration,
}

pub struct Service {
    pub catalog: Arc<Catalog>,
    pub jobs: Jobs,
    pub queue: Arc<dyn Queue>,
    pub blobs: Arc<dyn BlobStore>,
    pub limits: Limits,
    /// Wakes a worker on this instance at once after a submit.
    pub wake: Arc<Notify>,
    /// The worker of this instance, if it runs one (role `all`): cancels reach it directly.
    pub worker: Option<Arc<Worker>>,
    /// Per source, the connections previews and counts may take (see
    /// [`PREVIEW_QUERIES_PER_SOURCE`]).
    pub preview_slots: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    pub audit: Arc<dyn AuditLog>,
    /// Whether the queue's counts are estimates (Azure).
    pub queue_is_approximate: bool,
    pub stats_cache: crate::admin::StatsCache,
    /// Where submits, cancels and retries are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => not_found(),
        StoreError::Conflict => ApiError::new(
            ErrorCode::Conflict,
            "The export changed at the same moment; try again.",
        ),
        StoreError::LimitReached { active } => ApiError::new(
            ErrorCode::TooManyRequests,
            format!("You already have {active} exports in progress. Wait for one to finish or cancel one."),
        ),
        StoreError::Unavailable(cause) => {
            tracing::error!("job store unavailable: {cause}");
            ApiError::new(
                ErrorCode::Unavailable,
                "Exports are unavailable right now; try again in a moment.",
            )
        }
    }
}

/// A fresh ticket: only the queue message that carries it may start the job.
fn new_ticket() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn not_found() -> ApiError {
    ApiError::not_found("No export with this id.")
}

/// One message for all the problems of a request. `Dataset::check` keeps at most
/// `MAX_ERRORS` short ones, so the answer stays small whatever the request holds.
fn field_errors(errors: Vec<FieldError>) -> ApiError {
    let text: Vec<String> = errors
        .into_iter()
        .take(crate::catalog::MAX_ERRORS)
        .map(|e| e.message)
        .collect();
    ApiError::bad_request(format!("{}.", text.join("; ")))
}

/// A preview cell as the chosen format will hold it: JSON documents and arrays are JSON in the
/// JSON formats and their text in CSV and XLSX; everything else maps as in NDJSON.
fn preview_cell(v: Value, format: ExportFormat) -> serde_json::Value {
    match (&v, format) {
        (Value::Json(_) | Value::Array(_), ExportFormat::Csv | ExportFormat::Xlsx) => {
            let mut text = String::new();
            v.write_plain(&mut text);
            serde_json::Value::String(text)
        }
        _ => crate::format::to_json(&v),
    }
}

impl Service {
    pub fn datasets(&self) -> Vec<DatasetInfo> {
        self.catalog.infos()
    }

    fn dataset(&self, id: &str) -> Result<Arc<crate::catalog::Dataset>, ApiError> {
        self.catalog.get(id).ok_or_else(|| {
            ApiError::bad_request(format!("Unknown dataset `{}`.", crate::catalog::quote(id)))
        })
    }

    fn check_request(
        &self,
        user: &str,
        req: &ExportRequest,
    ) -> Result<(Arc<crate::catalog::Dataset>, crate::catalog::Checked), ApiError> {
        let dataset = self.dataset(&req.dataset)?;
        if !dataset.info.formats.contains(&req.format) {
            let allowed: Vec<&str> = dataset.info.formats.iter().map(|f| f.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "The dataset `{}` cannot be exported as {}; choose one of: {}.",
                req.dataset,
                req.format,
                allowed.join(", ")
            )));
        }
        if req.gzip && !req.format.can_gzip() {
            return Err(ApiError::bad_request(
                "XLSX files are already compressed; gzip is only for csv, ndjson and json.",
            ));
        }
        let checked = dataset
            .check_with_options(&req.params, req.columns.as_deref(), &req.options, user)
            .map_err(field_errors)?;
        Ok((dataset, checked))
    }

    /// One of the few connections of `dataset`'s source that previews and counts may use, or
    /// `None` when they are all taken for longer than a moment.
    async fn preview_slot(
        &self,
        dataset: &crate::catalog::Dataset,
    ) -> Option<OwnedSemaphorePermit> {
        let slots = self
            .preview_slots
            .lock()
            .expect("lock")
            .entry(dataset.source_name.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(PREVIEW_QUERIES_PER_SOURCE)))
            .clone();
        tokio::time::timeout(PREVIEW_SLOT_WAIT, slots.acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// Counts the rows an export would have, if the source answers quickly. The database stops
    /// the count itself at the timeout, so an abandoned count costs nothing after it.
    async fn estimate(&self, dataset: &crate::catalog::Dataset, params: &[Param]) -> Option<u64> {
        let count = async {
            let _slot = self.preview_slot(dataset).await?;
            let mut rows = crate::source::complete(dataset.source.batches_limited(
                &dataset.count.sql,
                params,
                COUNT_TIMEOUT,
            ));
            let count = match rows.next().await {
                Some(Ok(rows)) => match rows.first().and_then(|row| row.first()) {
                    Some(Value::Int(n)) => u64::try_from(*n).ok(),
                    _ => None,
                },
                _ => None,
            };
            // Only a count whose query ran to its end is a count.
            rows.next().await.is_none().then_some(count).flatten()
        };
        tokio::time::timeout(COUNT_TIMEOUT + CLIENT_SLACK, count)
            .await
            .ok()
            .flatten()
    }

    pub async fn preview(&self, user: &str, req: &ExportRequest) -> Result<Preview, ApiError> {
        let (dataset, checked) = self.check_request(user, req)?;
        let width = dataset.info.columns.len();
        let rows = async {
            let Some(_slot) = self.preview_slot(&dataset).await else {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "Previews of this dataset are busy right now; try again in a moment.",
                ));
            };
            let mut stream = crate::source::complete(dataset.source.batches_limited(
                &dataset.bound.sql,
                &checked.params,
                PREVIEW_TIMEOUT,
            ));
            let mut rows = Vec::new();
            while rows.len() < PREVIEW_ROWS {
                match stream.next().await {
                    Some(Ok(batch)) => {
                        for row in batch.into_iter().take(PREVIEW_ROWS - rows.len()) {
                            if row.len() != width {
                                let failure =
                                    export::width_changed(&dataset.info.id, width, row.len());
                                return Err(ApiError::new(
                                    ErrorCode::BadRequest,
                                    failure.to_string(),
                                ));
                            }
                            let mut row: Vec<Option<Value>> = row.into_iter().map(Some).collect();
                            // The same cells the file gets, shaped the same way.
                            let mut shown: Vec<Value> = checked
                                .column_positions
                                .iter()
                                .map(|&i| row[i].take().unwrap_or(Value::Null))
                                .collect();
                            checked.shape.apply(&mut shown);
                            rows.push(
                                shown
                                    .into_iter()
                                    .map(|v| preview_cell(v, req.format))
                                    .collect::<Vec<_>>(),
                            );
                        }
                    }
                    Some(Err(e)) => {
                        return Err(ApiError::new(
                            if e.kind == crate::source::SourceErrorKind::Unavailable {
                                ErrorCode::Unavailable
                            } else {
                                ErrorCode::BadRequest
                            },
                            e.message,
                        ));
                    }
                    None => break,
                }
            }
            Ok(rows)
        };
        let (rows, estimated_rows) = tokio::join!(
            tokio::time::timeout(PREVIEW_TIMEOUT + CLIENT_SLACK, rows),
            self.estimate(&dataset, &checked.params)
        );
        let rows = rows.map_err(|_| {
            ApiError::new(
                ErrorCode::Unavailable,
                "The preview took too long; try narrower filters.",
            )
        })??;
        Ok(Preview {
            columns: checked.headers,
            rows,
            estimated_rows,
        })
    }

    /// Validates, applies the user's limits, stores the job and queues it.
    pub async fn submit(
        &self,
        user: &str,
        req: ExportRequest,
        idempotency_key: Option<&str>,
        address: Option<&str>,
    ) -> Result<(Job, bool), ApiError> {
        if let Some(key) = idempotency_key {
            if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiError::bad_request(
                    "Idempotency-Key must be 1 to 200 visible ASCII characters.",
                ));
            }
        }
        let (dataset, checked) = self.check_request(user, &req)?;
        if let Some(key) = idempotency_key {
            // A repeated submit returns the first job even when the user is now at the limit.
            if let Some(existing) = self.find_by_key(user, key).await? {
                return Ok((existing, false));
            }
        }
        self.ensure_room(user).await?;
        let total_rows = self.estimate(&dataset, &checked.params).await;
        if let Some(n) = total_rows.filter(|&n| n > self.limits.row_cap) {
            return Err(ApiError::bad_request(format!(
                "This export would have {n} rows; one export may have at most {}. Narrow the filters and try again.",
                self.limits.row_cap
            )));
        }
        let mut job = Job::queued(
            uuid::Uuid::now_v7().simple().to_string(),
            user,
            dataset.info.id.clone(),
            req.format,
            checked.columns,
        );
        job.gzip = req.gzip;
        job.params = checked.params_json;
        job.options = checked.options;
        job.progress.total_rows = total_rows;
        job.ticket = Some(new_ticket());
        // The store counts and inserts atomically: `ensure_room` above only saves the
        // estimate's cost when the user is clearly at the limit.
        let (job, created) = self
            .jobs
            .create(&job, idempotency_key, self.limits.max_active_jobs)
            .await
            .map_err(|e| self.limit_error(e))?;
        if created {
            self.metrics.job_submitted(&job);
            self.enqueue(&job).await?;
            self.record(AuditAction::Submit, user, address, &job).await;
        }
        Ok((job, created))
    }

    /// The audit entry of `action` by `actor` on `job`.
    pub fn audit_entry(
        action: AuditAction,
        actor: &str,
        address: Option<&str>,
        job: &Job,
    ) -> AuditEntry {
        AuditEntry {
            id: crate::audit::new_id(),
            at: Utc::now(),
            actor: actor.to_string(),
            action,
            job: job.id.clone(),
            owner: job.owner.clone(),
            dataset: job.dataset.clone(),
            format: job.format,
            parameters: serde_json::json!({
                "params": job.params,
                "columns": job.columns,
                "gzip": job.gzip,
                "options": job.options,
            }),
            address: address.map(str::to_string),
        }
    }

    /// Records an action that has happened; a failure is logged and the action stands (see
    /// the `audit` module's policy).
    pub async fn record(&self, action: AuditAction, actor: &str, address: Option<&str>, job: &Job) {
        let entry = Self::audit_entry(action, actor, address, job);
        if let Err(e) = self.audit.append(&entry).await {
            tracing::error!(job = %job.id, action = action.as_str(), "not recorded in the audit trail: {e}");
        }
    }

    /// Refuses a new run early when the user already has the most active exports allowed.
    /// Not a guarantee (another submit may be on its way): the store's reservation is.
    async fn ensure_room(&self, user: &str) -> Result<(), ApiError> {
        let active = self
            .jobs
            .store
            .active_count(user)
            .await
            .map_err(store_error)?;
        if active >= self.limits.max_active_jobs {
            return Err(self.limit_error(StoreError::LimitReached { active }));
        }
        Ok(())
    }

    fn limit_error(&self, e: StoreError) -> ApiError {
        match e {
            StoreError::LimitReached { active } => ApiError::new(
                ErrorCode::TooManyRequests,
                format!(
                    "You already have {active} exports in progress (the limit is {}). Wait for one to finish or cancel one.",
                    self.limits.max_active_jobs
                ),
            ),
            other => store_error(other),
        }
    }

    async fn find_by_key(&self, user: &str, key: &str) -> Result<Option<Job>, ApiError> {
        self.jobs
            .store
            .find_by_key(user, key)
            .await
            .map_err(store_error)
    }

    async fn enqueue(&self, job: &Job) -> Result<(), ApiError> {
        let message = JobMessage::for_job(job);
        if let Err(e) = self.queue.send(&message.encode(), Duration::ZERO).await {
            tracing::error!(job = %job.id, "cannot queue the job: {e}");
            let error = JobError::new(
                JobErrorCode::QueueUnavailable,
                "The export could not be queued; try again.",
            );
            if let Ok(failed) = self
                .jobs
                .transition(&job.id, |j| j.give_up(error.clone(), Utc::now()))
                .await
            {
                self.metrics.job_changed(&failed);
            }
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "The export could not be queued; try again in a moment.",
            ));
        }
        self.wake.notify_one();
        Ok(())
    }

    pub async fn list(&self, user: &str) -> Result<Vec<Job>, ApiError> {
        self.jobs
            .store
            .list(user, LIST_LIMIT)
            .await
            .map_err(store_error)
    }

    /// The ids of the jobs `list` returns, without their records.
    pub async fn list_ids(&self, user: &str) -> Result<Vec<String>, ApiError> {
        self.jobs
            .store
            .list_ids(user, LIST_LIMIT)
            .await
            .map_err(store_error)
    }

    /// The job, if it is the user's; someone else's job is "not found", so ids can't be probed.
    pub async fn get(&self, user: &str, id: &str) -> Result<Job, ApiError> {
        match self.jobs.get(id).await.map_err(store_error)? {
            Some(job) if job.owner == user => Ok(job),
            _ => Err(not_found()),
        }
    }

    pub async fn cancel(
        &self,
        user: &str,
        id: &str,
        address: Option<&str>,
    ) -> Result<Job, ApiError> {
        self.get(user, id).await?;
        let job = self.cancel_job(id).await?;
        self.record(AuditAction::Cancel, user, address, &job).await;
        Ok(job)
    }

    /// Cancels the job whoever owns it (the caller has checked who may).
    pub(crate) async fn cancel_job(&self, id: &str) -> Result<Job, ApiError> {
        let job = match self
            .jobs
            .transition(id, |j| j.request_cancel(Utc::now()))
            .await
        {
            Ok(job) => job,
            // Asking twice, or after it ended as cancelled, is not an error.
            Err(ChangeError::Refused { reason, job })
                if reason == TransitionError::AlreadyRequested
                    || job.status == JobStatus::Cancelled =>
            {
                return Ok(*job)
            }
            Err(ChangeError::Refused { job, .. }) => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("The export has already {}.", job.status),
                ))
            }
            Err(ChangeError::Store(e)) => return Err(store_error(e)),
        };
        tracing::info!(job = %id, status = %job.status, "cancel requested");
        self.metrics.job_changed(&job);
        if let Some(worker) = &self.worker {
            worker.cancel_local(id);
        }
        Ok(job)
    }

    /// Runs a failed or cancelled export again, as the same job, under a new ticket: a
    /// message still on the queue from before its cancel can no longer start it.
    pub async fn retry(
        &self,
        user: &str,
        id: &str,
        address: Option<&str>,
    ) -> Result<Job, ApiError> {
        self.get(user, id).await?;
        let job = self.retry_job(id).await?;
        self.metrics
            .retried(&job, crate::metrics::RetryTrigger::User);
        self.record(AuditAction::Retry, user, address, &job).await;
        Ok(job)
    }

    /// Runs a failed or cancelled job again whoever owns it (the caller has checked who may).
    pub(crate) async fn retry_job(&self, id: &str) -> Result<Job, ApiError> {
        self.retry_within(id, self.limits.max_active_jobs).await
    }

    /// Like `retry_job`, whatever the owner's limit of active jobs (an operator's redrive).
    pub(crate) async fn retry_job_unlimited(&self, id: &str) -> Result<Job, ApiError> {
        self.retry_within(id, usize::MAX).await
    }

    async fn retry_within(&self, id: &str, max_active: usize) -> Result<Job, ApiError> {
        let refused = || {
            ApiError::new(
                ErrorCode::Conflict,
                "Only failed or cancelled exports can be retried.",
            )
        };
        let job = match self.jobs.retry(id, &new_ticket(), max_active).await {
            Ok(job) => job,
            Err(ChangeError::Refused { .. }) => return Err(refused()),
            Err(ChangeError::Store(e)) => return Err(self.limit_error(e)),
        };
        self.enqueue(&job).await?;
        Ok(job)
    }

    pub async fn download(
        &self,
        user: &str,
        id: &str,
        address: Option<&str>,
    ) -> Result<(Download, BlobMeta), ApiError> {
        let job = self.get(user, id).await?;
        let file = match (&job.status, &job.file) {
            (JobStatus::Succeeded, Some(file)) => file.clone(),
            (JobStatus::Expired, _) => {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    "This export has expired and its file was removed.",
                ))
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "The export is {}; there is no file to download yet.",
                        job.status
                    ),
                ))
            }
        };
        let meta = BlobMeta {
            content_type: file.content_type.clone(),
            filename: file.name.clone(),
        };
        // No file leaves unrecorded: the entry is written before the link or stream exists.
        let entry = Self::audit_entry(AuditAction::Download, user, address, &job);
        if let Err(e) = self.audit.append(&entry).await {
            tracing::error!(job = %job.id, "download refused: cannot record it: {e}");
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "Downloads are unavailable right now; try again in a moment.",
            ));
        }
        match self
            .blobs
            .download(&export::blob_name(&job), &meta, self.limits.download_ttl)
            .await
        {
            Ok(d) => Ok((d, meta)),
            Err(BlobError::NotFound) => {
                Err(ApiError::not_found("The file of this export is missing."))
            }
            Err(e) => {
                tracing::error!(job = %job.id, "download failed: {e}");
                Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "The file cannot be read right now; try again in a moment.",
                ))
            }
        }
    }
}
