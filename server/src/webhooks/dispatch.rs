//! The dispatcher: delivers what the outbox holds when it is due, one bounded batch at a time.
//!
//! A delivery is one signed POST with a deadline (`EXPORTAL_WEBHOOK_TIMEOUT`); any 2xx answer
//! delivers it. Anything else (another status, a redirect, a timeout, no connection) is a
//! failed attempt: the entry is rescheduled after an exponential back-off with jitter, and
//! removed with an error log line once `EXPORTAL_WEBHOOK_MAX_ATTEMPTS` have failed. Of a
//! receiver's answer only the first [`ANSWER_BYTES`] are read, for the log.

use super::{
    backoff, check_url, host_of, signature, Delivery, Outbox, OutboxError, EVENT_ID_HEADER,
    SIGNATURE_HEADER,
};
use crate::config::{self, Secret};
use chrono::Utc;
use futures::StreamExt;
use reqwest_rustls::redirect;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Deliveries claimed per round.
const BATCH: usize = 16;
/// Deliveries in flight at once.
const CONCURRENCY: usize = 4;
/// The most of a receiver's answer that is read (for the failure message).
pub const ANSWER_BYTES: usize = 512;
/// A claim outlasts the delivery's deadline by this much, so the outcome is stored before
/// another process may take the entry.
const CLAIM_SLACK: Duration = Duration::from_secs(10);

pub struct Dispatcher {
    outbox: Arc<dyn Outbox>,
    http: reqwest_rustls::Client,
    secret: Secret,
    hosts: Vec<String>,
    timeout: Duration,
    retry_base: Duration,
    max_attempts: u32,
    wake: Arc<Notify>,
}

impl Dispatcher {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        settings: &config::Webhooks,
        secret: Secret,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        let http = reqwest_rustls::Client::builder()
            // A redirect is a failure: a receiver must not be able to bounce the signed
            // request to an address the operator did not name.
            .redirect(redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("Exportal/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Self {
            outbox,
            http,
            secret,
            hosts: settings.hosts.clone(),
            timeout: settings.timeout,
            retry_base: settings.retry_base,
            max_attempts: settings.max_attempts,
            wake,
        })
    }

    /// How long an idle dispatcher waits before looking at the outbox again (an event added
    /// by this process wakes it at once; other processes' events and back-offs wait for it).
    fn poll(&self) -> Duration {
        self.retry_base
            .clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Delivers due entries until `shutdown`; deliveries under way are finished (each within
    /// its deadline) before it returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut poll = self.poll();
        while !shutdown.is_cancelled() {
            let claim = self.timeout + CLAIM_SLACK;
            let batch = match self.outbox.due(Utc::now(), BATCH, claim).await {
                Ok(batch) => {
                    poll = self.poll();
                    batch
                }
                Err(e) => {
                    tracing::warn!("cannot read the webhook outbox: {e}");
                    poll = (poll * 2).min(Duration::from_secs(30));
                    Vec::new()
                }
            };
            let full = batch.len() == BATCH;
            futures::stream::iter(batch)
                .for_each_concurrent(CONCURRENCY, |d| self.attempt(d))
                .await;
            if full {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One attempt of one claimed delivery, and the outbox write of its outcome.
    pub async fn attempt(&self, mut d: Delivery) {
        let host = host_of(&d.url);
        let result = match check_url(&d.url, &self.hosts) {
            Ok(_) => self.post(&d).await,
            Err(e) => {
                tracing::error!(event = %d.id, job = %d.job_id, %host, "webhook abandoned: its URL is no longer allowed ({e})");
                self.store(&d, self.outbox.remove(&d).await);
                return;
            }
        };
        d.attempts = d.attempts.saturating_add(1);
        match result {
            Ok(()) => {
                tracing::info!(event = %d.id, job = %d.job_id, %host, attempts = d.attempts, "webhook delivered");
                self.store(&d, self.outbox.remove(&d).await);
            }
            Err(e) if d.attempts >= self.max_attempts => {
                tracing::error!(event = %d.id, job = %d.job_id, %host, attempts = d.attempts, "webhook abandoned after {} failed attempts; the last: {e}", d.attempts);
                self.store(&d, self.outbox.remove(&d).await);
            }
            Err(e) => {
                let delay = backoff(d.attempts, self.retry_base, rand::random::<f64>());
                tracing::warn!(event = %d.id, job = %d.job_id, %host, attempts = d.attempts, retry_in_ms = delay.as_millis() as u64, "webhook delivery failed: {e}");
                d.next_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                d.last_error = Some(e);
                self.store(&d, self.outbox.reschedule(&d).await);
            }
        }
    }

    fn store(&self, d: &Delivery, written: Result<(), OutboxError>) {
        // Not stored: the claim runs out and the entry is tried again (maybe a second time,
        // which receivers dedupe by event id).
        if let Err(e) = written {
            tracing::warn!(event = %d.id, "cannot record the webhook delivery's outcome: {e}");
        }
    }

    /// Sends the event; `Err` says why it did not count as delivered.
    async fn post(&self, d: &Delivery) -> Result<(), String> {
        let t = Utc::now().timestamp();
        let request = self
            .http
            .post(&d.url)
            .header("content-type", "application/json")
            .header(
                SIGNATURE_HEADER,
                signature(&self.secret, t, d.body.as_bytes()),
            )
            .header(EVENT_ID_HEADER, &d.id)
            .body(d.body.clone());
        let exchange = async {
            let mut res = request.send().await.map_err(|e| describe(&e))?;
            let status = res.status();
            if status.is_success() {
                return Ok(());
            }
            let mut answer = Vec::new();
            while answer.len() < ANSWER_BYTES {
                match res.chunk().await {
                    Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            answer.truncate(ANSWER_BYTES);
            let text: String = String::from_utf8_lossy(&answer)
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            Err(if status.is_redirection() {
                format!("the receiver answered {status} (redirects are not followed)")
            } else {
                format!("the receiver answered {status}: {}", text.trim())
            })
        };
        // The client's own deadline covers the exchange; this one also bounds a slow answer.
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)))
    }
}

/// A transport failure in a few words, without the URL (its path or query may hold a token).
fn describe(e: &reqwest_rustls::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}
