//! The HTTP surface: the Leptos page and its server functions, the REST API and its OpenAPI
//! document, health probes, `/metrics` and `/ws`. Everything but the probes, `/metrics` and the
//! document runs behind the identity middleware.

mod admin;
mod api;
pub mod assets;
mod health;
pub mod limits;
mod live;
mod metrics;
pub mod openapi;
mod server_fns;

pub use api::{content_disposition, rate_message};

/// The (method, path) of every REST route, the admin routes included: what the OpenAPI
/// document must describe.
pub fn route_list() -> Vec<(axum::http::Method, &'static str)> {
    api::route_list()
        .into_iter()
        .chain(admin::route_list())
        .collect()
}
pub use health::ReadyCheck;

use crate::identity::{identify, Identifier};
use crate::state::AppState;
use app::backend::SharedBackend;
use axum::routing::get;
use axum::Router;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::sync::Arc;
use tower_http::trace::TraceLayer;

/// The whole application router.
pub fn router(state: AppState, identifier: Arc<Identifier>) -> Router {
    // Outside the identity middleware: probes and the API's description need no user.
    let datasets = (state.inner.service.as_ref())
        .map(|s| s.datasets())
        .unwrap_or_default();
    let probes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::scrape))
        .merge(openapi::routes(&state.inner.settings, &datasets));
    let count_requests =
        axum::middleware::from_fn_with_state(state.inner.metrics.clone(), metrics::track);
    if state.inner.service.is_none() {
        // A worker instance answers its probes only.
        return probes
            .layer(count_requests)
            .layer(TraceLayer::new_for_http())
            .with_state(state);
    }
    let routes = generate_route_list(app::App);
    let backend: SharedBackend = state.inner.clone();
    let admin_backend: app::admin::SharedAdminBackend = state.inner.clone();
    let leptos = state.leptos.clone();
    let max_body = state.inner.settings.edge.max_body;
    // What no route and no file answers: the page's "not found", rendered by Leptos.
    let not_found = Router::new()
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(
            app::shell,
        ))
        .with_state(state.clone());
    let hashed = assets::Hashed(state.leptos.hash_files);
    let app = Router::new()
        .route(app::live::WS_PATH, get(live::upgrade))
        .merge(api::routes(max_body))
        .merge(admin::routes())
        .leptos_routes_with_context(
            &state,
            routes,
            move || {
                provide_context(backend.clone());
                provide_context(admin_backend.clone());
            },
            move || app::shell(leptos.clone()),
        )
        .fallback_service(assets::files(&state.leptos.site_root, not_found))
        .layer(axum::middleware::from_fn(server_fns::error_status))
        .layer(assets::compression())
        .layer(axum::middleware::from_fn_with_state(identifier, identify))
        // Outermost: no body larger than this is read by anything (the page's server
        // functions included, which set no limit of their own).
        .layer(axum::middleware::from_fn_with_state(
            max_body,
            limits::limit_body,
        ));
    app.merge(probes)
        .layer(axum::middleware::from_fn_with_state(
            hashed,
            assets::cache_control,
        ))
        .layer(count_requests)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
