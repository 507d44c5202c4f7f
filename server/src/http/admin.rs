//! The admin API (`/api/v1/admin/...`). Only callers the identity middleware marked as admins
//! get past [`only_admins`]; everyone else gets the same 404 as an unknown route, so the
//! routes cannot even be discovered. Every handler is a thin translation to `crate::admin`.

use crate::audit::AuditFilter;
use crate::error::{api_error_response, AppError};
use crate::http::api::{address, service, ApiPath, ApiQuery, ApiRoute};
use crate::http::limits::EMPTY_BODY_LIMIT;
use crate::http::openapi as r;
use crate::jobs::JobFilter;
use crate::state::AppState;
use app::admin::{AuditAction, AuditPage, JobsPage, QueueOverview, Stats, DEFAULT_PAGE, MAX_PAGE};
use app::backend::{Address, Admin, Identity};
use app::error::ApiError;
use app::jobs::Job;
use app::jobs::JobStatus;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Every admin route; like the user routes (`api::table`), each must be documented in the
/// OpenAPI document, whose test compares this list with it.
fn table() -> Vec<ApiRoute> {
    use axum::http::Method as M;
    vec![
        ApiRoute::new(M::GET, "/api/v1/admin/jobs", jobs),
        ApiRoute::new(M::GET, "/api/v1/admin/queue", queue),
        ApiRoute::new(M::POST, "/api/v1/admin/jobs/{id}/cancel", cancel).limit(EMPTY_BODY_LIMIT),
        ApiRoute::new(M::POST, "/api/v1/admin/jobs/{id}/redrive", redrive).limit(EMPTY_BODY_LIMIT),
        ApiRoute::new(M::GET, "/api/v1/admin/stats", stats),
        ApiRoute::new(M::GET, "/api/v1/admin/audit", audit),
    ]
}

/// The (method, path) of every admin route.
pub fn route_list() -> Vec<(axum::http::Method, &'static str)> {
    table().into_iter().map(|r| (r.method, r.path)).collect()
}

pub fn routes() -> Router<AppState> {
    table()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.endpoint))
        .method_not_allowed_fallback(super::api::method_not_allowed)
        .layer(axum::middleware::from_fn(only_admins))
}

/// 404, exactly as for a route that does not exist, unless the caller is an admin.
async fn only_admins(req: Request, next: Next) -> Response {
    if req.extensions().get::<Admin>().is_none() {
        return api_error_response(ApiError::not_found("No such API endpoint."));
    }
    next.run(req).await
}

fn limit(v: Option<usize>) -> Result<usize, ApiError> {
    match v {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(format!(
            "`limit` must be from 1 to {MAX_PAGE}."
        ))),
    }
}

/// A free-text filter: a name as the server stores it, never longer than any it stores.
fn text(name: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.is_empty() || s.len() > 256 => Err(ApiError::bad_request(format!(
            "`{name}` must be 1 to 256 characters."
        ))),
        other => Ok(other),
    }
}

/// A cursor is an id this server made: 32 lower-case hex digits.
fn cursor(v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(c) if c.len() != 32 || !c.bytes().all(|b| b.is_ascii_hexdigit()) => Err(
            ApiError::bad_request("`cursor` is not a cursor this server gave."),
        ),
        other => Ok(other),
    }
}

fn time(name: &str, v: Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "`{name}` must be an RFC 3339 time such as 2026-12-01T00:00:00Z."
                ))
            })
    })
    .transpose()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// Only jobs in this status: queued, running, retrying, succeeded, failed, cancelled or expired.
    status: Option<String>,
    /// Only this user's jobs.
    owner: Option<String>,
    /// Only jobs of this dataset.
    dataset: Option<String>,
    /// Jobs per page, 1 to 200 (50 when absent).
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/jobs",
    operation_id = "admin_jobs",
    tag = "admin",
    summary = "Anyone's jobs, newest first, one page",
    description = "Admins only (`EXPORTAL_ADMINS`); everyone else gets 404, as for a route that does not exist.",
    params(JobsQuery),
    responses(
        (status = 200, description = "One page of jobs.", body = JobsPage),
        (status = 400, response = r::BadRequest),
        (status = 401, response = r::Unauthorized),
        (status = 404, response = r::NotFound),
        (status = 503, response = r::Unavailable),
    )
)]
async fn jobs(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<JobsQuery>,
) -> Result<Response, AppError> {
    let status = q
        .status
        .map(|s| {
            JobStatus::parse(&s).ok_or_else(|| {
                let all: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::bad_request(format!("`status` must be one of: {}.", all.join(", ")))
            })
        })
        .transpose()?;
    let filter = JobFilter {
        status,
        owner: text("owner", q.owner)?,
        dataset: text("dataset", q.dataset)?,
        cursor: cursor(q.cursor)?,
        ..Default::default()
    };
    let page = service(&state)?.admin_jobs(filter, limit(q.limit)?).await?;
    Ok(Json(page).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/queue",
    operation_id = "admin_queue",
    tag = "admin",
    summary = "The queue: depth, poison depth, running jobs, oldest wait",
    description = "Admins only; everyone else gets 404.",
    responses(
        (status = 200, description = "The queue now.", body = QueueOverview),
        (status = 401, response = r::Unauthorized),
        (status = 404, response = r::NotFound),
        (status = 503, response = r::Unavailable),
    )
)]
async fn queue(State(state): State<AppState>) -> Result<Response, AppError> {
    Ok(Json(service(&state)?.queue_overview().await?).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/jobs/{id}/cancel",
    operation_id = "admin_cancel",
    tag = "admin",
    summary = "Cancel anyone's job",
    description = "Admins only; everyone else gets 404. Recorded in the audit trail.",
    params(("id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job after the request.", body = Job),
        (status = 400, response = r::BadRequest),
        (status = 401, response = r::Unauthorized),
        (status = 404, response = r::NotFound),
        (status = 409, response = r::Conflict),
        (status = 413, response = r::PayloadTooLarge),
        (status = 503, response = r::Unavailable),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    Extension(admin): Extension<Identity>,
    from: Option<Extension<Address>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, AppError> {
    let job = service(&state)?
        .admin_cancel(&admin.0, &id, address(&from))
        .await?;
    Ok(Json(job).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/jobs/{id}/redrive",
    operation_id = "admin_redrive",
    tag = "admin",
    summary = "Send a failed or cancelled job back to the queue",
    description = "Admins only; everyone else gets 404. Attempts start again from zero, outside the \
        owner's limit of active jobs; the job's messages in the poison queue are removed. Recorded \
        in the audit trail.",
    params(("id" = String, Path, description = "The job's id.")),
    responses(
        (status = 202, description = "The job, queued again.", body = Job),
        (status = 400, response = r::BadRequest),
        (status = 401, response = r::Unauthorized),
        (status = 404, response = r::NotFound),
        (status = 409, response = r::Conflict),
        (status = 413, response = r::PayloadTooLarge),
        (status = 503, response = r::Unavailable),
    )
)]
async fn redrive(
    State(state): State<AppState>,
    Extension(admin): Extension<Identity>,
    from: Option<Extension<Address>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, AppError> {
    let job = service(&state)?
        .redrive(&admin.0, &id, address(&from))
        .await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(job)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Jobs created from this time on (RFC 3339); 24 hours ago when absent.
    since: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/stats",
    operation_id = "admin_stats",
    tag = "admin",
    summary = "Per dataset: exports, rows, bytes, failures and p50/p95 duration",
    description = "Admins only; everyone else gets 404.",
    params(StatsQuery),
    responses(
        (status = 200, description = "The figures since `since`.", body = Stats),
        (status = 400, response = r::BadRequest),
        (status = 401, response = r::Unauthorized),
        (status = 404, response = r::NotFound),
        (status = 503, response = r::Unavailable),
    )
)]
async fn stats(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Response, AppError> {
    let since =
        time("since", q.since)?.unwrap_or_else(|| Utc::now() - chrono::TimeDelta::hours(24));
    Ok(Json(service(&state)?.stats(since).await?).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only what this identity did.
    actor: Option<String>,
    /// Only this action: submit, cancel, retry, download, admin_cancel or admin_redrive.
    action: Option<String>,
    /// Only entries about this job.
    job: Option<String>,
    /// Only entries about this dataset.
    dataset: Option<String>,
    /// Only entries from this time on (RFC 3339).
    since: Option<String>,
    /// Entries per page, 1 to 200 (50 when absent).
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/audit",
    operation_id = "admin_audit",
    tag = "admin",
    summary = "The audit trail, newest first, one page",
    description = "Admins only; everyone else gets 404.",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of entries.", body = AuditPage),
        (status = 400, response = r::BadRequest),
        (status = 401, response = r::Unauthorized),
        (status = 404, response = r::NotFound),
        (status = 503, response = r::Unavailable),
    )
)]
async fn audit(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, AppError> {
    let action = q
        .action
        .map(|a| {
            AuditAction::parse(&a).ok_or_else(|| {
                let all: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
                ApiError::bad_request(format!("`action` must be one of: {}.", all.join(", ")))
            })
        })
        .transpose()?;
    let filter = AuditFilter {
        actor: text("actor", q.actor)?,
        action,
        job: text("job", q.job)?,
        dataset: text("dataset", q.dataset)?,
        since: time("since", q.since)?,
        before: cursor(q.cursor)?,
    };
    let limit = limit(q.limit)?;
    Ok(Json(service(&state)?.audit_page(filter, limit).await?).into_response())
}
