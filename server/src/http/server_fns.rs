//! The status of the page's server functions' errors. server_fn answers every error with 500 and
//! the error's body; the body is an [`ApiError`] whose code says what really happened. This gives
//! such an answer the status the REST API gives the same error, so a request the server refuses
//! is a 4xx on `/api/fn/` too. The page's client reads any 4xx or 5xx as an error body, so it
//! sees no difference.

use app::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// Where the server functions are mounted (`#[server(prefix = ...)]` in the app crate).
const PREFIX: &str = "/api/fn/";

/// An error body is a code and a sentence; anything longer is not one of ours.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub async fn error_status(req: Request, next: Next) -> Response {
    let is_server_fn = req.uri().path().starts_with(PREFIX);
    let res = next.run(req).await;
    if !is_server_fn || res.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        // Not an error body of ours (or it could not be read): a plain 500, as before.
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    };
    if let Ok(error) = serde_json::from_slice::<ApiError>(&bytes) {
        if let Ok(status) = StatusCode::from_u16(error.code.http_status()) {
            parts.status = status;
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}
