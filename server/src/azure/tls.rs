//! Which certificate authorities the storage endpoints' certificates must chain to.
//!
//! By default the SDK's own HTTP client checks them against the system's roots. An operator
//! whose storage sits behind a private CA (an emulator with a certificate of its own, a
//! TLS-inspecting egress proxy) names that CA in `EXPORTAL_AZURE_CA_FILE`: storage calls then
//! trust those roots and nothing else. Certificate verification itself is never turned off;
//! there is deliberately no setting for that.

use anyhow::Context as _;
use azure_core::http::Transport;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The SDK's own connect and read timeouts, kept for the client built here.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The transport for storage calls: `None` keeps the SDK's default client (system roots);
/// with a CA file, a client that trusts only the PEM certificates in it.
pub fn transport(ca_file: Option<&Path>) -> anyhow::Result<Option<Transport>> {
    let Some(path) = ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read(path)
        .with_context(|| format!("EXPORTAL_AZURE_CA_FILE: cannot read {}", path.display()))?;
    let roots = reqwest_rustls::Certificate::from_pem_bundle(&pem).map_err(|e| {
        anyhow::anyhow!(
            "EXPORTAL_AZURE_CA_FILE: {} is not a PEM certificate bundle ({e})",
            path.display()
        )
    })?;
    if roots.is_empty() {
        anyhow::bail!(
            "EXPORTAL_AZURE_CA_FILE: {} holds no PEM certificate",
            path.display()
        );
    }
    let client = reqwest_rustls::Client::builder()
        .tls_certs_only(roots)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        // As the SDK's client: storage never redirects, and a redirect must not carry a token.
        .redirect(reqwest_rustls::redirect::Policy::none())
        .build()
        .context("EXPORTAL_AZURE_CA_FILE: cannot build an HTTPS client with these roots")?;
    Ok(Some(Transport::new(Arc::new(client))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_keeps_the_system_roots() {
        assert!(transport(None).unwrap().is_none());
    }

    #[test]
    fn a_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = transport(Some(&empty)).unwrap_err().to_string();
        assert!(
            e.starts_with("EXPORTAL_AZURE_CA_FILE") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = transport(Some(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("EXPORTAL_AZURE_CA_FILE: cannot read"), "{e}");
    }
}
