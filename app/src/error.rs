//! The one error shape of every Exportal API.
//!
//! Programs see it over HTTP as `{"error": {"code": "...", "message": "..."}}`; the page sees
//! the same value as the typed error of a server function. Messages are written for the person
//! who made the request: they say what was wrong and never carry internal details (those go to
//! the server's log instead).

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

/// What kind of failure an [`ApiError`] is; decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    /// The caller is known but may not do this (e.g. a page of a foreign origin).
    Forbidden,
    NotFound,
    /// The path exists but does not answer this method.
    MethodNotAllowed,
    Conflict,
    /// The request body is larger than the server accepts.
    PayloadTooLarge,
    /// The request body is not of the media type the endpoint reads (JSON).
    UnsupportedMediaType,
    TooManyRequests,
    Unavailable,
    Internal,
    /// The browser could not reach the server or understand its answer.
    Transport,
}

impl ErrorCode {
    /// The HTTP status a response with this error carries.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal | ErrorCode::Transport => 500,
        }
    }
}

/// An error fit to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// A failure whose cause must stay in the server log.
    pub fn internal() -> Self {
        Self::new(
            ErrorCode::Internal,
            "Something went wrong on the server; the problem has been logged.",
        )
    }
}

/// The HTTP body: the error wrapped in an `error` object, so that a body can grow other
/// top-level fields without breaking clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ApiError,
}

impl FromServerFnError for ApiError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Args(m) | ServerFnErrorErr::MissingArg(m) => {
                ApiError::bad_request(format!("The request was not understood: {m}"))
            }
            // On the server, the only thing decoded is the caller's request.
            ServerFnErrorErr::Deserialization(m) if cfg!(feature = "ssr") => {
                ApiError::bad_request(format!("The request was not understood: {m}"))
            }
            ServerFnErrorErr::Request(_) => ApiError::new(
                ErrorCode::Transport,
                "The server could not be reached. Check your connection and try again.",
            ),
            ServerFnErrorErr::Deserialization(_) | ServerFnErrorErr::Response(_) => ApiError::new(
                ErrorCode::Transport,
                "The server's answer could not be read. Reload the page and try again.",
            ),
            _ => ApiError::internal(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_the_documented_error_body() {
        let body = ErrorBody {
            error: ApiError::not_found("No export with this id."),
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"error": {"code": "not_found", "message": "No export with this id."}})
        );
    }

    #[test]
    fn server_fn_transport_failures_become_readable_errors() {
        let e = ApiError::from_server_fn_error(ServerFnErrorErr::Request("refused".into()));
        assert_eq!(e.code, ErrorCode::Transport);
        assert!(
            !e.message.contains("refused"),
            "internal detail leaked: {e}"
        );
        let e = ApiError::from_server_fn_error(ServerFnErrorErr::Args("bad".into()));
        assert_eq!(e.code.http_status(), 400);
    }
}
