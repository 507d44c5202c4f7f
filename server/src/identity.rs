//! Who is calling. Every request gets an [`Identity`] before any handler runs:
//!
//! - `cookie` (default): an anonymous id per browser, kept in a signed HttpOnly cookie; a
//!   missing or forged cookie gets a fresh id (a forged one can never name someone else's id,
//!   because the signature is checked with the server's key). Over https the cookie is
//!   `__Host-exportal_id` and `Secure`; the older `exportal_id` is still read, and replaced.
//! - `header`: behind an authenticating proxy, the user name in a configured header; a request
//!   without it, or with more than one (a proxy that appends instead of replacing would let
//!   the client choose), is refused with 401.
//!
//! The proxy proves itself by a shared secret header (`EXPORTAL_PROXY_SECRET`) and/or by its
//! address (`EXPORTAL_TRUSTED_PROXIES`); `X-Forwarded-Proto` is believed only from a trusted
//! peer when peers are configured.

use crate::config::{Admins, Auth, Edge, IpRange, Secret};
use crate::error::api_error_response;
use app::backend::{Address, Admin, Identity};
use app::error::{ApiError, ErrorCode};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

/// The cookie over https: `__Host-` makes the browser refuse it unless it is Secure, has
/// `Path=/` and no `Domain`, so a sibling subdomain can't plant one.
pub const COOKIE_NAME: &str = "__Host-exportal_id";
/// The cookie over plain http, and the name browsers may still hold from older versions.
pub const LEGACY_COOKIE_NAME: &str = "exportal_id";
/// The header in which the proxy sends `EXPORTAL_PROXY_SECRET`.
pub const PROXY_SECRET_HEADER: &str = "x-exportal-proxy-secret";
/// The longest user name accepted from the identity header.
const MAX_USER_LEN: usize = 256;

pub struct Identifier {
    auth: Auth,
    key: Vec<u8>,
    /// SHA-256 of the proxy secret: comparing digests takes the same time for every guess.
    proxy_secret: Option<[u8; 32]>,
    trusted: Vec<IpRange>,
    public_https: bool,
    /// In cookie mode a new identity costs nothing (drop the cookie, get another), so the
    /// per-identity budget alone bounds nothing for a caller who never keeps one. Requests that
    /// act (POST: previews, submits, server functions) without a valid cookie are charged here,
    /// per peer address, on the same terms. A browser keeps its cookie after its first page
    /// view and is never charged.
    cookieless: crate::http::limits::RateLimiter,
    admins: Admins,
}

/// Why header mode refused a request (said to the caller: it names no secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Sign-in required: the request has no `{0}` header.")]
    Missing(String),
    #[error("The request has more than one `{0}` header; only one user may be named.")]
    Ambiguous(String),
    #[error("The `{0}` header is not a valid user name.")]
    Invalid(String),
    #[error("This server accepts requests only through its proxy.")]
    NotFromProxy,
}

impl Identifier {
    /// Uses the configured secret, or one generated on first start and kept in the data
    /// directory (so identities survive restarts).
    pub fn new(
        auth: Auth,
        secret: Option<&Secret>,
        data_dir: &Path,
        edge: &Edge,
    ) -> anyhow::Result<Self> {
        let key = match secret {
            Some(s) => s.0.as_bytes().to_vec(),
            None => load_or_create_key(&data_dir.join("cookie.key"))?,
        };
        Ok(Self {
            auth,
            key,
            proxy_secret: edge
                .proxy_secret
                .as_ref()
                .map(|s| Sha256::digest(s.0.as_bytes()).into()),
            trusted: edge.trusted_proxies.clone(),
            public_https: edge.public_https(),
            cookieless: crate::http::limits::RateLimiter::new(
                edge.rate_per_minute,
                edge.rate_burst,
                edge.rate_identities,
            ),
            admins: Admins::default(),
        })
    }

    /// The caller's address: the peer's, or, when the peer is a configured trusted proxy, the
    /// nearest address in `X-Forwarded-For` that is not one of the trusted proxies (the
    /// entries further left were written by the client and prove nothing).
    pub fn client_address(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        let peer = peer?;
        if self.trusted.is_empty() || !self.peer_trusted(Some(peer)) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .take(64)
            .map(|a| a.trim().parse::<IpAddr>().ok())
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|ip| !self.trusted.iter().any(|r| r.contains(*ip)))
                .unwrap_or(peer),
        )
    }

    /// Who, besides ordinary use, may use the admin routes.
    pub fn with_admins(mut self, admins: Admins) -> Self {
        self.admins = admins;
        self
    }

    /// Whether `user`, whose request carries `headers`, is an admin: named in the list, or (in
    /// header mode) listed by the proxy in the admin group.
    pub fn is_admin(&self, user: &str, headers: &HeaderMap) -> bool {
        if self.admins.users.iter().any(|u| u == user) {
            return true;
        }
        let Some((header, group)) = &self.admins.group else {
            return false;
        };
        headers
            .get_all(header.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|g| g.trim() == group)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; the error case cannot happen.
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length")
    }

    fn sign(&self, id: &str) -> String {
        let mut mac = self.mac();
        mac.update(id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The id in a cookie value, if its signature is right.
    pub fn verify(&self, value: &str) -> Option<String> {
        let (id, sig) = value.split_once('.')?;
        let mut mac = self.mac();
        mac.update(id.as_bytes());
        let sig = hex::decode(sig).ok()?;
        mac.verify_slice(&sig).ok()?;
        Some(id.to_string())
    }

    pub fn cookie_value(&self, id: &str) -> String {
        format!("{id}.{}", self.sign(id))
    }

    /// Whether the peer may speak for users (and for the scheme): any peer when no trusted
    /// proxies are configured.
    fn peer_trusted(&self, peer: Option<IpAddr>) -> bool {
        self.trusted.is_empty()
            || peer.is_some_and(|ip| self.trusted.iter().any(|r| r.contains(ip)))
    }

    /// Whether the request carries the proxy secret, if one is configured. The header must
    /// be there exactly once.
    pub fn proxy_secret_ok(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.proxy_secret else {
            return true;
        };
        let mut values = headers.get_all(PROXY_SECRET_HEADER).iter();
        let (Some(given), None) = (values.next(), values.next()) else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        // Constant time: every byte is compared whatever the first difference.
        given
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Whether the caller reached us over https, as far as we may believe it.
    fn https(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> bool {
        self.public_https
            || (self.peer_trusted(peer)
                && headers
                    .get("x-forwarded-proto")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")))
    }
}

/// Reads the key, or creates it readable by this user only (mode 0600 from the moment the
/// file exists: it is never written with the umask's mode first).
fn load_or_create_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    use std::io::Write;
    match std::fs::read(path) {
        Ok(k) if k.len() >= 32 => {
            restrict_existing(path);
            return Ok(k);
        }
        // Too short to be ours (a truncated write): replaced below.
        Ok(_) => std::fs::remove_file(path)
            .with_context(|| format!("cannot replace {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let k: [u8; 32] = rand::random();
    let hexed = hex::encode(k).into_bytes();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(&hexed)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(hexed)
        }
        // Another instance sharing the directory created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// A key file left readable by others by an older version is made private.
fn restrict_existing(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the cookie key was readable by others; making it private (0600)");
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The user named by the identity header `name`: exactly one header, valid visible text
/// without commas (a comma-joined header is the same as two headers), 1 to 256 bytes.
pub fn header_identity(headers: &HeaderMap, name: &str) -> Result<String, Refusal> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Err(Refusal::Missing(name.to_string()));
    };
    if values.next().is_some() {
        return Err(Refusal::Ambiguous(name.to_string()));
    }
    let user = value
        .to_str()
        .map_err(|_| Refusal::Invalid(name.to_string()))?
        .trim();
    if user.is_empty() {
        return Err(Refusal::Missing(name.to_string()));
    }
    if user.contains(',') {
        return Err(Refusal::Ambiguous(name.to_string()));
    }
    if user.len() > MAX_USER_LEN || user.chars().any(char::is_control) {
        return Err(Refusal::Invalid(name.to_string()));
    }
    Ok(user.to_string())
}

/// The identity cookie's value and whether it came under the legacy name; the `__Host-` one
/// wins when both are there.
pub fn cookie_from(headers: &HeaderMap) -> Option<(&str, bool)> {
    let mut legacy = None;
    let pairs = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='));
    for (k, v) in pairs {
        if k == COOKIE_NAME {
            return Some((v, false));
        }
        if k == LEGACY_COOKIE_NAME && legacy.is_none() {
            legacy = Some(v);
        }
    }
    legacy.map(|v| (v, true))
}

/// The `Set-Cookie` value for `value`.
pub fn set_cookie(value: &str, https: bool) -> String {
    if https {
        format!("{COOKIE_NAME}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=31536000")
    } else {
        format!("{LEGACY_COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=31536000")
    }
}

fn refuse(refusal: Refusal) -> Response {
    api_error_response(ApiError::new(ErrorCode::Unauthorized, refusal.to_string()))
}

/// The middleware that attaches an [`Identity`] to every request.
pub async fn identify(
    State(identifier): State<Arc<Identifier>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if !identifier.proxy_secret_ok(req.headers()) {
        tracing::warn!(?peer, "request without the proxy secret refused");
        return refuse(Refusal::NotFromProxy);
    }
    // The secret is for us alone: nothing after this point sees it.
    req.headers_mut().remove(PROXY_SECRET_HEADER);
    if let Some(address) = identifier.client_address(req.headers(), peer) {
        req.extensions_mut().insert(Address(address.to_string()));
    }
    match &identifier.auth {
        Auth::Header(name) => {
            if !identifier.peer_trusted(peer) {
                tracing::warn!(
                    ?peer,
                    "request from a peer that is not a trusted proxy refused"
                );
                return refuse(Refusal::NotFromProxy);
            }
            match header_identity(req.headers(), name) {
                Ok(user) => {
                    if identifier.is_admin(&user, req.headers()) {
                        req.extensions_mut().insert(Admin);
                    }
                    req.extensions_mut().insert(Identity(user));
                    next.run(req).await
                }
                Err(refusal) => refuse(refusal),
            }
        }
        Auth::Cookie => {
            let found = cookie_from(req.headers())
                .and_then(|(v, legacy)| identifier.verify(v).map(|id| (id, legacy)));
            let https = identifier.https(req.headers(), peer);
            // A browser holding the legacy cookie over https moves to the `__Host-` one.
            if found.is_none() && req.method() == axum::http::Method::POST {
                let key =
                    peer.map_or_else(|| "peer:unknown".to_string(), |ip| format!("peer:{ip}"));
                if let Err(wait) = identifier.cookieless.check(&key) {
                    return crate::http::limits::too_many(crate::http::rate_message(wait), wait);
                }
            }
            let (id, set, clear_legacy) = match found {
                Some((id, legacy)) => (id, legacy && https, legacy && https),
                None => (uuid::Uuid::new_v4().simple().to_string(), true, false),
            };
            if identifier.is_admin(&id, req.headers()) {
                req.extensions_mut().insert(Admin);
            }
            req.extensions_mut().insert(Identity(id.clone()));
            let mut res = next.run(req).await;
            if set {
                let cookie = set_cookie(&identifier.cookie_value(&id), https);
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    res.headers_mut().append(SET_COOKIE, v);
                }
            }
            if clear_legacy {
                res.headers_mut().append(
                    SET_COOKIE,
                    HeaderValue::from_static(
                        "exportal_id=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
                    ),
                );
            }
            res
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge() -> Edge {
        Edge::default()
    }

    #[test]
    fn only_cookies_signed_with_the_key_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identifier::new(Auth::Cookie, None, dir.path(), &edge()).unwrap();
        let value = a.cookie_value("abc123");
        assert_eq!(a.verify(&value).as_deref(), Some("abc123"));
        assert_eq!(a.verify("someone-else.").as_deref(), None);
        let forged = value.replacen("abc123", "abc124", 1);
        assert_eq!(a.verify(&forged), None);

        // The generated key is kept: a restart recognises the same cookies.
        let again = Identifier::new(Auth::Cookie, None, dir.path(), &edge()).unwrap();
        assert_eq!(again.verify(&value).as_deref(), Some("abc123"));
        let other = Identifier::new(
            Auth::Cookie,
            Some(&Secret("x".repeat(32))),
            dir.path(),
            &edge(),
        )
        .unwrap();
        assert_eq!(other.verify(&value), None);
    }

    #[cfg(unix)]
    #[test]
    fn the_generated_key_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        Identifier::new(Auth::Cookie, None, dir.path(), &edge()).unwrap();
        let mode = std::fs::metadata(dir.path().join("cookie.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");

        // A key left world-readable by an older version is kept, and made private.
        let old = tempfile::tempdir().unwrap();
        let path = old.path().join("cookie.key");
        std::fs::write(&path, "a".repeat(64)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let id = Identifier::new(Auth::Cookie, None, old.path(), &edge()).unwrap();
        assert_eq!(id.key, "a".repeat(64).into_bytes());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn header_mode_takes_exactly_one_plain_user_name() {
        let name = "x-forwarded-user";
        assert_eq!(
            header_identity(&headers(&[(name, " alice ")]), name),
            Ok("alice".into())
        );
        assert_eq!(
            header_identity(&headers(&[]), name),
            Err(Refusal::Missing(name.into()))
        );
        assert_eq!(
            header_identity(&headers(&[(name, "  ")]), name),
            Err(Refusal::Missing(name.into()))
        );
        assert_eq!(
            header_identity(&headers(&[(name, "alice"), (name, "mallory")]), name),
            Err(Refusal::Ambiguous(name.into()))
        );
        assert_eq!(
            header_identity(&headers(&[(name, "alice, mallory")]), name),
            Err(Refusal::Ambiguous(name.into()))
        );
        assert_eq!(
            header_identity(&headers(&[(name, &"a".repeat(257))]), name),
            Err(Refusal::Invalid(name.into()))
        );
    }

    #[test]
    fn the_proxy_secret_must_be_sent_once_and_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let edge = Edge {
            proxy_secret: Some(Secret("proxy-secret-0123456789".into())),
            ..Edge::default()
        };
        let id = Identifier::new(
            Auth::Header("x-forwarded-user".into()),
            None,
            dir.path(),
            &edge,
        )
        .unwrap();
        let ok = "proxy-secret-0123456789";
        assert!(id.proxy_secret_ok(&headers(&[(PROXY_SECRET_HEADER, ok)])));
        assert!(!id.proxy_secret_ok(&headers(&[])));
        assert!(!id.proxy_secret_ok(&headers(&[(PROXY_SECRET_HEADER, "proxy-secret-012345678")])));
        assert!(!id.proxy_secret_ok(&headers(&[
            (PROXY_SECRET_HEADER, ok),
            (PROXY_SECRET_HEADER, ok)
        ])));
        // Without a configured secret, nothing is asked.
        let open = Identifier::new(Auth::Cookie, None, dir.path(), &Edge::default()).unwrap();
        assert!(open.proxy_secret_ok(&headers(&[])));
    }

    #[test]
    fn forwarded_proto_is_believed_only_from_trusted_peers_when_peers_are_configured() {
        let dir = tempfile::tempdir().unwrap();
        let h = headers(&[("x-forwarded-proto", "https")]);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let far: IpAddr = "192.0.2.7".parse().unwrap();
        let any = Identifier::new(Auth::Cookie, None, dir.path(), &Edge::default()).unwrap();
        assert!(any.https(&h, Some(far)));
        assert!(!any.https(&HeaderMap::new(), Some(far)));
        let edge = Edge {
            trusted_proxies: vec![IpRange::parse("127.0.0.0/8").unwrap()],
            ..Edge::default()
        };
        let strict = Identifier::new(Auth::Cookie, None, dir.path(), &edge).unwrap();
        assert!(strict.https(&h, Some(lo)));
        assert!(!strict.https(&h, Some(far)));
        assert!(!strict.https(&h, None));
        let public = Edge {
            public_origin: Some("https://exports.example.com".into()),
            ..Edge::default()
        };
        let public = Identifier::new(Auth::Cookie, None, dir.path(), &public).unwrap();
        assert!(public.https(&HeaderMap::new(), None));
    }

    #[test]
    fn the_host_cookie_wins_over_the_legacy_one() {
        assert_eq!(cookie_from(&headers(&[])), None);
        assert_eq!(
            cookie_from(&headers(&[("cookie", "a=b; exportal_id=old.sig")])),
            Some(("old.sig", true))
        );
        assert_eq!(
            cookie_from(&headers(&[(
                "cookie",
                "exportal_id=old.sig; __Host-exportal_id=new.sig"
            )])),
            Some(("new.sig", false))
        );
        assert!(set_cookie("v", true).starts_with("__Host-exportal_id=v; Path=/; Secure;"));
        assert!(!set_cookie("v", false).contains("Secure"));
        assert!(!set_cookie("v", true).contains("Domain"));
    }

    /// A short fuzz run of the header and cookie parsing: any bytes a client can put in a
    /// header value (visible ASCII, obs-text, tabs, spaces) never panic, and what is accepted
    /// keeps its promises.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
            let byte = prop_oneof![
                4 => 0x20u8..0x7f,
                1 => 0x80u8..=0xff,
                1 => Just(b'\t'),
                1 => prop::sample::select(vec![b',', b';', b'=', b'.', b' ']),
            ];
            prop::collection::vec(byte, 0..300)
        }

        fn map(name: &str, values: &[Vec<u8>]) -> HeaderMap {
            let mut h = HeaderMap::new();
            for v in values {
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    h.append(
                        axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                        v,
                    );
                }
            }
            h
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn identity_headers_never_panic_and_accept_only_one_plain_name(
                values in prop::collection::vec(header_bytes(), 0..4)
            ) {
                let name = "x-forwarded-user";
                let h = map(name, &values);
                if let Ok(user) = header_identity(&h, name) {
                    prop_assert_eq!(h.get_all(name).iter().count(), 1);
                    prop_assert!(!user.is_empty() && user.len() <= MAX_USER_LEN);
                    prop_assert!(!user.contains(','));
                    prop_assert_eq!(user.trim(), user.as_str());
                }
            }

            #[test]
            fn cookies_never_panic_and_forged_ones_are_never_accepted(
                values in prop::collection::vec(header_bytes(), 0..4),
                id in "[a-f0-9]{1,40}",
            ) {
                let dir = tempfile::tempdir().unwrap();
                let identifier = Identifier::new(
                    Auth::Cookie,
                    Some(&Secret("k".repeat(32))),
                    dir.path(),
                    &Edge::default(),
                )
                .unwrap();
                let h = map("cookie", &values);
                if let Some((value, _)) = cookie_from(&h) {
                    // Random bytes are never a valid signature.
                    prop_assert_eq!(identifier.verify(value), None);
                }
                // A signed value round-trips among any other cookies.
                let signed = identifier.cookie_value(&id);
                let mut h = map("cookie", &values);
                h.append(COOKIE, HeaderValue::from_str(&format!("{COOKIE_NAME}={signed}")).unwrap());
                let found = cookie_from(&h).and_then(|(v, _)| identifier.verify(v));
                // An earlier random `__Host-` cookie wins the lookup, and then fails to verify.
                prop_assert!(found.is_none() || found.as_deref() == Some(id.as_str()));
            }
        }
    }
}
