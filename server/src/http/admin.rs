//! The admin API (`/api/v1/admin/...`). Only callers the identity middleware marked as admins
//! get past [`only_admins`]; everyone else gets the same 404 as an unknown route, so the
//! routes cannot even be discovered. Every handler is a thin translation to `crate::admin`.

use crate::audit::AuditFilter;
use crate::error::{api_error_response, AppError};
use crate::http::limits::{limit_body, EMPTY_BODY_LIMIT};
use crate::jobs::JobFilter;
use crate::service::Service;
use crate::state::AppState;
use app::admin::{AuditAction, DEFAULT_PAGE, MAX_PAGE};
use app::backend::{Address, Admin, Identity};
use app::error::ApiError;
use app::jobs::JobStatus;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::sync::Arc;

pub fn routes() -> Router<AppState> {
    let empty = || axum::middleware::from_fn_with_state(EMPTY_BODY_LIMIT, limit_body);
    Router::new()
        .route("/api/v1/admin/jobs", get(jobs))
        .route("/api/v1/admin/queue", get(queue))
        .route(
            "/api/v1/admin/jobs/{id}/cancel",
            post(cancel).layer(empty()),
        )
        .route(
            "/api/v1/admin/jobs/{id}/redrive",
            post(redrive).layer(empty()),
        )
        .route("/api/v1/admin/stats", get(stats))
        .route("/api/v1/admin/audit", get(audit))
        .layer(axum::middleware::from_fn(only_admins))
}

/// 404, exactly as for a route that does not exist, unless the caller is an admin.
async fn only_admins(req: Request, next: Next) -> Response {
    if req.extensions().get::<Admin>().is_none() {
        return api_error_response(ApiError::not_found("No such API endpoint."));
    }
    next.run(req).await
}

/// Query parameters whose rejection is an [`ApiError`] rather than axum's plain text.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(ApiError::bad_request(crate::catalog::quote_long(
                &rejection.body_text(),
            ))
            .into()),
        }
    }
}

fn service(state: &AppState) -> Result<&Arc<Service>, AppError> {
    state.inner.service.as_ref().ok_or_else(|| {
        ApiError::new(
            app::error::ErrorCode::Unavailable,
            "This instance runs jobs only.",
        )
        .into()
    })
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    status: Option<String>,
    owner: Option<String>,
    dataset: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

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

async fn queue(State(state): State<AppState>) -> Result<Response, AppError> {
    Ok(Json(service(&state)?.queue_overview().await?).into_response())
}

fn address(a: Option<Extension<Address>>) -> Option<String> {
    a.map(|Extension(a)| a.0)
}

async fn cancel(
    State(state): State<AppState>,
    Extension(admin): Extension<Identity>,
    from: Option<Extension<Address>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let job = service(&state)?
        .admin_cancel(&admin.0, &id, address(from).as_deref())
        .await?;
    Ok(Json(job).into_response())
}

async fn redrive(
    State(state): State<AppState>,
    Extension(admin): Extension<Identity>,
    from: Option<Extension<Address>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let job = service(&state)?
        .redrive(&admin.0, &id, address(from).as_deref())
        .await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(job)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    since: Option<String>,
}

async fn stats(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Response, AppError> {
    let since =
        time("since", q.since)?.unwrap_or_else(|| Utc::now() - chrono::TimeDelta::hours(24));
    Ok(Json(service(&state)?.stats(since).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    job: Option<String>,
    dataset: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

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
