//! Housekeeping of finished jobs, in a task of its own beside the worker: finished jobs past
//! the retention time expire (their files are removed), expired records past the grace period
//! are deleted, and records written by an older version are migrated into the store's indexes
//! first.
//!
//! Every tick has a budget (at most [`SweepConfig::budget`] jobs expired and as many purged),
//! so one tick never holds storage for long; a tick that used its whole budget is followed at
//! once by another, an idle one waits for the next interval. Every instance that runs a worker
//! sweeps: the store's writes are compare-and-set and deleting what is gone is not an error,
//! so several sweepers only repeat each other's work (a lost race is a refused transition).

use crate::blobs::BlobStore;
use crate::export;
use crate::jobs::Jobs;
use app::jobs::JobStatus;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How the sweep behaves; see `EXPORTAL_RETENTION` and `EXPORTAL_RECORD_GRACE`.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    pub retention: Duration,
    pub grace: Duration,
    /// Most jobs expired, and most purged, in one tick (and records read by a migration step).
    pub budget: usize,
    /// The pause after a tick that did not use its whole budget.
    pub every: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            grace: Duration::from_secs(30 * 24 * 3600),
            budget: 100,
            every: Duration::from_secs(60),
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    pub expired: usize,
    pub purged: usize,
    /// The migration of old records is complete (before this tick or by it).
    pub migrated: bool,
    /// It used a whole budget (or the migration goes on): another tick follows at once.
    pub more: bool,
}

pub struct Sweeper {
    pub jobs: Jobs,
    pub blobs: Arc<dyn BlobStore>,
    pub config: SweepConfig,
}

fn before(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Expires at most `limit` jobs that finished before `before`, removing their files first;
/// returns how many expired and how many the store offered.
pub async fn expire_finished(
    jobs: &Jobs,
    blobs: &dyn BlobStore,
    before: DateTime<Utc>,
    limit: usize,
) -> Result<(usize, usize), crate::jobs::StoreError> {
    let old = jobs.store.finished_before(before, limit).await?;
    let offered = old.len();
    let mut expired = 0;
    for job in old {
        if job.status == JobStatus::Succeeded {
            if let Err(e) = blobs.delete(&export::blob_name(&job)).await {
                tracing::warn!(job = %job.id, "cannot remove an expired file: {e}");
                continue;
            }
        }
        if jobs.transition(&job.id, |j| j.expire()).await.is_ok() {
            expired += 1;
        }
    }
    Ok((expired, offered))
}

impl Sweeper {
    /// One tick as of `now`: a migration step (until it is done), then expiry, then deletion,
    /// each within the budget. Errors are logged; the next tick tries again.
    pub async fn tick(&self, now: DateTime<Utc>) -> Tick {
        let budget = self.config.budget.max(1);
        let mut tick = Tick::default();
        match self.jobs.store.migrate(budget).await {
            Ok(done) => {
                tick.migrated = done;
                tick.more |= !done;
            }
            Err(e) => tracing::warn!("sweep: migrating old job records: {e}"),
        }
        let expiry = before(now, self.config.retention);
        match expire_finished(&self.jobs, self.blobs.as_ref(), expiry, budget).await {
            Ok((expired, offered)) => {
                tick.expired = expired;
                // Only a tick that made progress earns another at once: jobs that cannot
                // expire now (a file that cannot be removed) wait for the next interval
                // instead of being offered again every 50 ms.
                tick.more |= offered >= budget && expired > 0;
            }
            Err(e) => tracing::warn!("sweep: finding expired exports: {e}"),
        }
        let purge = before(now, self.config.grace);
        match self.jobs.store.purge_expired(purge, budget).await {
            Ok(purged) => {
                tick.purged = purged;
                tick.more |= purged >= budget;
            }
            Err(e) => tracing::warn!("sweep: deleting expired records: {e}"),
        }
        tick
    }

    /// Ticks until `shutdown`: at once, then after every tick that left nothing over, after
    /// `every`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let tick = tokio::select! {
                _ = shutdown.cancelled() => return,
                t = self.tick(Utc::now()) => t,
            };
            if tick.expired > 0 || tick.purged > 0 {
                tracing::info!(
                    expired = tick.expired,
                    purged = tick.purged,
                    "expired old exports and deleted old records"
                );
            }
            // A full tick is followed by another at once (after a breath for the rest of the
            // process); an idle one waits.
            let pause = if tick.more {
                Duration::from_millis(50)
            } else {
                self.config.every
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
