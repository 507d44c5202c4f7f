//! The state every request handler shares.

use crate::config::Settings;
use app::backend::Backend;
use app::status::ServerStatus;
use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use std::sync::Arc;
use std::time::Instant;

/// Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct AppState {
    pub leptos: LeptosOptions,
    pub inner: Arc<Inner>,
}

pub struct Inner {
    pub settings: Settings,
    pub started: Instant,
    /// Cancelled when the process starts shutting down.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}

impl Backend for Inner {
    fn status(&self) -> ServerStatus {
        ServerStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            role: self.settings.role.as_str().to_string(),
            storage: "local".to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
        }
    }
}
