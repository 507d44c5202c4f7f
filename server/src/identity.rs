//! Who is calling. Every request gets an [`Identity`] before any handler runs:
//!
//! - `cookie` (default): an anonymous id per browser, kept in a signed HttpOnly cookie; a
//!   missing or forged cookie gets a fresh id (a forged one can never name someone else's id,
//!   because the signature is checked with the server's key);
//! - `header`: behind an authenticating proxy, the user name in a configured header; a request
//!   without it is refused with 401.

use crate::config::{Auth, Secret};
use crate::error::api_error_response;
use app::backend::Identity;
use app::error::{ApiError, ErrorCode};
use axum::extract::{Request, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;
use std::sync::Arc;

pub const COOKIE_NAME: &str = "exportal_id";

pub struct Identifier {
    auth: Auth,
    key: Vec<u8>,
}

impl Identifier {
    /// Uses the configured secret, or one generated on first start and kept in the data
    /// directory (so identities survive restarts).
    pub fn new(auth: Auth, secret: Option<&Secret>, data_dir: &Path) -> anyhow::Result<Self> {
        let key = match secret {
            Some(s) => s.0.as_bytes().to_vec(),
            None => {
                let path = data_dir.join("cookie.key");
                match std::fs::read(&path) {
                    Ok(k) if k.len() >= 32 => k,
                    _ => {
                        let k: [u8; 32] = rand::random();
                        let hexed = hex::encode(k).into_bytes();
                        std::fs::write(&path, &hexed)?;
                        hexed
                    }
                }
            }
        };
        Ok(Self { auth, key })
    }

    fn sign(&self, id: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The id in a cookie value, if its signature is right.
    pub fn verify(&self, value: &str) -> Option<String> {
        let (id, sig) = value.split_once('.')?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(id.as_bytes());
        let sig = hex::decode(sig).ok()?;
        mac.verify_slice(&sig).ok()?;
        Some(id.to_string())
    }

    pub fn cookie_value(&self, id: &str) -> String {
        format!("{id}.{}", self.sign(id))
    }
}

fn cookie_from(req: &Request) -> Option<&str> {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v)
}

/// The middleware that attaches an [`Identity`] to every request.
pub async fn identify(
    State(identifier): State<Arc<Identifier>>,
    mut req: Request,
    next: Next,
) -> Response {
    match &identifier.auth {
        Auth::Header(name) => {
            let user = req
                .headers()
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|u| !u.is_empty() && u.len() <= 256)
                .map(str::to_string);
            match user {
                Some(user) => {
                    req.extensions_mut().insert(Identity(user));
                    next.run(req).await
                }
                None => api_error_response(ApiError::new(
                    ErrorCode::Unauthorized,
                    format!("Sign-in required: the request has no `{name}` header."),
                )),
            }
        }
        Auth::Cookie => {
            let known = cookie_from(&req).and_then(|v| identifier.verify(v));
            let fresh = known.is_none();
            let id = known.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            let secure = req
                .headers()
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
            req.extensions_mut().insert(Identity(id.clone()));
            let mut res = next.run(req).await;
            if fresh {
                let cookie = format!(
                    "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age=31536000{}",
                    identifier.cookie_value(&id),
                    if secure { "; Secure" } else { "" }
                );
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    res.headers_mut().append(SET_COOKIE, v);
                }
            }
            res
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cookies_signed_with_the_key_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identifier::new(Auth::Cookie, None, dir.path()).unwrap();
        let value = a.cookie_value("abc123");
        assert_eq!(a.verify(&value).as_deref(), Some("abc123"));
        assert_eq!(a.verify("someone-else.").as_deref(), None);
        let forged = value.replacen("abc123", "abc124", 1);
        assert_eq!(a.verify(&forged), None);

        // The generated key is kept: a restart recognises the same cookies.
        let again = Identifier::new(Auth::Cookie, None, dir.path()).unwrap();
        assert_eq!(again.verify(&value).as_deref(), Some("abc123"));
        let other =
            Identifier::new(Auth::Cookie, Some(&Secret("x".repeat(32))), dir.path()).unwrap();
        assert_eq!(other.verify(&value), None);
    }
}
