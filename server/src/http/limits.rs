//! What one caller may cost the server at the HTTP edge: the size of a request body, how
//! often an identity may ask for previews and exports, and how many live sockets it may hold.
//!
//! Every table here is bounded: a stranger who mints a new identity per request (cookie mode
//! makes that free) can fill them, but never grow them, and never lock out callers already
//! tracked.

use crate::error::api_error_response;
use app::error::{ApiError, ErrorCode};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bodies of requests that carry none (cancel, retry) may still hold this much.
pub const EMPTY_BODY_LIMIT: usize = 1024;

/// Middleware: reads the whole body, up to `limit` bytes, before anything parses it; a
/// larger one is answered 413 in the API's error shape (the page's server functions, which
/// read bodies without a limit of their own, are covered too).
pub async fn limit_body(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                too_large(limit)
            } else {
                api_error_response(ApiError::bad_request("The request body could not be read."))
            }
        }
    }
}

fn too_large(limit: usize) -> Response {
    api_error_response(ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("The request body is larger than this server accepts ({limit} bytes)."),
    ))
}

/// A 429 answer that says when to come back.
pub fn too_many(message: String, retry_after: Duration) -> Response {
    let mut res = api_error_response(ApiError::new(ErrorCode::TooManyRequests, message));
    res.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(retry_after)),
    );
    res
}

/// Whole seconds, rounded up and at least 1 (`Retry-After: 0` invites an immediate retry).
pub fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Buckets {
    by_identity: HashMap<String, Bucket>,
    /// Shared by identities that arrive while the table is full.
    overflow: Bucket,
    last_prune: Instant,
}

/// A token bucket per identity: `burst` requests at once, then `per_minute` on average.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    max_identities: usize,
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    pub fn new(per_minute: u32, burst: u32, max_identities: usize) -> Self {
        let now = Instant::now();
        let burst = f64::from(burst.max(1));
        Self {
            per_sec: f64::from(per_minute.max(1)) / 60.0,
            burst,
            max_identities: max_identities.max(1),
            buckets: Mutex::new(Buckets {
                by_identity: HashMap::new(),
                overflow: Bucket {
                    tokens: burst,
                    at: now,
                },
                last_prune: now,
            }),
        }
    }

    /// Takes one token for `identity`, or says how long until one is there.
    pub fn check(&self, identity: &str) -> Result<(), Duration> {
        self.check_at(identity, Instant::now())
    }

    /// [`check`](Self::check) at a given moment, for tests.
    pub fn check_at(&self, identity: &str, now: Instant) -> Result<(), Duration> {
        let mut guard = lock(&self.buckets);
        let b = &mut *guard;
        if let Some(bucket) = b.by_identity.get_mut(identity) {
            return self.take(bucket, now);
        }
        if b.by_identity.len() >= self.max_identities {
            self.prune(b, now);
        }
        if b.by_identity.len() < self.max_identities {
            let bucket = b.by_identity.entry(identity.to_string()).or_insert(Bucket {
                tokens: self.burst,
                at: now,
            });
            self.take(bucket, now)
        } else {
            self.take(&mut b.overflow, now)
        }
    }

    fn take(&self, bucket: &mut Bucket, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_sec,
            ))
        }
    }

    /// Forgets identities whose bucket has refilled (they would start full anyway). At most
    /// once a second: a flood of new identities then costs one scan per second, not per request.
    fn prune(&self, b: &mut Buckets, now: Instant) {
        if now.saturating_duration_since(b.last_prune) < Duration::from_secs(1) {
            return;
        }
        b.last_prune = now;
        let refill = Duration::from_secs_f64(self.burst / self.per_sec);
        b.by_identity
            .retain(|_, bucket| now.saturating_duration_since(bucket.at) < refill);
    }

    /// Identities tracked right now.
    pub fn tracked(&self) -> usize {
        lock(&self.buckets).by_identity.len()
    }
}

/// Open `/ws` sockets per user.
#[derive(Default)]
pub struct Sockets {
    open: Mutex<HashMap<String, usize>>,
}

/// One open socket; dropping it frees the place.
pub struct SocketSlot {
    sockets: Arc<Sockets>,
    user: String,
}

impl Sockets {
    /// A place for one more socket of `user`, unless it already has `cap` open.
    pub fn acquire(self: &Arc<Self>, user: &str, cap: usize) -> Option<SocketSlot> {
        let mut open = lock(&self.open);
        let n = open.entry(user.to_string()).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(SocketSlot {
            sockets: self.clone(),
            user: user.to_string(),
        })
    }

    /// Sockets `user` has open.
    pub fn open(&self, user: &str) -> usize {
        lock(&self.open).get(user).copied().unwrap_or(0)
    }

    /// Sockets open, all users together.
    pub fn total(&self) -> usize {
        lock(&self.open).values().sum()
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.sockets.open);
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// A poisoned lock only means another request panicked while holding it; the counters
/// inside stay usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_requests_wait_for_tokens() {
        let r = RateLimiter::new(60, 3, 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(r.check_at("alice", t0), Ok(()));
        }
        let wait = r.check_at("alice", t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another identity has its own bucket.
        assert_eq!(r.check_at("bob", t0), Ok(()));
        // One token per second comes back.
        assert_eq!(r.check_at("alice", t0 + Duration::from_secs(1)), Ok(()));
        assert!(r.check_at("alice", t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn the_identity_table_never_grows_past_its_cap() {
        let r = RateLimiter::new(60, 1, 3);
        let t0 = Instant::now();
        for i in 0..1000 {
            let _ = r.check_at(&format!("user{i}"), t0);
        }
        assert_eq!(r.tracked(), 3);
        // Tracked identities keep their own bucket; newcomers share the overflow one, which
        // the first of them emptied.
        assert!(r.check_at("user0", t0).is_err());
        assert!(r.check_at("newcomer", t0).is_err());
        // Once the tracked buckets have refilled, they are forgotten and room is made.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(r.check_at("newcomer", later), Ok(()));
        assert_eq!(r.tracked(), 1);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn sockets_per_user_are_capped_and_freed_on_drop() {
        let s = Arc::new(Sockets::default());
        let a = s.acquire("alice", 2).unwrap();
        let b = s.acquire("alice", 2).unwrap();
        assert!(s.acquire("alice", 2).is_none());
        assert!(s.acquire("bob", 2).is_some());
        drop(a);
        assert_eq!(s.open("alice"), 1);
        let _c = s.acquire("alice", 2).unwrap();
        drop(b);
        drop(_c);
        assert_eq!(s.open("alice"), 0);
        assert!(
            lock(&s.open).is_empty(),
            "users with no socket are forgotten"
        );
    }
}
