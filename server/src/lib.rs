//! Exportal's server: one binary that serves the page, the API and the live channel, and runs
//! export jobs, in the role its settings give it.
//!
//! `main.rs` only parses the command line; [`start`] is the whole process, so tests spawn the
//! real thing on port 0 with a fresh data directory.

pub mod config;
pub mod error;
mod http;
pub mod state;
pub mod telemetry;

use anyhow::Context;
use config::Settings;
use leptos::config::LeptosOptions;
use state::{AppState, Inner};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A started server.
pub struct Running {
    /// The address it listens on (the real port when port 0 was asked for).
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting connections, closes live channels and waits for open requests, up to
    /// the configured grace period.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("server task panicked")?
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task panicked")?
    }
}

/// Binds the listener and starts serving in the background.
pub async fn start(settings: Settings, mut leptos: LeptosOptions) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (EXPORTAL_DATA_DIR)",
            settings.data_dir.display()
        )
    })?;
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("cannot listen on {} (EXPORTAL_ADDR)", settings.addr))?;
    let addr = listener.local_addr()?;
    leptos.site_addr = addr;

    let shutdown = CancellationToken::new();
    let grace = settings.shutdown_grace;
    let state = AppState {
        leptos,
        inner: Arc::new(Inner {
            settings,
            started: Instant::now(),
            shutdown: shutdown.clone(),
        }),
    };
    let router = http::router(state);
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future();
        tokio::select! {
            served = serve => served.context("HTTP server failed")?,
            _ = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace period over; closing open requests");
            }
        }
        Ok(())
    });
    tracing::info!(url = %format!("http://{addr}"), "Exportal is listening");
    Ok(Running {
        addr,
        shutdown,
        task,
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
