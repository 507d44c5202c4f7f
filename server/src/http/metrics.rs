//! `GET /metrics` for Prometheus, and the middleware that counts every HTTP request.
//!
//! The scrape needs no user identity (a scraper is not a user, and a worker instance has no
//! users at all); with `EXPORTAL_METRICS_TOKEN` set it needs that token as a bearer token
//! instead, since the series tell about traffic and datasets.

use crate::config::Secret;
use crate::error::api_error_response;
use crate::metrics::{Metrics, UNMATCHED_ROUTE};
use crate::state::AppState;
use app::error::{ApiError, ErrorCode};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;

/// Whether the request carries `Authorization: Bearer <token>` (once) with the configured token.
pub fn bearer_ok(headers: &HeaderMap, token: &Secret) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(given) = value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|_| &value[7..])
    else {
        return false;
    };
    // Hashing first gives both sides one length, so the comparison below takes the same time
    // whatever the token sent and wherever it differs.
    let given: [u8; 32] = Sha256::digest(given).into();
    let expected: [u8; 32] = Sha256::digest(token.0.as_bytes()).into();
    given
        .iter()
        .zip(expected.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The Prometheus scrape.
pub async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.inner.settings.metrics_token {
        if !bearer_ok(&headers, token) {
            let mut res = api_error_response(ApiError::new(
                ErrorCode::Unauthorized,
                "The metrics need the bearer token of EXPORTAL_METRICS_TOKEN.",
            ));
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return res;
        }
    }
    let metrics = &state.inner.metrics;
    metrics.set_ws_connections(state.inner.sockets.total());
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        metrics.render().await,
    )
        .into_response()
}

/// Middleware: counts the request under its route template (the raw path could be anything a
/// client makes up) with its method, status and time to answer.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let method = req.method().clone();
    let res = next.run(req).await;
    metrics.http_request(
        route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        &method,
        res.status().as_u16(),
        started.elapsed(),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_exact_bearer_token_sent_once_is_accepted() {
        let token = Secret("metrics-token-0123456789".into());
        assert!(bearer_ok(
            &headers(&["Bearer metrics-token-0123456789"]),
            &token
        ));
        assert!(
            bearer_ok(&headers(&["bearer metrics-token-0123456789"]), &token),
            "the scheme is case-insensitive"
        );
        for wrong in [
            "Bearer metrics-token-012345678",
            "Bearer metrics-token-01234567890",
            "Bearer  metrics-token-0123456789",
            "Basic metrics-token-0123456789",
            "metrics-token-0123456789",
            "Bearer",
            "",
        ] {
            assert!(!bearer_ok(&headers(&[wrong]), &token), "{wrong:?}");
        }
        assert!(!bearer_ok(&headers(&[]), &token));
        assert!(
            !bearer_ok(
                &headers(&[
                    "Bearer metrics-token-0123456789",
                    "Bearer metrics-token-0123456789"
                ]),
                &token
            ),
            "two Authorization headers are refused"
        );
    }
}
