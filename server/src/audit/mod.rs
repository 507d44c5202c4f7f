//! The audit trail: an append-only record of who submitted, cancelled, retried and downloaded
//! which export, and of every admin action, kept in the job store's storage for its own
//! retention (`EXPORTAL_AUDIT_RETENTION`).
//!
//! Policy: a download is recorded before its link or stream is handed out, and is refused
//! (503) when it cannot be recorded, so no file leaves unrecorded. The other actions have
//! already happened when they are recorded; a failed record is logged as an error and the
//! action stands (an unavailable audit store must not make cancelling impossible).

pub mod azure;
pub mod local;

use app::admin::{AuditAction, AuditEntry};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
#[error("audit trail unavailable: {0}")]
pub struct AuditError(pub String);

/// Which entries to list; every field narrows the list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<AuditAction>,
    pub job: Option<String>,
    pub dataset: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Only entries older than this one (the previous page's last id).
    pub before: Option<String>,
}

impl AuditFilter {
    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.actor.as_ref().is_none_or(|a| *a == e.actor)
            && self.action.is_none_or(|a| a == e.action)
            && self.job.as_ref().is_none_or(|j| *j == e.job)
            && self.dataset.as_ref().is_none_or(|d| *d == e.dataset)
            && self.since.is_none_or(|s| e.at >= s)
            && self.before.as_ref().is_none_or(|b| e.id < *b)
    }
}

#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError>;
    /// Entries matching `filter`, newest first, at most `limit`.
    async fn list(&self, filter: &AuditFilter, limit: usize)
        -> Result<Vec<AuditEntry>, AuditError>;
    /// Removes entries older than `before`; returns how many went (when the storage says).
    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, AuditError>;
}

/// A new entry id: time-ordered (UUIDv7), so ids sort as the entries were made.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
