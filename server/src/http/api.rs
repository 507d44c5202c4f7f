//! The REST API for programs (`/api/v1`). Every handler is a thin translation to the service
//! layer; errors are always `{"error": {"code", "message"}}`.

use crate::blobs::Download;
use crate::error::{api_error_response, AppError};
use crate::http::limits::{limit_body, retry_after_secs, too_many, EMPTY_BODY_LIMIT};
use crate::service::Service;
use crate::state::AppState;
use app::backend::{Address, Identity};
use app::error::{ApiError, ErrorCode};
use app::jobs::ExportRequest;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use std::sync::Arc;

/// The routes; `max_body` bounds the bodies of preview and submit, and cancel and retry,
/// which take none, accept almost nothing.
pub fn routes(max_body: usize) -> Router<AppState> {
    let limit = |n: usize| axum::middleware::from_fn_with_state(n, limit_body);
    Router::new()
        .route("/api/v1/datasets", get(datasets))
        .route("/api/v1/preview", post(preview).layer(limit(max_body)))
        .route(
            "/api/v1/exports",
            post(submit).layer(limit(max_body)).get(list),
        )
        .route("/api/v1/exports/{id}", get(get_one))
        .route(
            "/api/v1/exports/{id}/cancel",
            post(cancel).layer(limit(EMPTY_BODY_LIMIT)),
        )
        .route(
            "/api/v1/exports/{id}/retry",
            post(retry).layer(limit(EMPTY_BODY_LIMIT)),
        )
        .route("/api/v1/exports/{id}/download", get(download))
        .route("/api/{*rest}", axum::routing::any(unknown))
        .method_not_allowed_fallback(method_not_allowed)
}

async fn unknown() -> Response {
    api_error_response(ApiError::not_found("No such API endpoint."))
}

async fn method_not_allowed() -> Response {
    let mut res = api_error_response(ApiError::new(
        ErrorCode::BadRequest,
        "This method is not allowed here.",
    ));
    *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    res
}

/// A JSON body whose rejection is an [`ApiError`] rather than axum's plain-text answer.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(
                ApiError::new(ErrorCode::PayloadTooLarge, "The request body is too large.").into(),
            ),
            // serde's message may quote the user's text: quoted back only in part.
            Err(rejection) => Err(ApiError::bad_request(crate::catalog::quote_long(
                &rejection.body_text(),
            ))
            .into()),
        }
    }
}

/// The caller's address, for the audit trail.
fn address(from: &Option<Extension<Address>>) -> Option<&str> {
    from.as_ref().map(|Extension(a)| a.0.as_str())
}

fn service(state: &AppState) -> Result<&Arc<Service>, AppError> {
    state.inner.service.as_ref().ok_or_else(|| {
        ApiError::new(ErrorCode::Unavailable, "This instance runs jobs only.").into()
    })
}

async fn datasets(State(state): State<AppState>) -> Result<Response, AppError> {
    Ok(Json(service(&state)?.datasets()).into_response())
}

/// Takes a token from the caller's bucket for an expensive request, or answers 429.
fn rate_limited(state: &AppState, user: &Identity) -> Option<Response> {
    let wait = state.inner.rate.check(&user.0).err()?;
    Some(too_many(rate_message(wait), wait))
}

/// What a caller who sent too many previews or exports is told.
pub fn rate_message(wait: std::time::Duration) -> String {
    format!(
        "Too many previews and exports in a short time; try again in {} s.",
        retry_after_secs(wait)
    )
}

async fn preview(
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
    ApiJson(request): ApiJson<ExportRequest>,
) -> Result<Response, AppError> {
    if let Some(res) = rate_limited(&state, &user) {
        return Ok(res);
    }
    Ok(Json(service(&state)?.preview(&user.0, &request).await?).into_response())
}

async fn submit(
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
    from: Option<Extension<Address>>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ExportRequest>,
) -> Result<Response, AppError> {
    if let Some(res) = rate_limited(&state, &user) {
        return Ok(res);
    }
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII."))?,
        ),
    };
    let (job, _created) = service(&state)?
        .submit(&user.0, request, key, address(&from))
        .await?;
    let location = format!("/api/v1/exports/{}", job.id);
    let mut res = (StatusCode::ACCEPTED, Json(job)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

async fn list(
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
) -> Result<Response, AppError> {
    Ok(Json(service(&state)?.list(&user.0).await?).into_response())
}

async fn get_one(
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    Ok(Json(service(&state)?.get(&user.0, &id).await?).into_response())
}

async fn cancel(
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
    from: Option<Extension<Address>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    Ok(Json(
        service(&state)?
            .cancel(&user.0, &id, address(&from))
            .await?,
    )
    .into_response())
}

async fn retry(
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
    from: Option<Extension<Address>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let job = service(&state)?.retry(&user.0, &id, address(&from)).await?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// `Content-Disposition: attachment` with an ASCII fallback name and the exact name in
/// RFC 5987 encoding (RFC 6266).
pub fn content_disposition(filename: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(filename, KEEP)
    )
}

async fn download(
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
    from: Option<Extension<Address>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let (download, meta) = service(&state)?
        .download(&user.0, &id, address(&from))
        .await?;
    let mut res = match download {
        // 302: the link is minted for this click only; nothing may cache the redirect.
        Download::Redirect(url) => match HeaderValue::from_str(&url) {
            Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
            Err(_) => return Err(anyhow::anyhow!("unusable download link").into()),
        },
        Download::Stream { body, length } => {
            let mut res = Body::from_stream(body).into_response();
            let h = res.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            if let Ok(v) = HeaderValue::from_str(&meta.content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            if let Ok(v) = HeaderValue::from_str(&content_disposition(&meta.filename)) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            res
        }
    };
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn download_names_have_an_ascii_fallback_and_an_exact_utf8_form() {
        assert_eq!(
            content_disposition("orders-2024-01-01.csv"),
            "attachment; filename=\"orders-2024-01-01.csv\"; filename*=UTF-8''orders-2024-01-01.csv"
        );
        assert_eq!(
            content_disposition("ventes \"été\".csv"),
            "attachment; filename=\"ventes___t__.csv\"; filename*=UTF-8''ventes%20%22%C3%A9t%C3%A9%22.csv"
        );
    }
}
