//! Error policy for HTTP handlers.
//!
//! Handlers return [`AppError`]. A client-facing error ([`ApiError`]) is sent as the
//! documented `{"error": {...}}` body with its status; anything else is logged with its cause
//! here, once, and the client gets a generic 500 that reveals nothing about the internals.

use app::error::{ApiError, ErrorBody};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let error = match self {
            AppError::Api(e) => e,
            AppError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                ApiError::internal()
            }
        };
        api_error_response(error)
    }
}

/// The HTTP response for an error the caller may see.
pub fn api_error_response(error: ApiError) -> Response {
    let status =
        StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(ErrorBody { error })).into_response()
}
