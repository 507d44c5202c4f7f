//! Azure Storage: the distributed engine. Queue + Blob through the official SDK crates
//! (`azure_storage_queue` / `azure_storage_blob` 1.x), plus the small pieces they lack and this
//! module supplies: connection strings, Shared Key signing, blob service SAS links.
//!
//! Credentials, in order of preference: a connection string with an account key (requests
//! signed with Shared Key by a pipeline policy, which never expires; links are service SAS),
//! a connection string with a SAS (used as given), or endpoint URLs with an Entra ID credential
//! (links are user-delegation SAS).

pub mod connection;
pub mod policy;
pub mod sas;
pub mod tls;

use crate::config::Secret;
use anyhow::Context as _;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{
    policies::Policy, ClientOptions, ExponentialRetryOptions, RetryOptions, Transport, Url,
};
use azure_storage_blob::{BlobContainerClient, BlobServiceClient, BlobServiceClientOptions};
use azure_storage_queue::{QueueClient, QueueServiceClient, QueueServiceClientOptions};
use connection::{parse_connection_string, KeyCredential};
use std::sync::Arc;
use std::time::Duration;

/// Azure settings (see the `azure_*` settings in `config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureSettings {
    pub connection_string: Option<Secret>,
    pub blob_url: Option<String>,
    pub queue_url: Option<String>,
    pub queue: String,
    pub files_container: String,
    pub jobs_container: String,
    /// PEM roots that storage endpoints' certificates must chain to, instead of the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

/// How download links are made.
#[derive(Clone)]
pub enum Links {
    /// Service SAS signed with the account key.
    Key {
        account: String,
        key: Vec<u8>,
        https_only: bool,
    },
    /// User-delegation SAS from an Entra ID credential.
    Delegation {
        account: String,
        service: Arc<BlobServiceClient>,
    },
    /// No way to sign per blob (a SAS connection string): the server streams the file itself.
    Proxy,
}

/// Connected clients for everything Exportal keeps in the account.
pub struct AzureClients {
    pub queue: QueueClient,
    pub poison: QueueClient,
    pub files: BlobContainerClient,
    pub jobs: BlobContainerClient,
    /// The same container again, for the audit trail.
    pub audit: BlobContainerClient,
    /// The jobs container again, for the webhook outbox.
    pub outbox: BlobContainerClient,
    pub links: Links,
    pub description: String,
}

/// The time a single storage call may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

fn client_options(policies: Vec<Arc<dyn Policy>>, transport: Option<Transport>) -> ClientOptions {
    ClientOptions {
        per_try_policies: policies,
        transport,
        // The SDK's default (8 retries over 60 s) makes a wrong endpoint look like a hang; the
        // worker has retries of its own.
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            max_retries: 2,
            initial_delay: azure_core::time::Duration::milliseconds(200),
            max_total_elapsed: azure_core::time::Duration::seconds(10),
            max_delay: azure_core::time::Duration::seconds(2),
        }),
        ..Default::default()
    }
}

fn url_with(endpoint: &str, sas: Option<&str>) -> anyhow::Result<Url> {
    let mut url = Url::parse(endpoint.trim_end_matches('/'))
        .with_context(|| format!("`{endpoint}` is not a URL"))?;
    if let Some(sas) = sas {
        url.set_query(Some(sas));
    }
    Ok(url)
}

/// Builds the clients from the settings; makes no request.
pub fn clients(settings: &AzureSettings) -> anyhow::Result<AzureClients> {
    clients_with(settings, None)
}

/// Like [`clients`]; without a connection string, `entra` (when given) replaces the Entra ID
/// credential this environment would provide, as a test's token issuer does.
pub fn clients_with(
    settings: &AzureSettings,
    entra: Option<Arc<dyn TokenCredential>>,
) -> anyhow::Result<AzureClients> {
    let transport = tls::transport(settings.ca_file.as_deref())?;
    let mut policies: Vec<Arc<dyn Policy>> = Vec::new();
    let mut sas: Option<String> = None;
    let mut credential: Option<Arc<dyn TokenCredential>> = None;
    let (blob_endpoint, queue_endpoint, links, description) = match &settings.connection_string {
        Some(cs) => {
            let info = parse_connection_string(&cs.0)
                .map_err(|e| anyhow::anyhow!("AZURE_STORAGE_CONNECTION_STRING: {e}"))?;
            let description = format!("account {} (connection string)", info.account);
            let links = match info.credential {
                KeyCredential::Key(key) => {
                    policies.push(Arc::new(policy::SharedKeyPolicy::new(
                        &info.account,
                        key.clone(),
                    )));
                    Links::Key {
                        account: info.account.clone(),
                        key,
                        https_only: !info.emulator,
                    }
                }
                KeyCredential::Sas(given) => {
                    sas = Some(given.0);
                    Links::Proxy
                }
            };
            (info.blob_endpoint, info.queue_endpoint, links, description)
        }
        None => {
            let blob = settings.blob_url.clone().context(
                "EXPORTAL_AZURE_BLOB_URL is needed when AZURE_STORAGE_CONNECTION_STRING is not set",
            )?;
            let queue = settings
                .queue_url
                .clone()
                .context("EXPORTAL_AZURE_QUEUE_URL is needed when AZURE_STORAGE_CONNECTION_STRING is not set")?;
            let entra = match entra {
                Some(given) => given,
                None => entra_credential()?,
            };
            credential = Some(entra.clone());
            let account = account_of(&url_with(&blob, None)?);
            let service = BlobServiceClient::new(
                url_with(&blob, None)?,
                Some(entra),
                Some(blob_options(
                    vec![Arc::new(policy::CountingPolicy::new("blob"))],
                    transport.clone(),
                )),
            )
            .context("cannot create the blob client")?;
            let description = format!("{blob} (Entra ID)");
            (
                blob,
                queue,
                Links::Delegation {
                    account,
                    service: Arc::new(service),
                },
                description,
            )
        }
    };
    // Every request is counted by service, before it is signed.
    let with_counter = |service: &'static str| {
        let mut all: Vec<Arc<dyn Policy>> = vec![Arc::new(policy::CountingPolicy::new(service))];
        all.extend(policies.iter().cloned());
        all
    };
    let blob_service = BlobServiceClient::new(
        url_with(&blob_endpoint, sas.as_deref())?,
        credential.clone(),
        Some(blob_options(with_counter("blob"), transport.clone())),
    )
    .context("cannot create the blob client")?;
    let queue_service = QueueServiceClient::new(
        url_with(&queue_endpoint, sas.as_deref())?,
        credential,
        Some(QueueServiceClientOptions {
            client_options: client_options(with_counter("queue"), transport),
            ..Default::default()
        }),
    )
    .context("cannot create the queue client")?;
    Ok(AzureClients {
        queue: queue_service.queue_client(&settings.queue)?,
        poison: queue_service.queue_client(&format!("{}-poison", settings.queue))?,
        files: blob_service.blob_container_client(&settings.files_container),
        jobs: blob_service.blob_container_client(&settings.jobs_container),
        audit: blob_service.blob_container_client(&settings.jobs_container),
        outbox: blob_service.blob_container_client(&settings.jobs_container),
        links,
        description,
    })
}

fn blob_options(
    policies: Vec<Arc<dyn Policy>>,
    transport: Option<Transport>,
) -> BlobServiceClientOptions {
    BlobServiceClientOptions {
        client_options: client_options(policies, transport),
        ..Default::default()
    }
}

/// The account a service URL names, which a user-delegation SAS must sign: the first label
/// of the host (`acct.blob.core.windows.net`), or the first path segment when the host is an
/// address or `localhost` (the emulator's path-style `https://127.0.0.1:10000/devstoreaccount1`).
fn account_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let address = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    if address || host == "localhost" {
        url.path_segments()
            .and_then(|mut s| s.next())
            .unwrap_or_default()
            .to_string()
    } else {
        host.split('.').next().unwrap_or(host).to_string()
    }
}

/// The Entra ID credential for this environment: workload identity when its variables are
/// set (AKS), managed identity on Azure compute, developer tools (az / azd login) otherwise.
fn entra_credential() -> anyhow::Result<Arc<dyn TokenCredential>> {
    use azure_identity::{
        DeveloperToolsCredential, ManagedIdentityCredential, WorkloadIdentityCredential,
    };
    let env = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    let credential: Arc<dyn TokenCredential> = if env("AZURE_FEDERATED_TOKEN_FILE") {
        WorkloadIdentityCredential::new(None)?
    } else if env("IDENTITY_ENDPOINT") || env("MSI_ENDPOINT") {
        ManagedIdentityCredential::new(None)?
    } else {
        DeveloperToolsCredential::new(None)?
    };
    Ok(credential)
}

/// A storage failure in words an operator can act on.
pub fn explain(what: &str, e: &azure_core::Error) -> String {
    match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            let code = error_code.clone().unwrap_or_default();
            let status = u16::from(*status);
            match (status, code.as_str()) {
                (403, "AuthenticationFailed") => format!(
                    "{what}: the storage account rejected the credentials (403 AuthenticationFailed): check the account key or SAS, \
                     or with Entra ID that the token is issued for this account (tenant, audience)"
                ),
                (403, "AuthorizationPermissionMismatch" | "AuthorizationFailure") => format!(
                    "{what}: the identity is not allowed to do this (403 {code}): grant it the roles \
                     Storage Blob Data Contributor and Storage Queue Data Contributor"
                ),
                (403, _) => format!("{what}: access denied (403 {code})"),
                (404, _) => format!("{what}: not found (404 {code}): check the endpoint URL and account name"),
                _ => format!("{what}: the storage service answered {status} {code}"),
            }
        }
        ErrorKind::Io | ErrorKind::Connection => {
            format!("{what}: cannot reach the storage endpoint ({})", causes(e))
        }
        ErrorKind::Credential => format!(
            "{what}: no Entra ID token could be obtained ({})",
            causes(e)
        ),
        _ => format!("{what}: {e}"),
    }
}

/// An error and what caused it: the SDK's retry policy reports only that it gave up, while the
/// cause an operator can act on (a refused connection, an untrusted certificate) is below it.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// The HTTP status and storage error code of a failed call.
pub fn status_of(e: &azure_core::Error) -> (Option<u16>, Option<String>) {
    match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => (Some(u16::from(*status)), error_code.clone()),
        _ => (None, None),
    }
}

/// Runs a storage call with a deadline, so that an unreachable account fails instead of hanging.
pub async fn timed<T>(
    what: &str,
    call: impl std::future::Future<Output = azure_core::Result<T>>,
) -> Result<azure_core::Result<T>, String> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| {
        format!(
            "{what}: no answer from the storage account within {} s",
            CALL_TIMEOUT.as_secs()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_comes_from_the_host_or_from_an_emulator_path() {
        let account = |u: &str| account_of(&Url::parse(u).unwrap());
        assert_eq!(account("https://acme.blob.core.windows.net"), "acme");
        assert_eq!(
            account("https://127.0.0.1:10000/devstoreaccount1"),
            "devstoreaccount1"
        );
        assert_eq!(account("https://[::1]:10000/dev2"), "dev2");
        assert_eq!(account("https://localhost:10000/dev3"), "dev3");
    }

    /// Azurite has no role assignments, so this answer is only ever seen on a real account;
    /// the words an operator reads are checked here against the error the SDK makes of it.
    #[test]
    fn a_missing_role_is_named_with_the_roles_to_grant() {
        let e = azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status: azure_core::http::StatusCode::Forbidden,
                error_code: Some("AuthorizationPermissionMismatch".into()),
                raw_response: None,
            },
            "This request is not authorized to perform this operation using this permission.",
        );
        assert_eq!(
            explain("creating the job queue", &e),
            "creating the job queue: the identity is not allowed to do this (403 AuthorizationPermissionMismatch): \
             grant it the roles Storage Blob Data Contributor and Storage Queue Data Contributor"
        );
    }
}
