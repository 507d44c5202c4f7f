//! The keyless Azure path: no account key anywhere, requests carry Entra ID bearer tokens and
//! download links are user-delegation SAS. It runs against the Azurite that scripts/test.sh
//! starts over HTTPS with `--oauth basic`, whose certificate comes from a CA made for that run
//! and is trusted through `EXPORTAL_AZURE_CA_FILE` only.
//!
//! Azurite checks a token's claims (issuer prefix, audience, nbf/exp/iat) but not its
//! signature, and has no role assignments. So the tokens here are minted unsigned with the
//! claims a real tenant would put in them: in-process through a test `TokenCredential`, and for
//! the server binary through a local stand-in for the App Service managed-identity endpoint,
//! which azure_identity's own `ManagedIdentityCredential` calls exactly as it would in Azure.

use crate::azure::{
    active_job_limit_suite, blob_store, download_links_suite, job_records_suite, queue_from,
};
use crate::process::Server;
use crate::support::{orders, service_url, User, DEMO_ORDERS};
use async_trait::async_trait;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use base64::Engine as _;
use futures::StreamExt;
use server::azure::{self, AzureSettings};
use server::blobs::{BlobMeta, BlobStore, Download};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The tenant and object id of the test identity: a user-delegation key and every link signed
/// with it name them (`sktid`, `skoid`).
const TENANT: &str = "8a3c1f52-0d7e-4b8e-9c55-2f1d6e7a9b10";
const OBJECT: &str = "5e0b7d21-3c9a-4f6e-8b12-a4d9c3e8f701";
/// The audience of a storage token that is good for every account.
const STORAGE: &str = "https://storage.azure.com";

/// Mints the token Azurite's `--oauth basic` accepts: unsigned, with a real tenant's claims.
#[derive(Debug)]
struct AzuriteTokens {
    audience: String,
    /// The scopes the SDK asked for, in order.
    asked: Mutex<Vec<String>>,
}

impl AzuriteTokens {
    fn for_audience(audience: &str) -> Self {
        AzuriteTokens {
            audience: audience.to_string(),
            asked: Mutex::new(Vec::new()),
        }
    }

    /// A token valid for an hour, and its expiry (Unix seconds).
    fn mint(audience: &str) -> (String, i64) {
        let now = chrono::Utc::now().timestamp();
        let exp = now + 3600;
        let part = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let header = part(serde_json::json!({"alg": "RS256", "typ": "JWT"}));
        let claims = part(serde_json::json!({
            "aud": audience,
            "iss": format!("https://sts.windows.net/{TENANT}/"),
            "iat": now,
            "nbf": now - 60,
            "exp": exp,
            "oid": OBJECT,
            "sub": OBJECT,
            "tid": TENANT,
            "ver": "1.0",
        }));
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(b"not signed: Azurite does not check");
        (format!("{header}.{claims}.{signature}"), exp)
    }
}

#[async_trait]
impl TokenCredential for AzuriteTokens {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.asked
            .lock()
            .unwrap()
            .extend(scopes.iter().map(|s| s.to_string()));
        let (token, exp) = Self::mint(&self.audience);
        Ok(AccessToken::new(
            token,
            azure_core::time::OffsetDateTime::from_unix_timestamp(exp).unwrap(),
        ))
    }
}

fn blob_url() -> String {
    service_url("EXPORTAL_TEST_AZURE_HTTPS_BLOB_URL")
}

fn queue_url() -> String {
    service_url("EXPORTAL_TEST_AZURE_HTTPS_QUEUE_URL")
}

fn ca_file() -> String {
    service_url("EXPORTAL_TEST_AZURE_CA_FILE")
}

/// Endpoint URLs, the run's CA, no connection string; names of this test's own.
fn settings() -> AzureSettings {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
    AzureSettings {
        connection_string: None,
        blob_url: Some(blob_url()),
        queue_url: Some(queue_url()),
        queue: format!("q{tag}"),
        files_container: format!("f{tag}"),
        jobs_container: format!("j{tag}"),
        ca_file: Some(PathBuf::from(ca_file())),
    }
}

fn connect(s: &AzureSettings, tokens: Arc<AzuriteTokens>) -> azure::AzureClients {
    azure::clients_with(s, Some(tokens)).unwrap()
}

fn storage_tokens() -> Arc<AzuriteTokens> {
    Arc::new(AzuriteTokens::for_audience(STORAGE))
}

/// An HTTPS client that trusts the run's CA and nothing else, as a browser would trust the
/// storage account's certificate.
fn https() -> reqwest_rustls::Client {
    let pem = std::fs::read(ca_file()).unwrap();
    reqwest_rustls::Client::builder()
        .tls_certs_only(reqwest_rustls::Certificate::from_pem_bundle(&pem).unwrap())
        .redirect(reqwest_rustls::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn keyless_queue_visibility_hides_and_redelivers() {
    let tokens = storage_tokens();
    let q = queue_from(connect(&settings(), tokens.clone())).await;
    crate::queue::visibility_hides_and_redelivers(q).await;
    let asked = tokens.asked.lock().unwrap().clone();
    assert!(!asked.is_empty(), "requests carried bearer tokens");
    assert!(
        asked
            .iter()
            .all(|s| s == "https://storage.azure.com/.default"),
        "{asked:?}"
    );
}

#[tokio::test]
async fn keyless_queue_heartbeat_extends_and_rotates_the_receipt() {
    let q = queue_from(connect(&settings(), storage_tokens())).await;
    crate::queue::heartbeat_extends_and_rotates_the_receipt(q).await;
}

#[tokio::test]
async fn keyless_queue_release_and_delayed_send() {
    let q = queue_from(connect(&settings(), storage_tokens())).await;
    crate::queue::release_and_delayed_send(q).await;
}

#[tokio::test]
async fn keyless_queue_dead_letter_moves_to_poison() {
    let q = queue_from(connect(&settings(), storage_tokens())).await;
    crate::queue::dead_letter_moves_to_poison(q).await;
}

#[tokio::test]
async fn keyless_queue_competing_receivers_split_the_messages() {
    let q = queue_from(connect(&settings(), storage_tokens())).await;
    crate::queue::competing_receivers_split_the_messages(q).await;
}

#[tokio::test]
async fn keyless_job_records_are_compare_and_set_so_concurrent_writers_never_overwrite() {
    let s = settings();
    job_records_suite(&|| connect(&s, storage_tokens())).await;
}

#[tokio::test]
async fn keyless_active_job_limit_is_reserved_atomically() {
    let s = settings();
    active_job_limit_suite(&|| connect(&s, storage_tokens())).await;
}

#[tokio::test]
async fn keyless_download_links_are_user_delegation_sas_read_only_short_lived_and_for_one_blob() {
    let s = settings();
    let store = blob_store(&|| connect(&s, storage_tokens())).await;
    download_links_suite(&store, &https()).await;

    let meta = BlobMeta {
        content_type: "text/csv".into(),
        filename: "orders.csv".into(),
    };
    let Download::Redirect(link) = store
        .download("a.csv", &meta, Duration::from_secs(300))
        .await
        .unwrap()
    else {
        panic!("an Entra ID credential gives redirects")
    };
    assert!(
        link.starts_with(&format!("{}/{}/a.csv?", blob_url(), s.files_container)),
        "{link}"
    );
    for signed in [
        format!("skoid={OBJECT}"),
        format!("sktid={TENANT}"),
        "sks=b".into(),
        "sp=r".into(),
    ] {
        assert!(link.contains(&signed), "{signed} missing from {link}");
    }
    assert!(
        !link.contains("sk=") && !link.contains("AccountKey"),
        "no key in a link: {link}"
    );
}

/// The `skt` (key start) of a user-delegation link.
fn key_start(link: &str) -> String {
    link.split(['?', '&'])
        .find_map(|p| p.strip_prefix("skt="))
        .unwrap_or_else(|| panic!("no skt in {link}"))
        .to_string()
}

#[tokio::test]
async fn the_user_delegation_key_is_fetched_once_and_reused_for_later_links() {
    let s = settings();
    let store = blob_store(&|| connect(&s, storage_tokens())).await;
    let meta = BlobMeta {
        content_type: "text/plain".into(),
        filename: "x.txt".into(),
    };
    let body = futures::stream::iter(vec![Ok(bytes::Bytes::from_static(b"x"))]).boxed();
    store.put("x.txt", &meta, body).await.unwrap();
    let link = || async {
        match store
            .download("x.txt", &meta, Duration::from_secs(60))
            .await
        {
            Ok(Download::Redirect(url)) => url,
            _ => panic!("no link"),
        }
    };
    let first = link().await;
    // A key asked for again would start at a later second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = link().await;
    assert_eq!(key_start(&first), key_start(&second));
    assert_ne!(
        first, second,
        "each click still gets a link of its own expiry"
    );
    let res = https().get(&second).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"x");
}

/// A stand-in for the App Service managed-identity endpoint (`IDENTITY_ENDPOINT` +
/// `IDENTITY_HEADER`), minting tokens with `audience` for the storage resource only.
struct IdentityEndpoint {
    url: String,
    secret: String,
}

impl IdentityEndpoint {
    async fn start(audience: &str) -> Self {
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let state = Arc::new((secret.clone(), audience.to_string()));
        let app = axum::Router::new()
            .route("/msi/token", axum::routing::get(identity_token))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        IdentityEndpoint {
            url: format!("http://{addr}/msi/token"),
            secret,
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("IDENTITY_ENDPOINT", self.url.as_str()),
            ("IDENTITY_HEADER", self.secret.as_str()),
        ]
    }
}

async fn identity_token(
    State(state): State<Arc<(String, String)>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (secret, audience) = state.as_ref();
    if headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        != Some(secret.as_str())
    {
        return (StatusCode::UNAUTHORIZED, "wrong X-IDENTITY-HEADER").into_response();
    }
    let Some(resource) = query.get("resource").filter(|r| *r == STORAGE) else {
        return (StatusCode::BAD_REQUEST, "only the storage resource").into_response();
    };
    let (token, exp) = AzuriteTokens::mint(audience);
    axum::Json(serde_json::json!({
        "access_token": token,
        "expires_on": exp.to_string(),
        "token_type": "Bearer",
        "resource": resource,
    }))
    .into_response()
}

/// Command-line settings of a keyless instance: endpoint URLs and the CA, no key.
fn keyless_args(s: &AzureSettings, data: &std::path::Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--data-dir",
        &data.display().to_string(),
        "--auth",
        "header",
        "--demo-orders",
        &DEMO_ORDERS.to_string(),
        "--poll-max",
        "200ms",
        "--storage",
        "azure",
        "--azure-queue",
        &s.queue,
        "--azure-files-container",
        &s.files_container,
        "--azure-jobs-container",
        &s.jobs_container,
    ]
    .map(String::from)
    .to_vec();
    if let Some(url) = &s.blob_url {
        args.extend(["--azure-blob-url".into(), url.clone()]);
    }
    if let Some(url) = &s.queue_url {
        args.extend(["--azure-queue-url".into(), url.clone()]);
    }
    if let Some(ca) = &s.ca_file {
        args.extend(["--azure-ca-file".into(), ca.display().to_string()]);
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_web_and_worker_pair_runs_an_export_and_links_it_through_a_user_delegation_sas() {
    let identity = IdentityEndpoint::start(STORAGE).await;
    let s = settings();
    let dir = tempfile::tempdir().unwrap();
    let start = |role: &str| {
        let data = dir.path().join(role);
        let mut args = keyless_args(&s, &data);
        args.extend(["--role".into(), role.into()]);
        Server::start_with_env(dir.path(), &args, &identity.env())
    };
    let web = start("web");
    let _worker = start("worker");
    let alice = User {
        base: web.base(),
        name: "alice".into(),
        http: reqwest::Client::new(),
    };

    let job = alice.submit(orders("csv")).await;
    let id = job["id"].as_str().unwrap();
    let done = alice
        .wait_for(id, &["succeeded", "failed"], Duration::from_secs(90))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirects
        .get(format!("{}/api/v1/exports/{id}/download", web.base()))
        .header("x-forwarded-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302, "downloads redirect to the storage");
    let link = res.headers()["location"].to_str().unwrap().to_string();
    assert!(
        link.starts_with(&format!("{}/{}/", blob_url(), s.files_container))
            && link.contains(&format!("skoid={OBJECT}"))
            && link.contains("sp=r"),
        "a user-delegation link: {link}"
    );
    let file = https().get(&link).send().await.unwrap();
    assert_eq!(file.status(), 200);
    let disposition = file.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"orders-") && disposition.contains(".csv\""),
        "{disposition}"
    );
    let bytes = file.bytes().await.unwrap();
    assert_eq!(
        csv::Reader::from_reader(&bytes[..]).records().count() as u64,
        DEMO_ORDERS
    );
    let bob = User {
        base: web.base(),
        name: "bob".into(),
        http: reqwest::Client::new(),
    };
    assert_eq!(
        bob.download(id).await.status(),
        404,
        "a link is minted only for the owner"
    );
}

/// Starts the server binary with `s` and the identity endpoint, expecting it to stop at
/// start-up; returns its message and how long it took.
async fn start_up_failure(s: &AzureSettings, identity: &IdentityEndpoint) -> (String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_server"))
            .args(["--addr", "127.0.0.1:0", "--log-format", "plain"])
            .args(keyless_args(s, &dir.path().join("data")))
            .envs(identity.env())
            .env("LEPTOS_OUTPUT_NAME", "exportal")
            .env("RUST_LOG", "off")
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the server stops by itself")
    .unwrap();
    assert!(!output.status.success(), "started: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    // The message is the last thing printed; a cause may span lines.
    let words = stderr
        .rfind("exportal: ")
        .map(|at| stderr[at..].trim().replace('\n', " "))
        .unwrap_or(stderr);
    println!("{words}");
    (words, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_names_an_unreachable_endpoint_quickly() {
    let identity = IdentityEndpoint::start(STORAGE).await;
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = settings();
    s.blob_url = Some(format!("https://127.0.0.1:{free}/devstoreaccount1"));
    s.queue_url = Some(format!("https://127.0.0.1:{free}/devstoreaccount1"));
    let (e, took) = start_up_failure(&s, &identity).await;
    assert!(
        e.contains("Azure Storage") && e.contains("cannot reach the storage endpoint"),
        "{e}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_names_an_endpoint_for_an_account_that_does_not_exist() {
    let identity = IdentityEndpoint::start(STORAGE).await;
    let mut s = settings();
    let other = |u: String| u.replace("/devstoreaccount1", "/nosuchaccount");
    s.blob_url = s.blob_url.map(other);
    s.queue_url = s.queue_url.map(other);
    let (e, _) = start_up_failure(&s, &identity).await;
    assert!(
        e.contains("not found (404") && e.contains("check the endpoint URL and account name"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_a_certificate_from_a_ca_it_was_not_told_to_trust() {
    let identity = IdentityEndpoint::start(STORAGE).await;
    let mut s = settings();
    s.ca_file = None;
    let (e, _) = start_up_failure(&s, &identity).await;
    assert!(
        e.contains("cannot reach the storage endpoint") && e.contains("certificate"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_names_a_token_for_another_account() {
    let identity = IdentityEndpoint::start("https://someoneelse.blob.core.windows.net").await;
    let (e, _) = start_up_failure(&settings(), &identity).await;
    assert!(e.contains("403 AuthenticationFailed"), "{e}");
    assert!(e.contains("Entra ID"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_names_an_identity_endpoint_that_gives_no_token() {
    let mut identity = IdentityEndpoint::start(STORAGE).await;
    identity.secret = "not the endpoint's secret".into();
    let (e, _) = start_up_failure(&settings(), &identity).await;
    assert!(
        e.contains("no Entra ID token could be obtained") && e.contains("wrong X-IDENTITY-HEADER"),
        "the identity endpoint's own reason is shown: {e}"
    );
}
