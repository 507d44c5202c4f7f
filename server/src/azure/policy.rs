//! Policies in the SDK's pipeline. Shared Key signing runs on every try (after the retry
//! policy), so each attempt gets a fresh `x-ms-date` and a valid signature: unlike a SAS baked
//! into a URL, it never expires under a long-running worker. Counting runs on every try too,
//! so what it counts is what the account bills (`exportal_storage_requests_total`).

use super::sas::{shared_key_authorization, SignedRequest};
use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use std::sync::Arc;

pub struct SharedKeyPolicy {
    account: String,
    key: Vec<u8>,
}

impl SharedKeyPolicy {
    pub fn new(account: &str, key: Vec<u8>) -> Self {
        Self {
            account: account.to_string(),
            key,
        }
    }
}

impl std::fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .field("key", &"***")
            .finish()
    }
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        request.insert_header("x-ms-date", date);
        let mut headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string()))
            .collect();
        // The transport sets Content-Length after this policy runs: sign the body's length.
        if !headers.iter().any(|(k, _)| k == "content-length") {
            if let Some(len) = request.body().len().filter(|n| *n > 0) {
                headers.push(("content-length".into(), len.to_string()));
            }
        }
        let url = request.url().clone();
        let authorization = shared_key_authorization(
            &self.account,
            &self.key,
            &SignedRequest {
                method: request.method().as_ref(),
                path: url.path(),
                query: url.query(),
                headers,
            },
        );
        request.insert_header("authorization", authorization);
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// Counts every request (every try) to one storage service in
/// [`crate::metrics::storage_request`].
#[derive(Debug)]
pub struct CountingPolicy {
    service: &'static str,
}

impl CountingPolicy {
    /// Counts the requests to `service` (`blob` or `queue`).
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

/// The method as a bounded label.
fn method_label(method: &azure_core::http::Method) -> &'static str {
    use azure_core::http::Method;
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Patch => "PATCH",
        _ => "other",
    }
}

#[async_trait]
impl Policy for CountingPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        crate::metrics::storage_request(self.service, method_label(&request.method()));
        next[0].send(ctx, request, &next[1..]).await
    }
}
