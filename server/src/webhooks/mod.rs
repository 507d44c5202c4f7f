//! Completion webhooks: when an export ends (succeeded, failed or cancelled), Exportal POSTs a
//! small signed JSON event to the URL the operator configured, so other systems need not poll.
//!
//! Where an event goes: the dataset's own `webhook` key if it has one, else the server's
//! `EXPORTAL_WEBHOOK_URL`, else nowhere. One destination per event, so a dataset can be routed
//! away from the server-wide receiver. `expired` sends nothing: it is housekeeping that follows
//! a `succeeded` event already sent, not something a receiver acts on.
//!
//! Delivery is at-least-once, from a durable outbox in the job store (a table in the embedded
//! database, or blobs under `webhooks/` in the jobs container on Azure): the event is stored
//! when the job's final state is written ([`crate::jobs::Jobs::transition`]), and a
//! [`dispatch::Dispatcher`] in every process delivers what is due, retrying failures with
//! exponential back-off and jitter, and abandons (with a log line) an event after
//! `EXPORTAL_WEBHOOK_MAX_ATTEMPTS`. An event owed by a process that stopped is delivered by the
//! next one. Entries are claimed for the length of one delivery, so two processes do not send
//! the same event at the same time; a process that dies mid-delivery, or a receiver that
//! answers too late, can still cause a second delivery: receivers dedupe by the event id (the
//! `id` field and the `Exportal-Event-Id` header).
//!
//! Only the operator names URLs (settings and datasets file, checked at start-up: http or
//! https, no user info, hosts limited by `EXPORTAL_WEBHOOK_HOSTS` when set); redirects are
//! never followed, so a receiver cannot bounce a delivery elsewhere. Events carry a link to the
//! job in the API, never a download link.

pub mod azure;
pub mod dispatch;
pub mod local;

use crate::catalog::Catalog;
use crate::config::{self, Secret};
use app::jobs::{Job, JobStatus};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The header that carries the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "Exportal-Signature";
/// The header that repeats the event id, for receivers that dedupe before parsing.
pub const EVENT_ID_HEADER: &str = "Exportal-Event-Id";
/// The longest pause between two attempts of one delivery.
pub const RETRY_MAX: Duration = Duration::from_secs(600);

/// One event owed to one receiver, as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The event id: the same for every attempt, so receivers can dedupe.
    pub id: String,
    pub job_id: String,
    pub url: String,
    /// The event JSON, fixed when the job ended: every attempt sends the same bytes.
    pub body: String,
    pub created_at: DateTime<Utc>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not to be tried before then.
    pub next_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The claim this process holds on the entry, set by [`Outbox::due`] (adapter-specific).
    #[serde(skip)]
    pub claim: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("webhook outbox unavailable: {0}")]
    Unavailable(String),
    /// The entry was claimed by another process (this one's claim ran out) or is gone.
    #[error("the webhook delivery was taken over by another process")]
    Lost,
}

/// The durable list of deliveries still owed.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Stores `delivery`; an entry with the same id already there is kept as it is.
    async fn add(&self, delivery: &Delivery) -> Result<(), OutboxError>;
    /// Claims up to `limit` entries whose `next_at` has come, for `claim`: until it runs out,
    /// no other call (here or in another process) returns them.
    async fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        claim: Duration,
    ) -> Result<Vec<Delivery>, OutboxError>;
    /// Stores the `attempts`, `next_at` and `last_error` of a claimed entry and releases it
    /// (`Lost` if the claim is no longer this process's).
    async fn reschedule(&self, delivery: &Delivery) -> Result<(), OutboxError>;
    /// Removes the entry: delivered, or abandoned.
    async fn remove(&self, delivery: &Delivery) -> Result<(), OutboxError>;
}

/// A host name for `EXPORTAL_WEBHOOK_HOSTS`, lower case.
pub fn parse_host(host: &str) -> Result<String, String> {
    let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if ok {
        Ok(h)
    } else {
        Err(format!(
            "`{host}` is not a host name such as hooks.example.com (no scheme, port or path)"
        ))
    }
}

/// Checks a webhook URL named by the operator: absolute http or https, a host, no user info
/// (it would be sent in clear to whoever answers) and no fragment; when `hosts` is not empty,
/// its host must be one of them. Returns the URL as parsed.
pub fn check_url(url: &str, hosts: &[String]) -> Result<String, String> {
    let parsed = reqwest_rustls::Url::parse(url.trim())
        .map_err(|e| format!("`{url}` is not a URL ({e}); use https://host/path"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "`{}:` URLs are not allowed for webhooks; use http or https",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("a webhook URL must not carry a user name or password".into());
    }
    if parsed.fragment().is_some() {
        return Err("a webhook URL must not have a #fragment".into());
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("a webhook URL needs a host")?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if !hosts.is_empty() && !hosts.contains(&host) {
        return Err(format!(
            "host `{host}` is not in EXPORTAL_WEBHOOK_HOSTS ({})",
            hosts.join(", ")
        ));
    }
    Ok(parsed.to_string())
}

/// The host of a URL, for log lines: paths and queries of webhook URLs often hold tokens.
pub fn host_of(url: &str) -> String {
    reqwest_rustls::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The `Exportal-Signature` value for `body` sent at `t` (unix seconds):
/// `t=<t>,v1=<hex of HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &Secret, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.0.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The pause after failed attempt number `attempts` (1 for the first): `base` doubling per
/// attempt up to [`RETRY_MAX`], with equal jitter (`random` in 0..=1).
pub fn backoff(attempts: u32, base: Duration, random: f64) -> Duration {
    crate::worker::retry_delay(attempts, base, RETRY_MAX, random)
}

/// The event for a job that just ended.
#[derive(Debug, Serialize)]
struct Event<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: String,
    job_id: &'a str,
    /// The job in the API (the owner reads it there, and mints a download link there).
    job_url: String,
    owner: &'a str,
    dataset: &'a str,
    format: &'a str,
    status: JobStatus,
    rows: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a app::jobs::JobError>,
    attempts: u32,
    finished_at: Option<DateTime<Utc>>,
}

/// The id of the event for the write that made `job` final: the job's id and stored revision,
/// so it is unique per ending (a retried job that ends again gets a new one) and the same
/// however often it is computed.
pub fn event_id(job: &Job) -> String {
    format!("{}-{}", job.id, job.revision)
}

/// The event JSON for `job`, which just became final.
pub fn event_body(job: &Job, public_origin: Option<&str>) -> String {
    let id = event_id(job);
    let event = Event {
        id: &id,
        kind: format!("export.{}", job.status),
        job_id: &job.id,
        job_url: format!(
            "{}/api/v1/exports/{}",
            public_origin.unwrap_or_default(),
            job.id
        ),
        owner: &job.owner,
        dataset: &job.dataset,
        format: job.format.as_str(),
        status: job.status,
        rows: job.progress.rows,
        bytes: job.progress.bytes,
        sha256: job.file.as_ref().map(|f| f.sha256.as_str()),
        error: job.error.as_ref(),
        attempts: job.attempts,
        finished_at: job.finished_at,
    };
    serde_json::to_string(&event).expect("events serialise")
}

/// Where events go, checked at start-up against the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    server: Option<String>,
    datasets: HashMap<String, String>,
}

impl Routes {
    /// The configured webhooks, or `None` when there are none. Checks the datasets' URLs
    /// against `EXPORTAL_WEBHOOK_HOSTS` and that a secret is set.
    pub fn new(settings: &config::Webhooks, catalog: &Catalog) -> Result<Option<Routes>, String> {
        let mut datasets = HashMap::new();
        for (id, url) in catalog.webhooks() {
            let url = check_url(url, &settings.hosts)
                .map_err(|e| format!("dataset `{id}`: key `webhook`: {e}"))?;
            datasets.insert(id.to_string(), url);
        }
        if settings.url.is_none() && datasets.is_empty() {
            return Ok(None);
        }
        if settings.secret.is_none() {
            let mut named: Vec<&str> = datasets.keys().map(String::as_str).collect();
            named.sort();
            return Err(format!(
                "EXPORTAL_WEBHOOK_SECRET is required: the datasets {} name a webhook (deliveries are signed with it)",
                named.join(", ")
            ));
        }
        Ok(Some(Routes {
            server: settings.url.clone(),
            datasets,
        }))
    }

    /// The URL for events of `dataset`'s jobs: the dataset's own, else the server's.
    pub fn url_for(&self, dataset: &str) -> Option<&str> {
        self.datasets
            .get(dataset)
            .or(self.server.as_ref())
            .map(String::as_str)
    }
}

/// Adds the event of every job that ends to the outbox; held by [`crate::jobs::Jobs`].
pub struct Notifier {
    pub outbox: Arc<dyn Outbox>,
    pub routes: Routes,
    pub public_origin: Option<String>,
    /// Wakes this process's dispatcher, so a delivery starts without waiting for a poll.
    pub wake: Arc<Notify>,
}

impl Notifier {
    /// Called once per write that made `job` final (not for `expired`). A failing outbox is
    /// tried a few times over about a second; after that the event is lost, with an error
    /// logged: the job's own write already succeeded and is not undone.
    pub async fn job_finished(&self, job: &Job) {
        if !matches!(
            job.status,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        ) {
            return;
        }
        let Some(url) = self.routes.url_for(&job.dataset) else {
            return;
        };
        let now = Utc::now();
        let delivery = Delivery {
            id: event_id(job),
            job_id: job.id.clone(),
            url: url.to_string(),
            body: event_body(job, self.public_origin.as_deref()),
            created_at: now,
            attempts: 0,
            next_at: now,
            last_error: None,
            claim: None,
        };
        let mut pause = Duration::from_millis(100);
        for attempt in 1..=4 {
            match self.outbox.add(&delivery).await {
                Ok(()) => {
                    self.wake.notify_one();
                    return;
                }
                Err(e) if attempt < 4 => {
                    tracing::warn!(job = %job.id, "cannot store the webhook event ({e}); trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    tracing::error!(job = %job.id, event = %delivery.id, "the webhook event is lost: cannot store it ({e})");
                }
            }
        }
    }
}

/// Sets up webhooks for this process, if any are configured (settings or datasets file):
/// `jobs` with the notifier that stores events, and the dispatcher to run.
pub fn setup(
    settings: &config::Settings,
    catalog: &Catalog,
    outbox: Arc<dyn Outbox>,
    jobs: crate::jobs::Jobs,
) -> anyhow::Result<(crate::jobs::Jobs, Option<Arc<dispatch::Dispatcher>>)> {
    let Some(routes) =
        Routes::new(&settings.webhooks, catalog).map_err(|e| anyhow::anyhow!("webhooks: {e}"))?
    else {
        return Ok((jobs, None));
    };
    let secret = settings
        .webhooks
        .secret
        .clone()
        .expect("Routes::new checked the secret");
    let wake = Arc::new(Notify::new());
    let dispatcher =
        dispatch::Dispatcher::new(outbox.clone(), &settings.webhooks, secret, wake.clone())?;
    let notifier = Notifier {
        outbox,
        routes,
        public_origin: settings.edge.public_origin.clone(),
        wake,
    };
    Ok((
        jobs.with_webhooks(Arc::new(notifier)),
        Some(Arc::new(dispatcher)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body_in_hex() {
        // Computed independently: printf '1700000000.{"id":"e1"}' | openssl dgst -sha256
        //   -hmac 'whsec-0123456789abcdef'
        let secret = Secret("whsec-0123456789abcdef".into());
        assert_eq!(
            signature(&secret, 1_700_000_000, br#"{"id":"e1"}"#),
            "t=1700000000,v1=475145d8ab7a55b4e1e67de0f9efad85edf150d83de62d06764a208144a61d0f"
        );
    }

    #[test]
    fn back_off_doubles_from_the_base_with_jitter_up_to_ten_minutes() {
        let base = Duration::from_secs(1);
        assert_eq!(backoff(1, base, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(1, base, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(4, base, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(4, base, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(11, base, 1.0), RETRY_MAX);
        assert_eq!(backoff(30, base, 1.0), RETRY_MAX);
        assert_eq!(backoff(30, base, 0.0), RETRY_MAX / 2);
        let mut last = Duration::ZERO;
        for a in 1..=12 {
            let d = backoff(a, base, 1.0);
            assert!(d >= last, "attempt {a}: {d:?} < {last:?}");
            last = d;
        }
    }

    #[test]
    fn only_http_urls_without_user_info_to_allowed_hosts_are_accepted() {
        assert_eq!(
            check_url("https://Hooks.Example.com/x?y=1", &[]).unwrap(),
            "https://hooks.example.com/x?y=1"
        );
        assert!(check_url("http://127.0.0.1:9/h", &[]).is_ok());
        for (url, expected) in [
            ("ftp://hooks.example.com/", "use http or https"),
            ("file:///etc/passwd", "use http or https"),
            ("hooks.example.com/x", "not a URL"),
            (
                "https://user:pw@hooks.example.com/",
                "user name or password",
            ),
            ("https://hooks.example.com/#x", "fragment"),
        ] {
            let e = check_url(url, &[]).unwrap_err();
            assert!(e.contains(expected), "{url}: {e}");
        }
        let hosts = vec!["hooks.example.com".to_string()];
        assert!(check_url("https://hooks.example.com:8443/a", &hosts).is_ok());
        let e = check_url("https://evil.example.com/a", &hosts).unwrap_err();
        assert!(
            e.contains("evil.example.com") && e.contains("EXPORTAL_WEBHOOK_HOSTS"),
            "{e}"
        );
        assert_eq!(
            parse_host(" Hooks.Example.com. ").unwrap(),
            "hooks.example.com"
        );
        assert!(parse_host("https://x/").is_err());
    }

    #[test]
    fn the_event_links_to_the_job_and_never_to_a_file() {
        let mut job = Job::queued(
            "j1",
            "alice",
            "orders",
            app::jobs::ExportFormat::Csv,
            vec!["id".into()],
        );
        job.status = JobStatus::Succeeded;
        job.revision = 7;
        job.progress.rows = 3;
        job.progress.bytes = 42;
        job.file = Some(app::jobs::FileFacts {
            name: "orders.csv".into(),
            bytes: 42,
            rows: 3,
            sha256: "ab".repeat(32),
            content_type: "text/csv".into(),
            expires_at: Utc::now(),
            blob: Some("secret-blob-name".into()),
        });
        let body: serde_json::Value =
            serde_json::from_str(&event_body(&job, Some("https://x.example.com"))).unwrap();
        assert_eq!(body["id"], "j1-7");
        assert_eq!(body["type"], "export.succeeded");
        assert_eq!(body["job_url"], "https://x.example.com/api/v1/exports/j1");
        assert_eq!(body["sha256"], "ab".repeat(32));
        assert!(!body.to_string().contains("secret-blob-name"));
        assert!(!body.to_string().contains("download"));
        let body: serde_json::Value = serde_json::from_str(&event_body(&job, None)).unwrap();
        assert_eq!(body["job_url"], "/api/v1/exports/j1");
    }
}
