//! The job store: where job records live. Writes are compare-and-set on the job's revision, so
//! a cancel from the web and a progress write from a worker never overwrite each other.
//!
//! Every change of a job's status goes through [`Jobs::transition`] with one of `Job`'s
//! transition methods: the method checks the state (and, for a running attempt, its lease
//! token) on the record as stored, and the write is conditional on that record's revision, so
//! the check and the write are one compare-and-set. The per-user limit of active jobs is
//! reserved by the store itself, atomically with the write that makes a job active.

pub mod azure;
pub mod local;

use app::jobs::{Job, TransitionError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record changed since it was read: read it again and decide anew.
    #[error("the job was changed by someone else")]
    Conflict,
    #[error("job not found")]
    NotFound,
    /// The owner already has the most active jobs allowed; nothing was written.
    #[error("the owner already has {active} active jobs")]
    LimitReached { active: usize },
    #[error("job store unavailable: {0}")]
    Unavailable(String),
}

/// Why [`Jobs::transition`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The job's state (as stored now) does not allow the change; here is that state.
    #[error("{reason}")]
    Refused {
        reason: TransitionError,
        job: Box<Job>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which jobs an operator lists; every field narrows the list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub status: Option<app::jobs::JobStatus>,
    pub owner: Option<String>,
    pub dataset: Option<String>,
    /// Jobs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Continue after this job id, in the listing's order (the previous page's last id).
    pub cursor: Option<String>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
}

impl JobFilter {
    pub fn matches(&self, j: &Job) -> bool {
        self.status.is_none_or(|s| s == j.status)
            && self.owner.as_ref().is_none_or(|o| *o == j.owner)
            && self.dataset.as_ref().is_none_or(|d| *d == j.dataset)
            && self.since.is_none_or(|s| j.created_at >= s)
            && self.cursor.as_ref().is_none_or(|c| {
                if self.oldest_first {
                    j.id > *c
                } else {
                    j.id < *c
                }
            })
    }
}

/// Job records.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores a new (active) job, if its owner has fewer than `max_active` active jobs: the
    /// count and the write are atomic, so concurrent submits never pass the limit together
    /// (`LimitReached` otherwise). If `idempotency_key` was already used by the same owner,
    /// stores nothing and returns the job created then, with `false`.
    async fn create(
        &self,
        job: &Job,
        idempotency_key: Option<&str>,
        max_active: usize,
    ) -> Result<(Job, bool), StoreError>;
    async fn get(&self, id: &str) -> Result<Option<Job>, StoreError>;
    /// The job the owner created with this idempotency key, if any.
    async fn find_by_key(&self, owner: &str, key: &str) -> Result<Option<Job>, StoreError>;
    /// The owner's jobs, newest first.
    async fn list(&self, owner: &str, limit: usize) -> Result<Vec<Job>, StoreError>;
    /// The ids of the jobs `list` returns, in its order, without reading the records (on
    /// Azure, one listing of the owner's index).
    async fn list_ids(&self, owner: &str, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Writes `job` if the stored revision still equals `job.revision`; returns it with the
    /// new revision.
    async fn update(&self, job: &Job) -> Result<Job, StoreError>;
    /// Like `update`, for a final job that `job` makes active again (a retry): written only
    /// if the owner has fewer than `max_active` active jobs, atomically (`LimitReached`
    /// otherwise).
    async fn reactivate(&self, job: &Job, max_active: usize) -> Result<Job, StoreError>;
    /// Queued, running or retrying jobs of the owner.
    async fn active_count(&self, owner: &str) -> Result<usize, StoreError>;
    /// Final, not yet expired jobs that finished before `before` (oldest first).
    async fn finished_before(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError>;
    /// Deletes at most `limit` jobs that expired before `before`, with everything that points
    /// to them (owner index, idempotency key): afterwards they are unknown, like an id never
    /// used. Returns how many were deleted.
    async fn purge_expired(&self, before: DateTime<Utc>, limit: usize)
        -> Result<usize, StoreError>;
    /// Brings records written by an older version into what [`JobStore::finished_before`]
    /// reads, spending at most about `budget` record reads; `true` once nothing is left to do
    /// (at once, for a store that needs nothing).
    async fn migrate(&self, _budget: usize) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Any owner's jobs matching `filter`, newest (or oldest) first by id, which is
    /// time-ordered; at most `limit`. For operators: it may cost a scan of the records.
    async fn search(&self, filter: &JobFilter, limit: usize) -> Result<Vec<Job>, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}

use crate::live::Hub;
use std::sync::Arc;

/// The job store together with the live feed: every successful write is published, so the
/// page sees exactly what was stored.
#[derive(Clone)]
pub struct Jobs {
    pub store: Arc<dyn JobStore>,
    pub hub: Hub,
    /// Told of every write that makes a job final (webhooks), when any are configured.
    pub webhooks: Option<Arc<crate::webhooks::Notifier>>,
}

impl Jobs {
    pub fn new(store: Arc<dyn JobStore>, hub: Hub) -> Self {
        Self {
            store,
            hub,
            webhooks: None,
        }
    }

    pub fn with_webhooks(mut self, notifier: Arc<crate::webhooks::Notifier>) -> Self {
        self.webhooks = Some(notifier);
        self
    }

    pub async fn create(
        &self,
        job: &Job,
        idempotency_key: Option<&str>,
        max_active: usize,
    ) -> Result<(Job, bool), StoreError> {
        let (job, created) = self.store.create(job, idempotency_key, max_active).await?;
        if created {
            self.hub.publish(&job);
        }
        Ok((job, created))
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.store.get(id).await
    }

    pub async fn update(&self, job: &Job) -> Result<Job, StoreError> {
        let stored = self.store.update(job).await?;
        self.hub.publish(&stored);
        Ok(stored)
    }

    /// Applies `change` (one of `Job`'s transitions) to the stored job and writes it,
    /// re-reading and re-applying when a concurrent writer got there first, so the transition
    /// is always checked against the record it replaces.
    ///
    /// Every change that ends a job comes through here, so this is where its webhook event is
    /// stored: right after the write that made it final, by the process that won that write.
    /// The two writes are not one transaction: a process that dies between them (or an outbox
    /// that stays unavailable for a second) loses that one event. The job is already final,
    /// so nothing would write it again to retry.
    pub async fn transition(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Job) -> Result<(), TransitionError>,
    ) -> Result<Job, ChangeError> {
        for _ in 0..16 {
            let mut job = self.store.get(id).await?.ok_or(StoreError::NotFound)?;
            let was_final = job.status.is_final();
            if let Err(reason) = change(&mut job) {
                return Err(ChangeError::Refused {
                    reason,
                    job: Box::new(job),
                });
            }
            match self.update(&job).await {
                Err(StoreError::Conflict) => continue,
                Ok(stored) => {
                    if let (false, true, Some(w)) =
                        (was_final, stored.status.is_final(), &self.webhooks)
                    {
                        w.job_finished(&stored).await;
                    }
                    return Ok(stored);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// Makes a failed or cancelled job queued again under `ticket`, within the owner's limit
    /// of active jobs.
    pub async fn retry(
        &self,
        id: &str,
        ticket: &str,
        max_active: usize,
    ) -> Result<Job, ChangeError> {
        for _ in 0..16 {
            let mut job = self.store.get(id).await?.ok_or(StoreError::NotFound)?;
            if let Err(reason) = job.reset_for_retry(ticket.to_string()) {
                return Err(ChangeError::Refused {
                    reason,
                    job: Box::new(job),
                });
            }
            match self.store.reactivate(&job, max_active).await {
                Err(StoreError::Conflict) => continue,
                Ok(stored) => {
                    self.hub.publish(&stored);
                    return Ok(stored);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }
}
