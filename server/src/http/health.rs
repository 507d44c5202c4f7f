//! Probes for orchestrators: `/healthz` says the process answers, `/readyz` that what it
//! depends on answers too, so a load balancer only sends traffic to instances that can serve it.

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use futures::future::BoxFuture;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// One dependency check: a name and a probe that says what is wrong, if anything.
#[derive(Clone)]
pub struct ReadyCheck {
    pub name: &'static str,
    pub probe: Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
}

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
    version: &'static str,
}

pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize)]
pub struct Readiness {
    status: &'static str,
    checks: Vec<Check>,
}

#[derive(Serialize)]
pub struct Check {
    name: &'static str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// 200 when every dependency answers (within 5 s), 503 with the failing checks otherwise.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let probes = state.inner.readiness.iter().map(|c| async move {
        let result = match tokio::time::timeout(Duration::from_secs(5), (c.probe)()).await {
            Ok(r) => r,
            Err(_) => Err("no answer within 5 s".to_string()),
        };
        Check {
            name: c.name,
            ok: result.is_ok(),
            detail: result.err(),
        }
    });
    let checks = futures::future::join_all(probes).await;
    let ok = checks.iter().all(|c| c.ok);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if ok { "ready" } else { "unavailable" },
            checks,
        }),
    )
}
