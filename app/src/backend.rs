//! The seam between the page's server functions and the server crate.
//!
//! Server functions are compiled into this crate, but the services they call (storage, queue,
//! worker) live in `server`. The server implements [`Backend`] and provides it as Leptos
//! context, so this crate never depends on the adapters and the adapters never on Leptos.

#[cfg(feature = "ssr")]
pub use ssr::*;

#[cfg(feature = "ssr")]
mod ssr {
    use crate::catalog::DatasetInfo;
    use crate::error::{ApiError, ErrorCode};
    use crate::jobs::{ExportRequest, Job, Preview};
    use crate::status::ServerStatus;
    use futures::future::BoxFuture;
    use std::sync::Arc;

    /// Who is calling; the server's identity middleware puts it into every request.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Identity(pub String);

    /// The caller's network address as the server trusts it (for the audit trail).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Address(pub String);

    /// The caller's address, when the server knows it.
    pub fn current_address() -> Option<String> {
        leptos::prelude::use_context::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Address>().map(|a| a.0.clone()))
    }

    /// Put beside the [`Identity`] of a caller who is an admin (`EXPORTAL_ADMINS`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Admin;

    /// What the server offers the page. Futures are `'static` so that implementations hand
    /// them owned data (the service is shared behind an `Arc`).
    pub trait Backend: Send + Sync + 'static {
        fn status(&self) -> ServerStatus;
        fn datasets(&self) -> Vec<DatasetInfo>;
        fn preview(
            &self,
            user: String,
            request: ExportRequest,
        ) -> BoxFuture<'static, Result<Preview, ApiError>>;
        fn submit(
            &self,
            user: String,
            address: Option<String>,
            request: ExportRequest,
        ) -> BoxFuture<'static, Result<Job, ApiError>>;
        fn list(&self, user: String) -> BoxFuture<'static, Result<Vec<Job>, ApiError>>;
        fn cancel(
            &self,
            user: String,
            address: Option<String>,
            id: String,
        ) -> BoxFuture<'static, Result<Job, ApiError>>;
        fn retry(
            &self,
            user: String,
            address: Option<String>,
            id: String,
        ) -> BoxFuture<'static, Result<Job, ApiError>>;
    }

    /// The backend handle the server puts into each request's context.
    pub type SharedBackend = Arc<dyn Backend>;

    /// The backend of the current request, or an internal error if the server forgot to
    /// provide one (a wiring bug, reported instead of panicking inside a request).
    pub fn use_backend() -> Result<SharedBackend, ApiError> {
        leptos::prelude::use_context::<SharedBackend>().ok_or_else(|| {
            leptos::logging::error!("no Backend in the server-function context");
            ApiError::internal()
        })
    }

    /// The caller of the current server function.
    pub fn current_user() -> Result<String, ApiError> {
        leptos::prelude::use_context::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Identity>().cloned())
            .map(|identity| identity.0)
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "Sign-in required."))
    }
}
