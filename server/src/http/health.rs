//! Probes for orchestrators: `/healthz` says the process answers, `/readyz` that what it
//! depends on answers too, so a load balancer only sends traffic to instances that can serve it.

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

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

/// 200 when every dependency answers, 503 with the failing checks otherwise.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let checks = vec![data_dir_writable(&state).await];
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

/// The embedded store lives in the data directory: it must exist and accept writes.
async fn data_dir_writable(state: &AppState) -> Check {
    let probe = state.inner.settings.data_dir.join(".readyz");
    let result = tokio::fs::write(&probe, b"ok").await;
    let _ = tokio::fs::remove_file(&probe).await;
    Check {
        name: "data_dir",
        ok: result.is_ok(),
        detail: result.err().map(|e| {
            format!(
                "{} is not writable: {e}",
                state.inner.settings.data_dir.display()
            )
        }),
    }
}
