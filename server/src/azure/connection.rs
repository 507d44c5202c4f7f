//! Azure Storage account settings: parsing a connection string (or `UseDevelopmentStorage=true`
//! for Azurite) into endpoints and a credential. The official SDK crates take neither; this is
//! the small piece they leave to the application.

use crate::config::Secret;
use std::collections::HashMap;

/// Azurite's well-known development account (public, documented by Microsoft).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How requests to the account are authorised.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyCredential {
    /// The account key (decoded): requests are signed with Shared Key; links are service SAS.
    Key(Vec<u8>),
    /// A shared access signature (query string without `?`), appended to every URL as given.
    Sas(Secret),
}

impl std::fmt::Debug for KeyCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyCredential::Key(_) => f.write_str("Key(***)"),
            KeyCredential::Sas(_) => f.write_str("Sas(***)"),
        }
    }
}

/// A storage account from a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub account: String,
    /// Without a trailing slash (a trailing slash makes the SDK build `//name` URLs).
    pub blob_endpoint: String,
    pub queue_endpoint: String,
    pub credential: KeyCredential,
    /// True for Azurite: links may be plain http.
    pub emulator: bool,
}

/// Parses `Key=Value;…` (keys case-insensitive, values may contain `=`).
pub fn parse_connection_string(text: &str) -> Result<ConnectionInfo, String> {
    let mut map: HashMap<String, String> = HashMap::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("`{}` is not Key=Value", redact_part(part)))?;
        map.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let get = |k: &str| map.get(k).cloned();
    if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        let proxy = get("developmentstorageproxyuri").unwrap_or_else(|| "http://127.0.0.1".into());
        let proxy = proxy.trim_end_matches('/');
        return Ok(ConnectionInfo {
            account: DEV_ACCOUNT.into(),
            blob_endpoint: format!("{proxy}:10000/{DEV_ACCOUNT}"),
            queue_endpoint: format!("{proxy}:10001/{DEV_ACCOUNT}"),
            credential: KeyCredential::Key(decode_key(DEV_KEY)?),
            emulator: true,
        });
    }
    let account = get("accountname").ok_or("AccountName is missing")?;
    let protocol = get("defaultendpointsprotocol").unwrap_or_else(|| "https".into());
    if protocol != "https" && protocol != "http" {
        return Err(format!(
            "DefaultEndpointsProtocol must be https or http, not `{protocol}`"
        ));
    }
    let suffix = get("endpointsuffix").unwrap_or_else(|| "core.windows.net".into());
    let endpoint = |key: &str, service: &str| -> String {
        get(key)
            .unwrap_or_else(|| format!("{protocol}://{account}.{service}.{suffix}"))
            .trim_end_matches('/')
            .to_string()
    };
    let blob_endpoint = endpoint("blobendpoint", "blob");
    let queue_endpoint = endpoint("queueendpoint", "queue");
    let credential = match (get("accountkey"), get("sharedaccesssignature")) {
        (Some(key), _) => KeyCredential::Key(decode_key(&key)?),
        (None, Some(sas)) => KeyCredential::Sas(Secret(sas.trim_start_matches('?').to_string())),
        (None, None) => return Err("neither AccountKey nor SharedAccessSignature is given".into()),
    };
    let emulator = blob_endpoint.contains("127.0.0.1") || blob_endpoint.contains("localhost");
    Ok(ConnectionInfo {
        account,
        blob_endpoint,
        queue_endpoint,
        credential,
        emulator,
    })
}

fn decode_key(key: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| "AccountKey is not valid base64".to_string())
}

/// Never echo a secret back in an error message: a long part shows its first 8 characters
/// only (characters, not bytes: a byte index could fall inside a multi-byte character).
fn redact_part(part: &str) -> String {
    if part.chars().count() > 12 {
        let head: String = part.chars().take(8).collect();
        format!("{head}…")
    } else {
        part.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_storage_means_azurite_defaults() {
        let c = parse_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(c.account, "devstoreaccount1");
        assert_eq!(c.blob_endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(c.queue_endpoint, "http://127.0.0.1:10001/devstoreaccount1");
        assert!(matches!(c.credential, KeyCredential::Key(ref k) if k.len() == 64));
        assert!(c.emulator);
    }

    #[test]
    fn explicit_endpoints_and_key() {
        let c = parse_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:41000/devstoreaccount1/;QueueEndpoint=http://127.0.0.1:41001/devstoreaccount1;",
        )
        .unwrap();
        assert_eq!(
            c.blob_endpoint, "http://127.0.0.1:41000/devstoreaccount1",
            "trailing slash removed"
        );
        assert_eq!(c.queue_endpoint, "http://127.0.0.1:41001/devstoreaccount1");
    }

    #[test]
    fn cloud_endpoints_come_from_protocol_and_suffix() {
        let c = parse_connection_string(
            "AccountName=acme;AccountKey=AAAA;EndpointSuffix=core.chinacloudapi.cn",
        )
        .unwrap();
        assert_eq!(c.blob_endpoint, "https://acme.blob.core.chinacloudapi.cn");
        assert_eq!(c.queue_endpoint, "https://acme.queue.core.chinacloudapi.cn");
        assert!(!c.emulator);
    }

    #[test]
    fn a_sas_is_used_as_given_and_never_printed() {
        let c = parse_connection_string(
            "AccountName=acme;SharedAccessSignature=?sv=2024-11-04&sig=abc%3D",
        )
        .unwrap();
        assert_eq!(
            c.credential,
            KeyCredential::Sas(Secret("sv=2024-11-04&sig=abc%3D".into()))
        );
        assert!(!format!("{c:?}").contains("abc"));
    }

    #[test]
    fn mistakes_are_named_without_leaking_the_key() {
        assert_eq!(
            parse_connection_string("AccountKey=AAAA").unwrap_err(),
            "AccountName is missing"
        );
        assert!(parse_connection_string("AccountName=a")
            .unwrap_err()
            .contains("neither AccountKey"));
        assert!(parse_connection_string("AccountName=a;AccountKey=!!!")
            .unwrap_err()
            .contains("base64"));
        let e = parse_connection_string("AccountName=a;AccountKeyWithoutEquals-supersecret")
            .unwrap_err();
        assert!(!e.contains("supersecret"), "{e}");
    }

    #[test]
    fn a_non_ascii_part_is_redacted_on_character_boundaries() {
        // 'é' is two bytes: byte 8 falls inside the fifth one.
        let e = parse_connection_string("ééééééééééééééé-secret").unwrap_err();
        assert!(e.contains("éééééééé…"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        assert_eq!(
            redact_part("日本語のキーです、秘密のキー"),
            "日本語のキーです…"
        );
        assert_eq!(redact_part("short-ключ"), "short-ключ");
    }
}
