//! The REST API for programs (`/api/v1`). Every handler is a thin translation to the service
//! layer; errors are always `{"error": {"code", "message"}}`.

use crate::blobs::Download;
use crate::error::{api_error_response, AppError};
use crate::http::limits::{limit_body, retry_after_secs, too_many, EMPTY_BODY_LIMIT};
use crate::http::openapi as r;
use crate::service::Service;
use crate::state::AppState;
use app::backend::{Address, Identity};
use app::catalog::DatasetInfo;
use app::error::{ApiError, ErrorCode};
use app::jobs::{ExportRequest, Job, Preview};
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Extension, Json, Router};
use std::sync::Arc;

/// One REST route: the method and path it answers, and its handler with the layers it needs.
/// The method is given once, so the list of routes the OpenAPI document must cover
/// ([`route_list`]) is the router's own.
pub struct ApiRoute {
    pub method: Method,
    pub path: &'static str,
    pub(super) endpoint: MethodRouter<AppState>,
}

impl ApiRoute {
    pub(super) fn new<H, T>(method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a method axum can route");
        ApiRoute {
            method,
            path,
            endpoint: on(filter, handler),
        }
    }

    /// Reads at most `limit` bytes of body before the handler runs.
    pub(super) fn limit(mut self, limit: usize) -> Self {
        self.endpoint = self
            .endpoint
            .layer(axum::middleware::from_fn_with_state(limit, limit_body));
        self
    }
}

/// Every REST route; `max_body` bounds the bodies of preview and submit, and cancel and retry,
/// which take none, accept almost nothing. A route added here must also be documented: see
/// `http/openapi.rs`, whose test compares this list with the document.
fn table(max_body: usize) -> Vec<ApiRoute> {
    use Method as M;
    vec![
        ApiRoute::new(M::GET, "/api/v1/datasets", datasets),
        ApiRoute::new(M::POST, "/api/v1/preview", preview).limit(max_body),
        ApiRoute::new(M::POST, "/api/v1/exports", submit).limit(max_body),
        ApiRoute::new(M::GET, "/api/v1/exports", list),
        ApiRoute::new(M::GET, "/api/v1/exports/{id}", get_one),
        ApiRoute::new(M::POST, "/api/v1/exports/{id}/cancel", cancel).limit(EMPTY_BODY_LIMIT),
        ApiRoute::new(M::POST, "/api/v1/exports/{id}/retry", retry).limit(EMPTY_BODY_LIMIT),
        ApiRoute::new(M::GET, "/api/v1/exports/{id}/download", download),
    ]
}

/// The (method, path) of every REST route.
pub fn route_list() -> Vec<(Method, &'static str)> {
    table(0).into_iter().map(|r| (r.method, r.path)).collect()
}

/// The REST routes, an error-shaped 404 for any other `/api/` path and an error-shaped 405
/// for a method a path does not answer.
pub fn routes(max_body: usize) -> Router<AppState> {
    table(max_body)
        .into_iter()
        // Routes on one path merge into one method router.
        .fold(Router::new(), |router, r| router.route(r.path, r.endpoint))
        .route("/api/{*rest}", axum::routing::any(unknown))
        .method_not_allowed_fallback(method_not_allowed)
}

async fn unknown() -> Response {
    api_error_response(ApiError::not_found("No such API endpoint."))
}

/// The answer to a method a path does not answer; axum adds the `Allow` header.
pub async fn method_not_allowed() -> Response {
    api_error_response(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "This method is not allowed here; the Allow header lists those that are.",
    ))
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
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "The request body must be JSON, sent with `Content-Type: application/json`.",
            )
            .into()),
            // serde's message may quote the user's text: quoted back only in part.
            Err(rejection) => Err(rejected(&rejection.body_text())),
        }
    }
}

/// The caller's address, for the audit trail.
pub(super) fn address(from: &Option<Extension<Address>>) -> Option<&str> {
    from.as_ref().map(|Extension(a)| a.0.as_str())
}

/// A path parameter whose rejection (e.g. percent-encoded bytes that are not UTF-8) is an
/// [`ApiError`] rather than axum's plain-text answer.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => Err(rejected(&rejection.body_text())),
        }
    }
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
            Err(rejection) => Err(rejected(&rejection.body_text())),
        }
    }
}

/// axum's words for a request it could not read, as a 400: they may quote the caller's text,
/// so only in part.
fn rejected(text: &str) -> AppError {
    ApiError::bad_request(crate::catalog::quote_long(text)).into()
}

pub(super) fn service(state: &AppState) -> Result<&Arc<Service>, AppError> {
    state.inner.service.as_ref().ok_or_else(|| {
        ApiError::new(ErrorCode::Unavailable, "This instance runs jobs only.").into()
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/datasets",
    tag = "datasets",
    summary = "The datasets this server exports",
    responses(
        (status = 200, description = "Each dataset's columns, parameters and formats.", body = Vec<DatasetInfo>),
        (status = 401, response = r::Unauthorized),
        (status = 413, response = r::PayloadTooLarge),
    )
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/preview",
    tag = "datasets",
    summary = "The first rows an export would have, and its estimated row count",
    request_body = ExportRequest,
    responses(
        (status = 200, description = "The first rows, shaped as the chosen format writes them.", body = Preview),
        (status = 400, response = r::BadRequest),
        (status = 401, response = r::Unauthorized),
        (status = 413, response = r::PayloadTooLarge),
        (status = 415, response = r::UnsupportedMediaType),
        (status = 429, response = r::TooManyRequests),
        (status = 503, response = r::Unavailable),
    )
)]
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

/// The headers submit reads, for the OpenAPI document (the handler reads them from the
/// `HeaderMap`, to answer a bad value in the API's error shape).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct SubmitHeaders {
    /// Makes a retried submit safe: the same key from the same user returns the first job
    /// (202 again) instead of starting another.
    #[param(
        rename = "Idempotency-Key",
        required = false,
        min_length = 1,
        max_length = 200,
        pattern = "^[!-~]+$"
    )]
    idempotency_key: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/exports",
    tag = "exports",
    summary = "Submit an export job",
    request_body = ExportRequest,
    params(SubmitHeaders),
    responses(
        (status = 202, description = "The job, queued (or the job an earlier submit with the same \
            Idempotency-Key created).", body = Job,
            headers(("Location" = String, description = "The job's URL: `/api/v1/exports/{id}`."))),
        (status = 400, response = r::BadRequest),
        (status = 401, response = r::Unauthorized),
        (status = 413, response = r::PayloadTooLarge),
        (status = 415, response = r::UnsupportedMediaType),
        (status = 429, response = r::TooManyRequests),
        (status = 503, response = r::Unavailable),
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/exports",
    tag = "exports",
    summary = "The caller's export jobs, newest first",
    responses(
        (status = 200, description = "The caller's most recent jobs.", body = Vec<Job>),
        (status = 401, response = r::Unauthorized),
        (status = 413, response = r::PayloadTooLarge),
        (status = 503, response = r::Unavailable),
    )
)]
async fn list(
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
) -> Result<Response, AppError> {
    Ok(Json(service(&state)?.list(&user.0).await?).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/exports/{id}",
    tag = "exports",
    summary = "One of the caller's export jobs",
    params(("id" = String, Path, description = "The export's id, as returned by submit.")),
    responses(
        (status = 200, description = "The job.", body = Job),
        (status = 400, response = r::BadRequest),
        (status = 401, response = r::Unauthorized),
        (status = 404, response = r::NotFound),
        (status = 413, response = r::PayloadTooLarge),
        (status = 503, response = r::Unavailable),
    )
)]
async fn get_one(
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, AppError> {
    Ok(Json(service(&state)?.get(&user.0, &id).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/exports/{id}/cancel",
    tag = "exports",
    summary = "Cancel an export",
    description = "A job that is not running is cancelled at once; a running one is marked \
        (`cancel_requested`) and its worker stops it soon after. Asking again is not an error.",
    params(("id" = String, Path, description = "The export's id, as returned by submit.")),
    responses(
        (status = 200, description = "The job after the request.", body = Job),
        (status = 400, response = r::BadRequest),
        (status = 401, response = r::Unauthorized),
        (status = 404, response = r::NotFound),
        (status = 409, response = r::Conflict),
        (status = 413, response = r::PayloadTooLarge),
        (status = 429, response = r::TooManyRequests),
        (status = 503, response = r::Unavailable),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
    from: Option<Extension<Address>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, AppError> {
    Ok(Json(
        service(&state)?
            .cancel(&user.0, &id, address(&from))
            .await?,
    )
    .into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/exports/{id}/retry",
    tag = "exports",
    summary = "Run a failed or cancelled export again, as the same job",
    params(("id" = String, Path, description = "The export's id, as returned by submit.")),
    responses(
        (status = 202, description = "The job, queued again.", body = Job),
        (status = 400, response = r::BadRequest),
        (status = 401, response = r::Unauthorized),
        (status = 404, response = r::NotFound),
        (status = 409, response = r::Conflict),
        (status = 413, response = r::PayloadTooLarge),
        (status = 429, response = r::TooManyRequests),
        (status = 503, response = r::Unavailable),
    )
)]
async fn retry(
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
    from: Option<Extension<Address>>,
    ApiPath(id): ApiPath<String>,
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

#[utoipa::path(
    get,
    path = "/api/v1/exports/{id}/download",
    tag = "exports",
    summary = "The file of a succeeded export",
    description = "Embedded storage streams the file (200); Azure storage redirects (302) to a \
        link minted for this request only. Neither may be cached.",
    params(("id" = String, Path, description = "The export's id, as returned by submit.")),
    responses(
        (status = 200, description = "The file, with `Content-Disposition: attachment`.",
            headers(
                ("Content-Disposition" = String, description = "`attachment` with the file's name."),
                ("Cache-Control" = String, description = "`private, no-store`."),
            ),
            content(
                (String = "text/csv"),
                (String = "application/x-ndjson"),
                (Vec<serde_json::Map<String, serde_json::Value>> = "application/json"),
                ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
                ("application/gzip"),
            )),
        (status = 302, description = "Go to the file at a short-lived link.",
            headers(
                ("Location" = String, description = "The link, valid for a short time."),
                ("Cache-Control" = String, description = "`private, no-store`."),
            )),
        (status = 400, response = r::BadRequest),
        (status = 401, response = r::Unauthorized),
        (status = 404, response = r::NotFound),
        (status = 409, response = r::Conflict),
        (status = 413, response = r::PayloadTooLarge),
        (status = 503, response = r::Unavailable),
    )
)]
async fn download(
    State(state): State<AppState>,
    Extension(user): Extension<Identity>,
    from: Option<Extension<Address>>,
    ApiPath(id): ApiPath<String>,
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
