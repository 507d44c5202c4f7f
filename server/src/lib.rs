//! Exportal's server: one binary that serves the page, the API and the live channel, and runs
//! export jobs, in the role its settings give it.
//!
//! `main.rs` only parses the command line; [`start`] is the whole process, so tests spawn the
//! real thing on port 0 with a fresh data directory.

pub mod admin;
pub mod audit;
pub mod azure;
pub mod blobs;
pub mod catalog;
pub mod config;
pub mod embedded;
pub mod error;
pub mod export;
pub mod format;
pub mod http;
pub mod identity;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod queue;
pub mod service;
pub mod source;
pub mod state;
pub mod sweep;
pub mod telemetry;
pub mod webhooks;
pub mod worker;

use anyhow::Context;
use blobs::BlobStore;
use catalog::Catalog;
use config::{Role, Settings};
use futures::FutureExt;
use http::ReadyCheck;
use leptos::config::LeptosOptions;
use queue::Queue;
use state::{AppState, Inner};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A started server.
pub struct Running {
    /// The address it listens on (the real port when port 0 was asked for).
    pub addr: SocketAddr,
    /// The service layer, for tests that drive it directly (absent on a worker).
    pub service: Option<Arc<service::Service>>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting connections, closes live channels, lets running exports finish (up to
    /// the grace period) and waits for open requests.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("server task panicked")?
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task panicked")?
    }
}

/// The storage the process works on.
struct Storage {
    jobs: jobs::Jobs,
    audit: Arc<dyn audit::AuditLog>,
    /// Whether the queue's counts are estimates.
    approximate: bool,
    queue: Arc<dyn Queue>,
    blobs: Arc<dyn BlobStore>,
    readiness: Vec<ReadyCheck>,
    outbox: Arc<dyn webhooks::Outbox>,
}

/// The readiness checks of the three stores, whatever their adapters.
fn readiness(
    store: Arc<dyn jobs::JobStore>,
    queue: Arc<dyn Queue>,
    blobs: Arc<dyn BlobStore>,
) -> Vec<ReadyCheck> {
    vec![
        ReadyCheck {
            name: "job_store",
            probe: Arc::new(move || {
                let s = store.clone();
                async move { s.ping().await.map_err(|e| e.to_string()) }.boxed()
            }),
        },
        ReadyCheck {
            name: "queue",
            probe: Arc::new(move || {
                let q = queue.clone();
                async move { q.ping().await.map_err(|e| e.to_string()) }.boxed()
            }),
        },
        ReadyCheck {
            name: "files",
            probe: Arc::new(move || {
                let b = blobs.clone();
                async move { b.ping().await.map_err(|e| e.to_string()) }.boxed()
            }),
        },
    ]
}

async fn local_storage(settings: &Settings, hub: live::Hub) -> anyhow::Result<Storage> {
    let db = settings.data_dir.join("exportal.db");
    let pool = embedded::open(&db)
        .await
        .with_context(|| format!("cannot open the embedded database {}", db.display()))?;
    let store: Arc<dyn jobs::JobStore> = Arc::new(jobs::local::LocalJobStore::new(pool.clone()));
    let audit: Arc<dyn audit::AuditLog> = Arc::new(audit::local::LocalAuditLog::new(pool.clone()));
    let outbox = Arc::new(webhooks::local::LocalOutbox::new(pool.clone()));
    let queue: Arc<dyn Queue> = Arc::new(queue::local::LocalQueue::new(pool));
    let blobs: Arc<dyn BlobStore> = Arc::new(
        blobs::local::LocalBlobStore::open(&settings.data_dir.join("files"))
            .await
            .context("cannot prepare the files directory")?,
    );
    let readiness = readiness(store.clone(), queue.clone(), blobs.clone());
    Ok(Storage {
        jobs: jobs::Jobs::new(store, hub),
        audit,
        approximate: false,
        queue,
        blobs,
        readiness,
        outbox,
    })
}

/// Connects to Azure Storage and checks, before anything else starts, that the account
/// answers and that this identity may use it; creates the queues and containers if missing.
async fn azure_storage(settings: &azure::AzureSettings, hub: live::Hub) -> anyhow::Result<Storage> {
    let clients = azure::clients(settings)?;
    tracing::info!(storage = %clients.description, "using Azure Storage");
    let queue = queue::azure::AzureQueue::new(clients.queue, clients.poison);
    let blobs = blobs::azure::AzureBlobStore::new(clients.files, clients.links);
    let audit: Arc<dyn audit::AuditLog> = Arc::new(audit::azure::AzureAuditLog::new(clients.audit));
    let store = jobs::azure::AzureJobStore::new(clients.jobs);
    let outbox = Arc::new(webhooks::azure::AzureOutbox::new(clients.outbox));
    queue
        .ensure()
        .await
        .map_err(|e| anyhow::anyhow!("Azure Storage: {e}"))?;
    blobs
        .ensure()
        .await
        .map_err(|e| anyhow::anyhow!("Azure Storage: {e}"))?;
    store
        .ensure()
        .await
        .map_err(|e| anyhow::anyhow!("Azure Storage: {e}"))?;
    queue
        .poison_len()
        .await
        .map_err(|e| anyhow::anyhow!("Azure Storage: {e}"))?;
    let store: Arc<dyn jobs::JobStore> = Arc::new(store);
    let queue: Arc<dyn Queue> = Arc::new(queue);
    let blobs: Arc<dyn BlobStore> = Arc::new(blobs);
    let readiness = readiness(store.clone(), queue.clone(), blobs.clone());
    Ok(Storage {
        jobs: jobs::Jobs::new(store, hub),
        audit,
        approximate: true,
        queue,
        blobs,
        readiness,
        outbox,
    })
}

async fn load_catalog(settings: &Settings) -> anyhow::Result<Catalog> {
    match &settings.datasets {
        Some(path) => Ok(Catalog::load(path).await?),
        None => {
            // Absolute, because sqlite paths in a catalogue are relative to its base directory
            // and the data directory may itself be relative (the default is ./data).
            let db = std::path::absolute(settings.data_dir.join("demo.db"))
                .context("cannot resolve the data directory")?;
            catalog::demo::ensure_database(&db, settings.demo_orders)
                .await
                .context("cannot create the demo database")?;
            Catalog::from_toml(
                &catalog::demo::catalog_toml(&db, settings.demo_orders),
                &settings.data_dir,
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo catalogue: {e}"))
        }
    }
}

/// Opens storage, loads the catalogue, binds the listener and starts serving and working in
/// the background.
pub async fn start(settings: Settings, mut leptos: LeptosOptions) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (EXPORTAL_DATA_DIR)",
            settings.data_dir.display()
        )
    })?;
    let temp_dir = settings.data_dir.join("tmp");
    std::fs::create_dir_all(&temp_dir).context("cannot create the temporary directory")?;
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("cannot listen on {} (EXPORTAL_ADDR)", settings.addr))?;
    let addr = listener.local_addr()?;
    leptos.site_addr = addr;

    let hub = live::Hub::new();
    let mut storage = match &settings.storage {
        config::Storage::Local => local_storage(&settings, hub.clone()).await?,
        config::Storage::Azure(azure) => azure_storage(azure, hub.clone()).await?,
    };
    let catalog = Arc::new(load_catalog(&settings).await?);
    let (jobs, webhook_dispatcher) =
        webhooks::setup(&settings, &catalog, storage.outbox.clone(), storage.jobs)?;
    storage.jobs = jobs;
    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(metrics::Metrics::new().watch_queue(storage.queue.clone()));

    let export = Arc::new(export::ExportContext {
        catalog: catalog.clone(),
        blobs: storage.blobs.clone(),
        temp_dir,
        row_cap: settings.row_cap,
        csv_crlf: settings.csv_crlf,
    });
    let worker = (settings.role != Role::Web).then(|| {
        Arc::new(worker::Worker::new(
            storage.queue.clone(),
            storage.jobs.clone(),
            export.clone(),
            worker::WorkerConfig {
                concurrency: settings.worker_concurrency,
                visibility: settings.visibility_timeout,
                max_attempts: settings.max_attempts,
                retry_base: settings.retry_base,
                poll_max: settings.poll_max,
                retention: settings.retention,
                shutdown_grace: settings.shutdown_grace,
                instance: settings.instance.clone(),
                metrics: metrics.clone(),
                ..worker::WorkerConfig::default()
            },
            wake.clone(),
        ))
    });
    // Housekeeping runs beside every worker (see `sweep`: several sweepers are harmless).
    let sweeper = worker.as_ref().map(|_| {
        Arc::new(sweep::Sweeper {
            jobs: storage.jobs.clone(),
            blobs: storage.blobs.clone(),
            config: sweep::SweepConfig {
                retention: settings.retention,
                grace: settings.record_grace,
                ..sweep::SweepConfig::default()
            },
        })
    });
    let service = (settings.role != Role::Worker).then(|| {
        Arc::new(service::Service {
            catalog,
            jobs: storage.jobs.clone(),
            queue: storage.queue.clone(),
            blobs: storage.blobs.clone(),
            limits: service::Limits {
                max_active_jobs: settings.max_active_jobs,
                row_cap: settings.row_cap,
                download_ttl: settings.download_ttl,
            },
            wake: wake.clone(),
            worker: worker.clone(),
            preview_slots: Default::default(),
            audit: storage.audit.clone(),
            queue_is_approximate: storage.approximate,
            stats_cache: Default::default(),
            metrics: metrics.clone(),
        })
    });
    tokio::spawn(prune_audit(
        storage.audit.clone(),
        settings.audit_retention,
        shutdown.clone(),
    ));
    let identifier = Arc::new(
        identity::Identifier::new(
            settings.auth.clone(),
            settings.cookie_secret.as_ref(),
            &settings.data_dir,
            &settings.edge,
        )?
        .with_admins(settings.admins.clone()),
    );
    let rate = http::limits::RateLimiter::new(
        settings.edge.rate_per_minute,
        settings.edge.rate_burst,
        settings.edge.rate_identities,
    );

    let grace = settings.shutdown_grace;
    let role = settings.role;
    // Changes made by another process (a separate worker, or another instance on Azure) reach
    // this one only through the stored records: `/ws` then follows them.
    let follow_store = role == Role::Web || matches!(settings.storage, config::Storage::Azure(_));
    let state = AppState {
        leptos,
        inner: Arc::new(Inner {
            settings,
            started: Instant::now(),
            shutdown: shutdown.clone(),
            hub,
            service: service.clone(),
            readiness: storage.readiness,
            follow_store,
            rate,
            sockets: Default::default(),
            metrics,
        }),
    };
    let router = http::router(state, identifier);
    let worker_task = worker.map(|w| tokio::spawn(w.run(shutdown.clone())));
    let sweep_task = sweeper.map(|s| tokio::spawn(s.run(shutdown.clone())));
    // Every role delivers: cancels end jobs on web instances too, and any process may deliver
    // what another one stored.
    let webhook_task = webhook_dispatcher.map(|d| tokio::spawn(d.run(shutdown.clone())));
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        // The peer's address is what EXPORTAL_TRUSTED_PROXIES is checked against.
        let serve = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future();
        tokio::select! {
            served = serve => served.context("HTTP server failed")?,
            _ = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace period over; closing open requests");
            }
        }
        if let Some(w) = worker_task {
            w.await.context("worker panicked")?;
        }
        if let Some(s) = sweep_task {
            s.await.context("sweeper panicked")?;
        }
        if let Some(d) = webhook_task {
            d.await.context("webhook dispatcher panicked")?;
        }
        Ok(())
    });
    tracing::info!(url = %format!("http://{addr}"), role = role.as_str(), "Exportal is listening");
    Ok(Running {
        addr,
        service,
        shutdown,
        task,
    })
}

/// Deletes audit entries past their retention, at start and then hourly. Every instance does
/// it: deleting what another instance already deleted costs a listing and nothing else.
async fn prune_audit(
    audit: Arc<dyn audit::AuditLog>,
    retention: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let before = chrono::Utc::now()
            - chrono::TimeDelta::from_std(retention).unwrap_or(chrono::TimeDelta::MAX);
        match audit.prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "audit entries past their retention removed"),
            Err(e) => tracing::warn!("audit retention: {e}"),
        }
    }
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
