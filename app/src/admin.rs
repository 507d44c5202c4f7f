//! What operators see: the types of the admin API and of the admin page, shared by both, and
//! the page's admin server functions.
//!
//! Only callers the server counts as admins (`EXPORTAL_ADMINS`) reach any of it; for everyone
//! else the admin routes answer 404, as if they did not exist.

use crate::jobs::{ExportFormat, Job, JobStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Jobs per admin listing page, at most.
pub const MAX_PAGE: usize = 200;
/// Jobs per admin listing page when the caller does not say.
pub const DEFAULT_PAGE: usize = 50;

/// One page of any user's jobs, newest first.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobsPage {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A running job as operators see it: who runs it and whether it still proves it is alive.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningJob {
    pub job: Job,
    /// The worker instance running it (`EXPORTAL_INSTANCE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Its last heartbeat (attempt start or lease renewal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<DateTime<Utc>>,
}

/// The state of the queue.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueOverview {
    /// Messages in the job queue (visible or held by a worker).
    pub depth: u64,
    /// Whether `depth` and `poison_depth` are the storage's approximate counts (Azure).
    pub approximate: bool,
    /// Messages in the poison queue.
    pub poison_depth: u64,
    pub running: Vec<RunningJob>,
    /// How long the oldest queued job has waited, in seconds; absent when none waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_queued_secs: Option<u64>,
}

/// Per dataset, what was exported since a point in time.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetStats {
    pub dataset: String,
    /// Jobs created in the period.
    pub exports: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Rows and bytes of the files written.
    pub rows: u64,
    pub bytes: u64,
    /// Median and 95th percentile of the successful exports' duration (start to finish), in
    /// seconds; absent without any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_secs: Option<f64>,
}

/// `GET /api/v1/admin/stats`.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub since: DateTime<Utc>,
    pub datasets: Vec<DatasetStats>,
    /// Jobs looked at.
    pub jobs: u64,
    /// Set when there were more jobs in the period than one report reads: the figures cover
    /// the newest `jobs` of them.
    pub truncated: bool,
}

/// What an audit entry records.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Submit,
    Cancel,
    Retry,
    Download,
    AdminCancel,
    AdminRedrive,
}

impl AuditAction {
    pub const ALL: [AuditAction; 6] = [
        AuditAction::Submit,
        AuditAction::Cancel,
        AuditAction::Retry,
        AuditAction::Download,
        AuditAction::AdminCancel,
        AuditAction::AdminRedrive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Submit => "submit",
            AuditAction::Cancel => "cancel",
            AuditAction::Retry => "retry",
            AuditAction::Download => "download",
            AuditAction::AdminCancel => "admin_cancel",
            AuditAction::AdminRedrive => "admin_redrive",
        }
    }

    pub fn parse(s: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One entry of the audit trail: who did what to which job, when, from where.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Time-ordered: a later entry has a greater id.
    pub id: String,
    pub at: DateTime<Utc>,
    /// The identity that acted (the admin, for admin actions).
    pub actor: String,
    pub action: AuditAction,
    pub job: String,
    /// The owner of the job (differs from `actor` for admin actions).
    pub owner: String,
    pub dataset: String,
    pub format: ExportFormat,
    /// The export's parameters, columns and options as the job holds them.
    #[cfg_attr(feature = "ssr", schema(value_type = Object))]
    pub parameters: serde_json::Value,
    /// The caller's address, as the server saw it (the proxy's, unless it is trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// One page of the audit trail, newest first.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Everything the admin page shows, in one message: sent on connect and as things change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    pub queue: QueueOverview,
    /// The latest failed jobs, newest first, with their reasons.
    pub failures: Vec<Job>,
    /// The last 24 hours, per dataset.
    pub stats: Stats,
}

/// The statuses an admin may filter on, in the order the page offers them.
pub const FILTER_STATUSES: [JobStatus; 7] = JobStatus::ALL;

#[cfg(feature = "ssr")]
mod ssr {
    use super::Overview;
    use crate::error::ApiError;
    use futures::future::BoxFuture;

    /// What the server offers the admin page; every method is for admins only (the server
    /// checks) and names the admin who acts.
    pub trait AdminBackend: Send + Sync + 'static {
        fn overview(&self) -> BoxFuture<'static, Result<Overview, ApiError>>;
        fn cancel(
            &self,
            admin: String,
            address: Option<String>,
            id: String,
        ) -> BoxFuture<'static, Result<crate::jobs::Job, ApiError>>;
        fn redrive(
            &self,
            admin: String,
            address: Option<String>,
            id: String,
        ) -> BoxFuture<'static, Result<crate::jobs::Job, ApiError>>;
    }

    pub type SharedAdminBackend = std::sync::Arc<dyn AdminBackend>;

    /// The calling admin and their address, or "not found" for everyone else: the admin
    /// page's server functions do not exist for them either.
    pub fn current_admin() -> Result<(String, Option<String>, SharedAdminBackend), ApiError> {
        use leptos::prelude::use_context;
        let parts = use_context::<http::request::Parts>();
        let admin = parts
            .as_ref()
            .filter(|p| p.extensions.get::<crate::backend::Admin>().is_some())
            .and_then(|p| p.extensions.get::<crate::backend::Identity>())
            .map(|i| i.0.clone())
            .ok_or_else(|| ApiError::not_found("No such page."))?;
        let address = parts
            .as_ref()
            .and_then(|p| p.extensions.get::<crate::backend::Address>())
            .map(|a| a.0.clone());
        let backend = use_context::<SharedAdminBackend>().ok_or_else(ApiError::internal)?;
        Ok((admin, address, backend))
    }
}

#[cfg(feature = "ssr")]
pub use ssr::*;

use crate::error::ApiError;
use leptos::prelude::*;

#[server(prefix = "/api/fn", endpoint = "admin_overview", input = leptos::server_fn::codec::Json)]
pub async fn admin_overview() -> Result<Overview, ApiError> {
    let (_, _, backend) = current_admin()?;
    backend.overview().await
}

#[server(prefix = "/api/fn", endpoint = "admin_cancel", input = leptos::server_fn::codec::Json)]
pub async fn admin_cancel(id: String) -> Result<Job, ApiError> {
    let (admin, address, backend) = current_admin()?;
    backend.cancel(admin, address, id).await
}

#[server(prefix = "/api/fn", endpoint = "admin_redrive", input = leptos::server_fn::codec::Json)]
pub async fn admin_redrive(id: String) -> Result<Job, ApiError> {
    let (admin, address, backend) = current_admin()?;
    backend.redrive(admin, address, id).await
}
