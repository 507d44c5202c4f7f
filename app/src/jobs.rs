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
}

/// How far a job has come.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub rows: u64,
    pub bytes: u64,
    /// The row count estimated before the export started, when the source could tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_rows: Option<u64>,
}

/// Why a job failed (or was cancelled), in words for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

/// The finished file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFacts {
    /// The download name offered to the browser (never used as a storage path).
    pub name: String,
    pub bytes: u64,
    pub rows: u64,
    pub sha256: String,
    pub content_type: String,
    pub expires_at: DateTime<Utc>,
}

/// One export job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub cancel_requested: bool,
    /// Bumped by every stored change: the compare-and-set token of the job store.
    #[serde(default)]
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
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            attempts: 0,
            progress: Progress::default(),
            error: None,
            file: None,
            cancel_requested: false,
            revision: 0,
        }
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
pub struct Preview {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
    /// The number of rows the export would have, when the source could count them quickly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_rows: Option<u64>,
}
