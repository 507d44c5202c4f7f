//! The export job: one type from the job store to the page.
//!
//! The same [`Job`] value is stored as a record (SQLite row or JSON blob), returned by the
//! REST API, pushed over `/ws` and rendered by the page, so the four can never disagree.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Where a job is in its life (see DESIGN.md, "Job life").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub enum JobStatus {
    Queued,
    Running,
    /// Failed with attempts left; waits for its back-off before running again.
    Retrying,
    Succeeded,
    Failed,
    Cancelled,
    /// Succeeded, but its file has been removed after the retention time.
    Expired,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Expired,
    ];

    /// A final job never runs again; a redelivered message for it is simply deleted.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled | JobStatus::Expired
        )
    }

    /// Counts against the per-user limit of concurrent jobs.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobStatus::Queued | JobStatus::Running | JobStatus::Retrying
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The file formats Exportal writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub enum ExportFormat {
    Csv,
    Ndjson,
    Json,
    Xlsx,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 4] = [
        ExportFormat::Csv,
        ExportFormat::Ndjson,
        ExportFormat::Json,
        ExportFormat::Xlsx,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Json => "json",
            ExportFormat::Xlsx => "xlsx",
        }
    }

    pub fn parse(s: &str) -> Option<ExportFormat> {
        ExportFormat::ALL.into_iter().find(|f| f.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            ExportFormat::Csv => "CSV",
            ExportFormat::Ndjson => "NDJSON",
            ExportFormat::Json => "JSON",
            ExportFormat::Xlsx => "Excel (XLSX)",
        }
    }

    /// XLSX is already a zip archive: gzip would only cost time.
    pub fn can_gzip(self) -> bool {
        !matches!(self, ExportFormat::Xlsx)
    }

    pub fn extension(self) -> &'static str {
        self.as_str()
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Json => "application/json",
            ExportFormat::Xlsx => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a person (or program) asks to export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ExportRequest {
    pub dataset: String,
    pub format: ExportFormat,
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// A subset of the dataset's columns, in the order wanted; all columns when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub gzip: bool,
    /// How the file is shaped for the program that opens it; what is left out comes from the
    /// dataset's defaults.
    #[serde(default, skip_serializing_if = "FileOptions::is_empty")]
    pub options: FileOptions,
}

/// A CSV field delimiter: only those spreadsheets and CSV readers agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delimiter {
    #[serde(rename = ",")]
    Comma,
    #[serde(rename = ";")]
    Semicolon,
    #[serde(rename = "\t")]
    Tab,
    #[serde(rename = "|")]
    Pipe,
}

impl Delimiter {
    pub const ALL: [Delimiter; 4] = [
        Delimiter::Comma,
        Delimiter::Semicolon,
        Delimiter::Tab,
        Delimiter::Pipe,
    ];

    pub fn byte(self) -> u8 {
        match self {
            Delimiter::Comma => b',',
            Delimiter::Semicolon => b';',
            Delimiter::Tab => b'\t',
            Delimiter::Pipe => b'|',
        }
    }

    /// The name a form shows and sends.
    pub fn as_str(self) -> &'static str {
        match self {
            Delimiter::Comma => "comma",
            Delimiter::Semicolon => "semicolon",
            Delimiter::Tab => "tab",
            Delimiter::Pipe => "pipe",
        }
    }

    pub fn parse(name: &str) -> Option<Delimiter> {
        Delimiter::ALL.into_iter().find(|d| d.as_str() == name)
    }

    pub fn label(self) -> &'static str {
        match self {
            Delimiter::Comma => "Comma ,",
            Delimiter::Semicolon => "Semicolon ;",
            Delimiter::Tab => "Tab",
            Delimiter::Pipe => "Pipe |",
        }
    }
}

/// The four characters themselves, as serde writes them (the derive would spell the tab `\t`).
#[cfg(feature = "ssr")]
impl utoipa::PartialSchema for Delimiter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{schema::Type, ObjectBuilder};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A CSV field delimiter: only those spreadsheets and CSV readers agree on.",
            ))
            .enum_values(Some(
                Delimiter::ALL.map(|d| char::from(d.byte()).to_string()),
            ))
            .into()
    }
}

#[cfg(feature = "ssr")]
impl utoipa::ToSchema for Delimiter {}

/// The longest time zone name accepted (the IANA database's longest is 32 characters).
pub const MAX_TIME_ZONE_CHARS: usize = 64;

/// How a file is shaped for the program that opens it, spreadsheets above all. In a request
/// every field is optional and what is left out comes from the dataset's defaults; a job holds
/// the options as resolved at submit, so every attempt writes the same file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct FileOptions {
    /// CSV only: the field delimiter (`,` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<Delimiter>,
    /// CSV only: a UTF-8 byte-order mark first, which Excel needs to read UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bom: Option<bool>,
    /// The IANA time zone (`Europe/Paris`) timestamps with a time zone are written in, with
    /// their offset; UTC by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// CSV and XLSX: headers from the dataset's display names instead of the column names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<bool>,
}

impl FileOptions {
    pub fn is_empty(&self) -> bool {
        *self == FileOptions::default()
    }

    /// These options, with what they leave out taken from `defaults`.
    pub fn or(&self, defaults: &FileOptions) -> FileOptions {
        FileOptions {
            delimiter: self.delimiter.or(defaults.delimiter),
            bom: self.bom.or(defaults.bom),
            time_zone: self
                .time_zone
                .clone()
                .or_else(|| defaults.time_zone.clone()),
            labels: self.labels.or(defaults.labels),
        }
    }
}

/// How far a job has come.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Progress {
    pub rows: u64,
    pub bytes: u64,
    /// The row count estimated before the export started, when the source could tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_rows: Option<u64>,
}

/// Why a job failed (or was cancelled), in words for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobError {
    pub code: JobErrorCode,
    pub message: String,
}

impl JobError {
    pub fn new(code: JobErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The error of a job cancelled by its owner.
    pub fn cancelled() -> Self {
        Self::new(JobErrorCode::Cancelled, "Cancelled at your request.")
    }
}

/// The stable, machine-readable reason of a [`JobError`]. It is stored and sent as the same
/// snake_case word it always was (`"storage_failed"`, …), so records, the API and the page
/// keep reading it; a word this build does not know (a newer instance wrote it) is kept as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum JobErrorCode {
    Cancelled,
    /// The export was tried as often as allowed without finishing.
    AttemptsExhausted,
    /// The job could not be put on the queue.
    QueueUnavailable,
    /// A bug: the export panicked. Details are in the operator's log.
    InternalError,
    StorageFailed,
    SourceUnavailable,
    QueryFailed,
    RowCap,
    DatasetGone,
    DatasetChanged,
    FormatFailed,
    /// Any other code, kept verbatim.
    Other(String),
}

impl JobErrorCode {
    const KNOWN: [JobErrorCode; 11] = [
        JobErrorCode::Cancelled,
        JobErrorCode::AttemptsExhausted,
        JobErrorCode::QueueUnavailable,
        JobErrorCode::InternalError,
        JobErrorCode::StorageFailed,
        JobErrorCode::SourceUnavailable,
        JobErrorCode::QueryFailed,
        JobErrorCode::RowCap,
        JobErrorCode::DatasetGone,
        JobErrorCode::DatasetChanged,
        JobErrorCode::FormatFailed,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            JobErrorCode::Cancelled => "cancelled",
            JobErrorCode::AttemptsExhausted => "attempts_exhausted",
            JobErrorCode::QueueUnavailable => "queue_unavailable",
            JobErrorCode::InternalError => "internal_error",
            JobErrorCode::StorageFailed => "storage_failed",
            JobErrorCode::SourceUnavailable => "source_unavailable",
            JobErrorCode::QueryFailed => "query_failed",
            JobErrorCode::RowCap => "row_cap",
            JobErrorCode::DatasetGone => "dataset_gone",
            JobErrorCode::DatasetChanged => "dataset_changed",
            JobErrorCode::FormatFailed => "format_failed",
            JobErrorCode::Other(s) => s,
        }
    }
}

/// A free string on the wire (unknown words are kept), with the known ones as examples.
#[cfg(feature = "ssr")]
impl utoipa::PartialSchema for JobErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{schema::Type, ObjectBuilder};
        let known: Vec<&str> = JobErrorCode::KNOWN.iter().map(|c| c.as_str()).collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(format!(
                "A stable, machine-readable snake_case reason. Known values: {}; a newer server \
                 may send others.",
                known.join(", ")
            )))
            .examples(known)
            .into()
    }
}

#[cfg(feature = "ssr")]
impl utoipa::ToSchema for JobErrorCode {}

impl From<&str> for JobErrorCode {
    fn from(s: &str) -> Self {
        JobErrorCode::KNOWN
            .into_iter()
            .find(|c| c.as_str() == s)
            .unwrap_or_else(|| JobErrorCode::Other(s.to_string()))
    }
}

impl From<String> for JobErrorCode {
    fn from(s: String) -> Self {
        JobErrorCode::from(s.as_str())
    }
}

impl From<JobErrorCode> for String {
    fn from(c: JobErrorCode) -> Self {
        match c {
            JobErrorCode::Other(s) => s,
            known => known.as_str().to_string(),
        }
    }
}

impl PartialEq<&str> for JobErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for JobErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl fmt::Display for JobErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The finished file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct FileFacts {
    /// The download name offered to the browser (never used as a storage path).
    pub name: String,
    pub bytes: u64,
    pub rows: u64,
    pub sha256: String,
    pub content_type: String,
    pub expires_at: DateTime<Utc>,
    /// The storage name of the file: the attempt that wrote it chose it. Records written
    /// before attempts had names of their own lack it (their file is named after the job id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
}

/// One export job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Job {
    pub id: String,
    /// Who asked; every read, cancel and download checks it.
    pub owner: String,
    pub dataset: String,
    pub format: ExportFormat,
    pub gzip: bool,
    pub status: JobStatus,
    pub params: BTreeMap<String, serde_json::Value>,
    /// The columns written, in order (resolved at submit: never empty).
    pub columns: Vec<String>,
    /// The file options as resolved at submit (the dataset's defaults filled in).
    #[serde(default, skip_serializing_if = "FileOptions::is_empty")]
    pub options: FileOptions,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Runs started so far (a retry increments it).
    pub attempts: u32,
    pub progress: Progress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileFacts>,
    /// Set when the owner asks to cancel a running job; the worker stops soon after.
    #[serde(default)]
    // Always sent (the default only reads old records).
    #[cfg_attr(feature = "ssr", schema(required = true))]
    pub cancel_requested: bool,
    /// The token of the attempt that holds the job while it is `running`: only that attempt
    /// may write to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// Until when the lease holds unless renewed; a `running` job whose lease has passed was
    /// left by a worker that died or lost contact, and may be taken over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The worker instance running the current or last attempt (for operators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When the running attempt last proved it is alive (its start or last lease renewal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// Names the one queue message that may start this job: set at submit and renewed by a
    /// retry, so a message left over from before a cancel is a no-op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Bumped by every stored change: the compare-and-set token of the job store.
    #[serde(default)]
    #[cfg_attr(feature = "ssr", schema(required = true))]
    pub revision: u64,
}

impl Job {
    /// A job as it is first stored: queued, nothing run yet, created now. The store sets the
    /// first revision.
    pub fn queued(
        id: impl Into<String>,
        owner: impl Into<String>,
        dataset: impl Into<String>,
        format: ExportFormat,
        columns: Vec<String>,
    ) -> Self {
        Self {
            id: id.into(),
            owner: owner.into(),
            dataset: dataset.into(),
            format,
            gzip: false,
            status: JobStatus::Queued,
            params: BTreeMap::new(),
            columns,
            options: FileOptions::default(),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            attempts: 0,
            progress: Progress::default(),
            error: None,
            file: None,
            cancel_requested: false,
            lease: None,
            lease_expires_at: None,
            worker: None,
            heartbeat_at: None,
            ticket: None,
            revision: 0,
        }
    }
}

/// The lease of one attempt: its token and until when it holds unless renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// The worker instance that holds it.
    pub holder: String,
}

/// A change the job's state does not allow; the record is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("a {status} job cannot {action}")]
    NotAllowed {
        action: &'static str,
        status: JobStatus,
    },
    /// The attempt's token is no longer the record's: another attempt took the job over, or
    /// the job left `running`.
    #[error("this attempt no longer holds the job")]
    NotHolder,
    /// Another attempt holds a live lease on the job.
    #[error("another attempt holds the job until {until}")]
    LeaseHeld { until: DateTime<Utc> },
    /// The owner asked to cancel: the job can only end as cancelled.
    #[error("the owner asked to cancel the job")]
    CancelRequested,
    #[error("a cancel was already requested")]
    AlreadyRequested,
}

/// The job's state machine (DESIGN.md, "Job transitions and leases"): every change of status
/// goes through one of these methods, which refuse what the current state does not allow.
/// Changes made by a running attempt name its lease token and are refused once the token is
/// no longer the record's, so a worker that lost its lease can never overwrite the one that
/// took over.
impl Job {
    /// Whether an attempt holds the job with a lease that has not yet run out at `now`.
    pub fn lease_live(&self, now: DateTime<Utc>) -> bool {
        self.status == JobStatus::Running
            && self.lease.is_some()
            && self.lease_expires_at.is_some_and(|t| t > now)
    }

    fn held_by(&self, token: &str) -> Result<(), TransitionError> {
        if self.status == JobStatus::Running && self.lease.as_deref() == Some(token) {
            Ok(())
        } else {
            Err(TransitionError::NotHolder)
        }
    }

    fn release_lease(&mut self) {
        self.lease = None;
        self.lease_expires_at = None;
    }

    fn not_allowed(&self, action: &'static str) -> TransitionError {
        TransitionError::NotAllowed {
            action,
            status: self.status,
        }
    }

    /// Starts an attempt holding `lease`: from `queued` or `retrying`, or from `running` when
    /// the previous attempt's lease has run out (its worker died or lost contact).
    pub fn start_attempt(
        &mut self,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        match self.status {
            JobStatus::Queued | JobStatus::Retrying => {}
            JobStatus::Running if !self.lease_live(now) => {}
            JobStatus::Running => {
                return Err(TransitionError::LeaseHeld {
                    until: self.lease_expires_at.unwrap_or(now),
                })
            }
            _ => return Err(self.not_allowed("start")),
        }
        if self.cancel_requested {
            return Err(TransitionError::CancelRequested);
        }
        self.status = JobStatus::Running;
        self.attempts += 1;
        self.started_at = Some(now);
        self.progress.rows = 0;
        self.progress.bytes = 0;
        self.lease = Some(lease.token.clone());
        self.lease_expires_at = Some(lease.expires_at);
        self.worker = Some(lease.holder.clone());
        self.heartbeat_at = Some(now);
        Ok(())
    }

    /// Extends the attempt's lease (its heartbeat, at `now`).
    pub fn renew_lease(
        &mut self,
        token: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.held_by(token)?;
        self.lease_expires_at = Some(expires_at);
        self.heartbeat_at = Some(now);
        Ok(())
    }

    /// Stores how far the attempt has come.
    pub fn record_progress(
        &mut self,
        token: &str,
        rows: u64,
        bytes: u64,
    ) -> Result<(), TransitionError> {
        self.held_by(token)?;
        self.progress.rows = rows;
        self.progress.bytes = bytes;
        Ok(())
    }

    /// The attempt failed but another may succeed: the job waits for its back-off.
    pub fn retrying(&mut self, token: &str, error: JobError) -> Result<(), TransitionError> {
        self.held_by(token)?;
        if self.cancel_requested {
            return Err(TransitionError::CancelRequested);
        }
        self.status = JobStatus::Retrying;
        self.error = Some(error);
        self.release_lease();
        Ok(())
    }

    /// The attempt wrote `file`.
    pub fn succeed(
        &mut self,
        token: &str,
        file: FileFacts,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.held_by(token)?;
        if self.cancel_requested {
            return Err(TransitionError::CancelRequested);
        }
        self.status = JobStatus::Succeeded;
        self.progress.rows = file.rows;
        self.progress.bytes = file.bytes;
        self.file = Some(file);
        self.error = None;
        self.finished_at = Some(now);
        self.release_lease();
        Ok(())
    }

    /// The attempt failed for good.
    pub fn fail(
        &mut self,
        token: &str,
        error: JobError,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.held_by(token)?;
        if self.cancel_requested {
            return Err(TransitionError::CancelRequested);
        }
        self.status = JobStatus::Failed;
        self.error = Some(error);
        self.finished_at = Some(now);
        self.release_lease();
        Ok(())
    }

    /// The attempt stopped because its owner asked it to.
    pub fn cancelled(&mut self, token: &str, now: DateTime<Utc>) -> Result<(), TransitionError> {
        self.held_by(token)?;
        self.status = JobStatus::Cancelled;
        self.cancel_requested = true;
        self.error = Some(JobError::cancelled());
        self.finished_at = Some(now);
        self.release_lease();
        Ok(())
    }

    /// The attempt gives the job back unfinished (shutdown): it runs again from the queue.
    /// The attempt did not fail, so it does not count against the attempt limit.
    pub fn requeue(&mut self, token: &str) -> Result<(), TransitionError> {
        self.held_by(token)?;
        if self.cancel_requested {
            return Err(TransitionError::CancelRequested);
        }
        self.attempts = self.attempts.saturating_sub(1);
        self.status = JobStatus::Queued;
        self.release_lease();
        Ok(())
    }

    /// Fails a job that no attempt holds (too many deliveries, the queue unavailable): from
    /// `queued`, `retrying`, or `running` with a lease that has run out.
    pub fn give_up(&mut self, error: JobError, now: DateTime<Utc>) -> Result<(), TransitionError> {
        match self.status {
            JobStatus::Queued | JobStatus::Retrying => {}
            JobStatus::Running if !self.lease_live(now) => {}
            JobStatus::Running => {
                return Err(TransitionError::LeaseHeld {
                    until: self.lease_expires_at.unwrap_or(now),
                })
            }
            _ => return Err(self.not_allowed("be given up")),
        }
        self.status = JobStatus::Failed;
        self.error = Some(error);
        self.finished_at = Some(now);
        self.release_lease();
        Ok(())
    }

    /// The owner asks to cancel. A job no live attempt holds is cancelled at once; a running
    /// one is marked, and its attempt ends it as cancelled soon after.
    pub fn request_cancel(&mut self, now: DateTime<Utc>) -> Result<(), TransitionError> {
        if self.status.is_final() {
            return Err(self.not_allowed("be cancelled"));
        }
        if self.lease_live(now) {
            if self.cancel_requested {
                return Err(TransitionError::AlreadyRequested);
            }
            self.cancel_requested = true;
            return Ok(());
        }
        self.cancel_requested = true;
        self.status = JobStatus::Cancelled;
        self.error = Some(JobError::cancelled());
        self.finished_at = Some(now);
        self.release_lease();
        Ok(())
    }

    /// Runs a failed or cancelled job again, as the same job: queued, with a new `ticket`, so
    /// only the message sent for this retry can start it.
    pub fn reset_for_retry(&mut self, ticket: String) -> Result<(), TransitionError> {
        if !matches!(self.status, JobStatus::Failed | JobStatus::Cancelled) {
            return Err(self.not_allowed("be retried"));
        }
        self.status = JobStatus::Queued;
        self.cancel_requested = false;
        self.error = None;
        self.file = None;
        self.attempts = 0;
        self.started_at = None;
        self.finished_at = None;
        self.progress.rows = 0;
        self.progress.bytes = 0;
        self.release_lease();
        self.ticket = Some(ticket);
        Ok(())
    }

    /// A finished job past its retention time: its file is gone.
    pub fn expire(&mut self) -> Result<(), TransitionError> {
        if !matches!(
            self.status,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        ) {
            return Err(self.not_allowed("expire"));
        }
        self.status = JobStatus::Expired;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_as_lowercase_words() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        assert_eq!(JobStatus::parse("done"), None);
    }

    #[test]
    fn final_and_active_statuses_partition_the_life_cycle() {
        for s in JobStatus::ALL {
            assert_ne!(s.is_final(), s.is_active(), "{s}");
        }
    }

    fn job() -> Job {
        Job::queued(
            "j1",
            "alice",
            "orders",
            ExportFormat::Csv,
            vec!["id".into()],
        )
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn lease(token: &str, until: i64) -> Lease {
        Lease {
            token: token.into(),
            expires_at: at(until),
            holder: "w1".into(),
        }
    }

    fn file() -> FileFacts {
        FileFacts {
            name: "orders.csv".into(),
            bytes: 10,
            rows: 2,
            sha256: "00".into(),
            content_type: "text/csv".into(),
            expires_at: at(1000),
            blob: Some("j1.a.csv".into()),
        }
    }

    fn error() -> JobError {
        JobError::new(JobErrorCode::StorageFailed, "disk away")
    }

    fn running(token: &str) -> Job {
        let mut j = job();
        j.start_attempt(&lease(token, 30), at(0)).unwrap();
        j
    }

    #[test]
    fn error_codes_serialise_to_the_words_the_api_always_showed() {
        for code in JobErrorCode::KNOWN {
            let word = code.as_str().to_string();
            assert_eq!(
                serde_json::to_value(&code).unwrap(),
                serde_json::json!(word)
            );
            assert_eq!(
                serde_json::from_value::<JobErrorCode>(serde_json::json!(word)).unwrap(),
                code
            );
        }
        let e: JobError = serde_json::from_str(r#"{"code":"row_width","message":"m"}"#).unwrap();
        assert_eq!(e.code, JobErrorCode::Other("row_width".into()));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":"row_width","message":"m"}"#
        );
        assert_eq!(
            JobErrorCode::from("storage_failed"),
            JobErrorCode::StorageFailed
        );
        assert!(JobErrorCode::Cancelled == "cancelled");
    }

    #[test]
    fn records_written_before_leases_still_load() {
        let mut value = serde_json::to_value(job()).unwrap();
        for field in [
            "lease",
            "lease_expires_at",
            "ticket",
            "revision",
            "cancel_requested",
        ] {
            value.as_object_mut().unwrap().remove(field);
        }
        let old: Job = serde_json::from_value(value).unwrap();
        assert_eq!(old.lease, None);
        assert_eq!(old.ticket, None);
        let mut f = serde_json::to_value(file()).unwrap();
        f.as_object_mut().unwrap().remove("blob");
        assert_eq!(serde_json::from_value::<FileFacts>(f).unwrap().blob, None);
    }

    #[test]
    fn an_attempt_starts_from_queued_or_retrying_and_holds_a_lease() {
        let j = running("a");
        assert_eq!(j.status, JobStatus::Running);
        assert_eq!(j.attempts, 1);
        assert_eq!(j.lease.as_deref(), Some("a"));
        assert_eq!(j.lease_expires_at, Some(at(30)));
        assert!(j.lease_live(at(29)) && !j.lease_live(at(30)));

        let mut r = running("a");
        r.retrying("a", error()).unwrap();
        assert_eq!(r.status, JobStatus::Retrying);
        assert_eq!(r.lease, None);
        r.start_attempt(&lease("b", 60), at(40)).unwrap();
        assert_eq!((r.status, r.attempts), (JobStatus::Running, 2));
    }

    #[test]
    fn a_running_job_is_taken_over_only_once_its_lease_has_run_out() {
        let mut j = running("a");
        assert_eq!(
            j.start_attempt(&lease("b", 60), at(29)),
            Err(TransitionError::LeaseHeld { until: at(30) })
        );
        assert_eq!(j.lease.as_deref(), Some("a"), "refused: unchanged");
        j.start_attempt(&lease("b", 60), at(31)).unwrap();
        assert_eq!((j.lease.as_deref(), j.attempts), (Some("b"), 2));
        // The first attempt's writes are now refused, whatever they are.
        let mut stale = j.clone();
        assert_eq!(
            stale.record_progress("a", 5, 5),
            Err(TransitionError::NotHolder)
        );
        assert_eq!(
            stale.renew_lease("a", at(90), at(40)),
            Err(TransitionError::NotHolder)
        );
        assert_eq!(
            stale.succeed("a", file(), at(40)),
            Err(TransitionError::NotHolder)
        );
        assert_eq!(
            stale.fail("a", error(), at(40)),
            Err(TransitionError::NotHolder)
        );
        assert_eq!(
            stale.retrying("a", error()),
            Err(TransitionError::NotHolder)
        );
        assert_eq!(
            stale.cancelled("a", at(40)),
            Err(TransitionError::NotHolder)
        );
        assert_eq!(stale.requeue("a"), Err(TransitionError::NotHolder));
        assert_eq!(stale, j, "nothing was changed by the refused writes");
    }

    #[test]
    fn final_and_cancelled_jobs_never_start() {
        for status in [
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
            JobStatus::Expired,
        ] {
            let mut j = job();
            j.status = status;
            assert_eq!(
                j.start_attempt(&lease("a", 30), at(0)),
                Err(TransitionError::NotAllowed {
                    action: "start",
                    status
                })
            );
        }
        let mut j = running("a");
        j.request_cancel(at(1)).unwrap();
        j.lease_expires_at = Some(at(0));
        assert_eq!(
            j.start_attempt(&lease("b", 60), at(5)),
            Err(TransitionError::CancelRequested)
        );
    }

    #[test]
    fn the_holder_records_progress_renews_and_succeeds() {
        let mut j = running("a");
        j.record_progress("a", 7, 70).unwrap();
        j.renew_lease("a", at(45), at(15)).unwrap();
        assert_eq!((j.progress.rows, j.lease_expires_at), (7, Some(at(45))));
        assert_eq!(
            (j.worker.as_deref(), j.heartbeat_at),
            (Some("w1"), Some(at(15)))
        );
        j.succeed("a", file(), at(50)).unwrap();
        assert_eq!(j.status, JobStatus::Succeeded);
        assert_eq!((j.progress.rows, j.progress.bytes), (2, 10));
        assert_eq!(j.finished_at, Some(at(50)));
        assert_eq!((j.lease.clone(), j.lease_expires_at), (None, None));
        assert_eq!(j.file.as_ref().unwrap().blob.as_deref(), Some("j1.a.csv"));
        assert_eq!(
            j.succeed("a", file(), at(51)),
            Err(TransitionError::NotHolder)
        );
    }

    #[test]
    fn the_holder_fails_or_requeues_the_job() {
        let mut j = running("a");
        j.fail("a", error(), at(3)).unwrap();
        assert_eq!((j.status, j.finished_at), (JobStatus::Failed, Some(at(3))));
        assert_eq!(j.error, Some(error()));

        let mut q = running("a");
        q.requeue("a").unwrap();
        assert_eq!((q.status, q.lease.clone()), (JobStatus::Queued, None));
        assert_eq!(q.attempts, 0, "a shutdown does not spend an attempt");
        assert_eq!(q.requeue("a"), Err(TransitionError::NotHolder));
    }

    #[test]
    fn a_requested_cancel_wins_over_every_other_ending_of_the_attempt() {
        let mut j = running("a");
        j.request_cancel(at(1)).unwrap();
        assert_eq!((j.status, j.cancel_requested), (JobStatus::Running, true));
        assert_eq!(
            j.request_cancel(at(2)),
            Err(TransitionError::AlreadyRequested)
        );
        assert_eq!(
            j.succeed("a", file(), at(3)),
            Err(TransitionError::CancelRequested)
        );
        assert_eq!(
            j.fail("a", error(), at(3)),
            Err(TransitionError::CancelRequested)
        );
        assert_eq!(
            j.retrying("a", error()),
            Err(TransitionError::CancelRequested)
        );
        assert_eq!(j.requeue("a"), Err(TransitionError::CancelRequested));
        j.cancelled("a", at(4)).unwrap();
        assert_eq!(j.status, JobStatus::Cancelled);
        assert_eq!(j.error.as_ref().unwrap().code, JobErrorCode::Cancelled);
    }

    #[test]
    fn a_cancel_ends_a_job_no_live_attempt_holds_at_once() {
        for status in [JobStatus::Queued, JobStatus::Retrying] {
            let mut j = job();
            j.status = status;
            j.request_cancel(at(1)).unwrap();
            assert_eq!(
                (j.status, j.finished_at),
                (JobStatus::Cancelled, Some(at(1)))
            );
        }
        let mut orphan = running("a");
        orphan.request_cancel(at(31)).unwrap();
        assert_eq!(orphan.status, JobStatus::Cancelled, "its worker is gone");
        assert_eq!(orphan.lease, None);
        let mut done = job();
        done.status = JobStatus::Succeeded;
        assert!(matches!(
            done.request_cancel(at(1)),
            Err(TransitionError::NotAllowed { .. })
        ));
    }

    #[test]
    fn giving_up_is_only_for_jobs_no_live_attempt_holds() {
        let mut j = job();
        j.give_up(error(), at(1)).unwrap();
        assert_eq!(j.status, JobStatus::Failed);
        let mut held = running("a");
        assert!(matches!(
            held.give_up(error(), at(1)),
            Err(TransitionError::LeaseHeld { .. })
        ));
        held.give_up(error(), at(31)).unwrap();
        assert_eq!(held.status, JobStatus::Failed);
        assert!(matches!(
            j.give_up(error(), at(2)),
            Err(TransitionError::NotAllowed { .. })
        ));
    }

    #[test]
    fn a_retry_resets_a_failed_or_cancelled_job_under_a_new_ticket() {
        let mut j = running("a");
        j.fail("a", error(), at(3)).unwrap();
        j.ticket = Some("t1".into());
        j.reset_for_retry("t2".into()).unwrap();
        assert_eq!(j.status, JobStatus::Queued);
        assert_eq!(
            (j.attempts, j.error.clone(), j.finished_at),
            (0, None, None)
        );
        assert_eq!(j.ticket.as_deref(), Some("t2"));
        for status in [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Retrying,
            JobStatus::Succeeded,
            JobStatus::Expired,
        ] {
            let mut k = job();
            k.status = status;
            assert!(
                matches!(
                    k.reset_for_retry("t".into()),
                    Err(TransitionError::NotAllowed { .. })
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn only_finished_jobs_expire() {
        for status in JobStatus::ALL {
            let mut j = job();
            j.status = status;
            let ok = matches!(
                status,
                JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
            );
            assert_eq!(j.expire().is_ok(), ok, "{status}");
            if ok {
                assert_eq!(j.status, JobStatus::Expired);
            }
        }
    }

    #[cfg(feature = "ssr")]
    #[test]
    fn the_delimiter_schema_lists_what_serde_writes() {
        let schema = serde_json::to_value(<Delimiter as utoipa::PartialSchema>::schema()).unwrap();
        let written: Vec<_> = Delimiter::ALL
            .iter()
            .map(|d| serde_json::to_value(d).unwrap())
            .collect();
        assert_eq!(schema["enum"], serde_json::Value::Array(written));
        assert_eq!(schema["enum"][2], "\t");
    }

    #[test]
    fn a_request_rejects_unknown_fields_and_defaults_the_optional_ones() {
        let r: ExportRequest =
            serde_json::from_str(r#"{"dataset":"orders","format":"csv"}"#).unwrap();
        assert!(r.params.is_empty() && r.columns.is_none() && !r.gzip);
        let e =
            serde_json::from_str::<ExportRequest>(r#"{"dataset":"o","format":"csv","colums":[]}"#);
        assert!(e.unwrap_err().to_string().contains("colums"));
        let e = serde_json::from_str::<ExportRequest>(r#"{"dataset":"o","format":"pdf"}"#);
        assert!(e.is_err());
    }
}

/// The first rows of an export, shown before it is requested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Preview {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
    /// The number of rows the export would have, when the source could count them quickly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_rows: Option<u64>,
}
