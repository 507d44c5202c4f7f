//! What operators may do, on top of the service every user calls: list anyone's jobs, see the
//! queue, cancel and redrive any job, read per-dataset figures and the audit trail. The HTTP
//! layer lets only admins reach these; they check nothing about the caller themselves.

use crate::audit::AuditFilter;
use crate::jobs::{JobFilter, StoreError};
use crate::service::Service;
use app::admin::{
    AuditAction, AuditPage, DatasetStats, JobsPage, Overview, QueueOverview, RunningJob, Stats,
};
use app::error::{ApiError, ErrorCode};
use app::jobs::{Job, JobStatus};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// Running jobs shown at most.
const RUNNING_SHOWN: usize = 100;
/// Failed jobs the overview shows.
const FAILURES_SHOWN: usize = 20;
/// How long the overview's per-dataset figures are reused: the page refreshes every few
/// seconds, and the figures read up to [`STATS_JOBS`] records.
const OVERVIEW_STATS_FOR: std::time::Duration = std::time::Duration::from_secs(15);

/// The overview's last per-dataset figures and when they were made.
#[derive(Default)]
pub struct StatsCache(std::sync::Mutex<Option<(std::time::Instant, Stats)>>);

/// Jobs one statistics report reads at most (newest first).
pub const STATS_JOBS: usize = 20_000;
const STATS_PAGE: usize = 500;

fn unavailable(e: StoreError) -> ApiError {
    tracing::error!("job store unavailable: {e}");
    ApiError::new(
        ErrorCode::Unavailable,
        "The job store is unavailable right now; try again in a moment.",
    )
}

fn audit_unavailable(e: crate::audit::AuditError) -> ApiError {
    tracing::error!("{e}");
    ApiError::new(
        ErrorCode::Unavailable,
        "The audit trail is unavailable right now; try again in a moment.",
    )
}

/// The nearest-rank percentile `p` (0–100) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl Service {
    /// Anyone's jobs, one page.
    pub async fn admin_jobs(&self, filter: JobFilter, limit: usize) -> Result<JobsPage, ApiError> {
        let jobs = self
            .jobs
            .store
            .search(&filter, limit)
            .await
            .map_err(unavailable)?;
        let next_cursor = (jobs.len() == limit)
            .then(|| jobs.last().map(|j| j.id.clone()))
            .flatten();
        Ok(JobsPage { jobs, next_cursor })
    }

    pub async fn queue_overview(&self) -> Result<QueueOverview, ApiError> {
        let queue_error = |e: crate::queue::QueueError| {
            tracing::error!("queue unavailable: {e}");
            ApiError::new(
                ErrorCode::Unavailable,
                "The queue is unavailable right now; try again in a moment.",
            )
        };
        let depth = self.queue.depth().await.map_err(queue_error)?;
        let poison_depth = self.queue.poison_len().await.map_err(queue_error)?;
        let search = |status: JobStatus, oldest_first: bool, limit: usize| {
            let filter = JobFilter {
                status: Some(status),
                oldest_first,
                ..Default::default()
            };
            let store = self.jobs.store.clone();
            async move { store.search(&filter, limit).await }
        };
        let running = search(JobStatus::Running, false, RUNNING_SHOWN)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|job| RunningJob {
                worker: job.worker.clone(),
                heartbeat_at: job.heartbeat_at,
                job,
            })
            .collect();
        let oldest = search(JobStatus::Queued, true, 1)
            .await
            .map_err(unavailable)?;
        let oldest_queued_secs = oldest
            .first()
            .map(|j| (Utc::now() - j.created_at).num_seconds().max(0) as u64);
        Ok(QueueOverview {
            depth: depth as u64,
            approximate: self.queue_is_approximate,
            poison_depth: poison_depth as u64,
            running,
            oldest_queued_secs,
        })
    }

    pub async fn admin_cancel(
        &self,
        admin: &str,
        id: &str,
        address: Option<&str>,
    ) -> Result<Job, ApiError> {
        let job = self.cancel_job(id).await?;
        self.record(AuditAction::AdminCancel, admin, address, &job)
            .await;
        Ok(job)
    }

    /// Sends a failed (or cancelled) job back to the queue with its attempts reset, whatever
    /// its owner's limit of active jobs, and removes its poison messages.
    pub async fn redrive(
        &self,
        admin: &str,
        id: &str,
        address: Option<&str>,
    ) -> Result<Job, ApiError> {
        let job = self.retry_job_unlimited(id).await?;
        self.metrics
            .retried(&job, crate::metrics::RetryTrigger::Redrive);
        match self.queue.remove_poisoned(id).await {
            Ok(n) => tracing::info!(job = %id, removed = n, "redrive: poison messages removed"),
            // The job has a new ticket: a poison message left behind can never start it.
            Err(e) => tracing::warn!(job = %id, "redrive: poison messages not removed: {e}"),
        }
        self.record(AuditAction::AdminRedrive, admin, address, &job)
            .await;
        Ok(job)
    }

    /// Per dataset, the jobs created since `since`.
    pub async fn stats(&self, since: DateTime<Utc>) -> Result<Stats, ApiError> {
        let mut per: BTreeMap<String, (DatasetStats, Vec<f64>)> = BTreeMap::new();
        let mut filter = JobFilter {
            since: Some(since),
            ..Default::default()
        };
        let mut seen = 0usize;
        let mut truncated = false;
        loop {
            let page = self
                .jobs
                .store
                .search(&filter, STATS_PAGE)
                .await
                .map_err(unavailable)?;
            let full = page.len() == STATS_PAGE;
            filter.cursor = page.last().map(|j| j.id.clone());
            for job in page {
                seen += 1;
                let (s, durations) = per.entry(job.dataset.clone()).or_insert_with(|| {
                    (
                        DatasetStats {
                            dataset: job.dataset.clone(),
                            exports: 0,
                            succeeded: 0,
                            failed: 0,
                            cancelled: 0,
                            rows: 0,
                            bytes: 0,
                            p50_secs: None,
                            p95_secs: None,
                        },
                        Vec::new(),
                    )
                });
                s.exports += 1;
                match job.status {
                    JobStatus::Succeeded | JobStatus::Expired => {
                        s.succeeded += 1;
                        if let Some(file) = &job.file {
                            s.rows += file.rows;
                            s.bytes += file.bytes;
                        }
                        if let (Some(a), Some(b)) = (job.started_at, job.finished_at) {
                            durations.push((b - a).num_milliseconds().max(0) as f64 / 1000.0);
                        }
                    }
                    JobStatus::Failed => s.failed += 1,
                    JobStatus::Cancelled => s.cancelled += 1,
                    _ => {}
                }
            }
            if !full {
                break;
            }
            if seen >= STATS_JOBS {
                truncated = true;
                break;
            }
        }
        let datasets = per
            .into_values()
            .map(|(mut s, mut d)| {
                d.sort_by(f64::total_cmp);
                s.p50_secs = percentile(&d, 50.0);
                s.p95_secs = percentile(&d, 95.0);
                s
            })
            .collect();
        Ok(Stats {
            since,
            datasets,
            jobs: seen as u64,
            truncated,
        })
    }

    /// What the admin page shows.
    pub async fn overview(&self) -> Result<Overview, ApiError> {
        let failures = self
            .jobs
            .store
            .search(
                &JobFilter {
                    status: Some(JobStatus::Failed),
                    ..Default::default()
                },
                FAILURES_SHOWN,
            )
            .await
            .map_err(unavailable)?;
        let cached = self
            .stats_cache
            .0
            .lock()
            .expect("lock")
            .as_ref()
            .filter(|(at, _)| at.elapsed() < OVERVIEW_STATS_FOR)
            .map(|(_, s)| s.clone());
        let stats = match cached {
            Some(s) => s,
            None => {
                let s = self
                    .stats(Utc::now() - chrono::TimeDelta::hours(24))
                    .await?;
                *self.stats_cache.0.lock().expect("lock") =
                    Some((std::time::Instant::now(), s.clone()));
                s
            }
        };
        Ok(Overview {
            queue: self.queue_overview().await?,
            failures,
            stats,
        })
    }

    pub async fn audit_page(
        &self,
        filter: AuditFilter,
        limit: usize,
    ) -> Result<AuditPage, ApiError> {
        let entries = self
            .audit
            .list(&filter, limit)
            .await
            .map_err(audit_unavailable)?;
        let next_cursor = (entries.len() == limit)
            .then(|| entries.last().map(|e| e.id.clone()))
            .flatten();
        Ok(AuditPage {
            entries,
            next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(10.0));
        assert_eq!(percentile(&v, 95.0), Some(19.0));
        assert_eq!(percentile(&[3.0], 95.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
