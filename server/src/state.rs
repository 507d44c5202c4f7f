//! The state every request handler shares.

use crate::config::Settings;
use crate::live::Hub;
use crate::service::Service;
use app::backend::Backend;
use app::catalog::DatasetInfo;
use app::error::{ApiError, ErrorCode};
use app::jobs::{ExportRequest, Job, Preview};
use app::status::ServerStatus;
use axum::extract::FromRef;
use futures::future::BoxFuture;
use futures::FutureExt;
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
    pub hub: Hub,
    /// The service layer; absent on a `worker` instance.
    pub service: Option<Arc<Service>>,
    /// What `/readyz` checks.
    pub readiness: Vec<crate::http::ReadyCheck>,
    /// Whether `/ws` must poll stored records (jobs run by other processes).
    pub follow_store: bool,
    /// Previews and submits per identity.
    pub rate: crate::http::limits::RateLimiter,
    /// Open `/ws` sockets per user.
    pub sockets: Arc<crate::http::limits::Sockets>,
    /// What `/metrics` reports.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}

impl Inner {
    fn service(&self) -> Result<Arc<Service>, ApiError> {
        self.service
            .clone()
            .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "This instance runs jobs only."))
    }

    /// The page's previews and submits share the API's per-identity budget.
    fn rate_limited(&self, user: &str) -> Result<(), ApiError> {
        self.rate.check(user).map_err(|wait| {
            ApiError::new(ErrorCode::TooManyRequests, crate::http::rate_message(wait))
        })
    }
}

impl Backend for Inner {
    fn status(&self) -> ServerStatus {
        ServerStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            role: self.settings.role.as_str().to_string(),
            storage: self.settings.storage.as_str().to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
        }
    }

    fn datasets(&self) -> Vec<DatasetInfo> {
        self.service
            .as_ref()
            .map(|s| s.datasets())
            .unwrap_or_default()
    }

    fn preview(
        &self,
        user: String,
        request: ExportRequest,
    ) -> BoxFuture<'static, Result<Preview, ApiError>> {
        let service = self.rate_limited(&user).and_then(|()| self.service());
        async move { service?.preview(&user, &request).await }.boxed()
    }

    fn submit(
        &self,
        user: String,
        address: Option<String>,
        request: ExportRequest,
    ) -> BoxFuture<'static, Result<Job, ApiError>> {
        let service = self.rate_limited(&user).and_then(|()| self.service());
        async move {
            service?
                .submit(&user, request, None, address.as_deref())
                .await
                .map(|(job, _)| job)
        }
        .boxed()
    }

    fn list(&self, user: String) -> BoxFuture<'static, Result<Vec<Job>, ApiError>> {
        let service = self.service();
        async move { service?.list(&user).await }.boxed()
    }

    fn cancel(
        &self,
        user: String,
        address: Option<String>,
        id: String,
    ) -> BoxFuture<'static, Result<Job, ApiError>> {
        let service = self.service();
        async move { service?.cancel(&user, &id, address.as_deref()).await }.boxed()
    }

    fn retry(
        &self,
        user: String,
        address: Option<String>,
        id: String,
    ) -> BoxFuture<'static, Result<Job, ApiError>> {
        let service = self.service();
        async move { service?.retry(&user, &id, address.as_deref()).await }.boxed()
    }
}

impl app::admin::AdminBackend for Inner {
    fn overview(&self) -> BoxFuture<'static, Result<app::admin::Overview, ApiError>> {
        let service = self.service();
        async move { service?.overview().await }.boxed()
    }

    fn cancel(
        &self,
        admin: String,
        address: Option<String>,
        id: String,
    ) -> BoxFuture<'static, Result<Job, ApiError>> {
        let service = self.service();
        async move { service?.admin_cancel(&admin, &id, address.as_deref()).await }.boxed()
    }

    fn redrive(
        &self,
        admin: String,
        address: Option<String>,
        id: String,
    ) -> BoxFuture<'static, Result<Job, ApiError>> {
        let service = self.service();
        async move { service?.redrive(&admin, &id, address.as_deref()).await }.boxed()
    }
}
