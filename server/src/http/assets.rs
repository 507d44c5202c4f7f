//! Static files and caching. The site's files (the wasm module, its JS glue, the stylesheet,
//! `public/`) are served from the site root with the brotli or gzip copy made at build time
//! (`cargo leptos build --release --precompress`) when the browser accepts one; the page and
//! the API's JSON are compressed as they are sent.
//!
//! Caching: with hashed file names (`hash-files`), a `/pkg/` file's name changes whenever its
//! content does, so browsers may keep it for a year without asking again. Everything else is
//! `no-cache`: kept, but revalidated (static files answer `304 Not Modified` from their
//! Last-Modified date), so a new release is seen at once. Responses that set their own policy
//! (downloads: `private, no-store`) keep it.

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_ENCODING, VARY};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, Version};
use axum::middleware::Next;
use tower_http::compression::predicate::{DefaultPredicate, Predicate};
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;

pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
pub const REVALIDATE: &str = "no-cache";

/// The site's files, precompressed copies first; `not_found` answers what is not there.
pub fn files<F>(site_root: &str, not_found: F) -> ServeDir<F> {
    ServeDir::new(site_root)
        .precompressed_br()
        .precompressed_gzip()
        .fallback(not_found)
}

/// Whether the files under `/pkg/` have content hashes in their names.
#[derive(Clone, Copy)]
pub struct Hashed(pub bool);

/// Adds the cache policy to every response that has none of its own.
pub async fn cache_control(
    State(Hashed(hashed)): State<Hashed>,
    req: Request,
    next: Next,
) -> axum::response::Response {
    let immutable = hashed && req.uri().path().starts_with("/pkg/");
    let mut res = next.run(req).await;
    // A precompressed file differs by Accept-Encoding: caches must keep one copy per encoding.
    if res.headers().contains_key(CONTENT_ENCODING) && !res.headers().contains_key(VARY) {
        res.headers_mut()
            .insert(VARY, HeaderValue::from_static("accept-encoding"));
    }
    if !res.headers().contains_key(CACHE_CONTROL) {
        let policy = if immutable && res.status().is_success() {
            IMMUTABLE
        } else {
            REVALIDATE
        };
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static(policy));
    }
    res
}

/// Compresses what is made per request (the page, JSON), never a download: a file may be
/// large and is already gzipped if its owner asked, and it keeps its exact length.
pub fn compression() -> CompressionLayer<impl Predicate> {
    let not_a_download = |_: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions| {
        !headers.contains_key(CONTENT_DISPOSITION)
    };
    CompressionLayer::new().compress_when(DefaultPredicate::new().and(not_a_download))
}
