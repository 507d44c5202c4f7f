//! The seam between the page's server functions and the server crate.
//!
//! Server functions are compiled into this crate, but the services they call (storage, queue,
//! worker) live in `server`. The server implements [`Backend`] and provides it as Leptos
//! context, so this crate never depends on the adapters and the adapters never on Leptos.

#[cfg(feature = "ssr")]
pub use ssr::*;

#[cfg(feature = "ssr")]
mod ssr {
    use crate::error::ApiError;
    use crate::status::ServerStatus;
    use std::sync::Arc;

    /// What the server offers the page.
    pub trait Backend: Send + Sync + 'static {
        fn status(&self) -> ServerStatus;
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
}
