//! The job store: where job records live. Writes are compare-and-set on the job's revision, so
//! a cancel from the web and a progress write from a worker never overwrite each other.

pub mod azure;
pub mod local;

use app::jobs::Job;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record changed since it was read: read it again and decide anew.
    #[error("the job was changed by someone else")]
    Conflict,
    #[error("job not found")]
    NotFound,
    #[error("job store unavailable: {0}")]
    Unavailable(String),
}

/// Job records.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores a new job. If `idempotency_key` was already used by the same owner, stores
    /// nothing and returns the job created then, with `false`.
    async fn create(
        &self,
        job: &Job,
        idempotency_key: Option<&str>,
    ) -> Result<(Job, bool), StoreError>;
    async fn get(&self, id: &str) -> Result<Option<Job>, StoreError>;
    /// The job the owner created with this idempotency key, if any.
    async fn find_by_key(&self, owner: &str, key: &str) -> Result<Option<Job>, StoreError>;
    /// The owner's jobs, newest first.
    async fn list(&self, owner: &str, limit: usize) -> Result<Vec<Job>, StoreError>;
    /// Writes `job` if the stored revision still equals `job.revision`; returns it with the
    /// new revision.
    async fn update(&self, job: &Job) -> Result<Job, StoreError>;
    /// Queued, running or retrying jobs of the owner.
    async fn active_count(&self, owner: &str) -> Result<usize, StoreError>;
    /// Final, not yet expired jobs that finished before `before` (oldest first).
    async fn finished_before(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError>;
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
}

impl Jobs {
    pub fn new(store: Arc<dyn JobStore>, hub: Hub) -> Self {
        Self { store, hub }
    }

    pub async fn create(
        &self,
        job: &Job,
        idempotency_key: Option<&str>,
    ) -> Result<(Job, bool), StoreError> {
        let (job, created) = self.store.create(job, idempotency_key).await?;
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

    /// Applies `change` to the stored job and writes it, re-reading and re-applying when a
    /// concurrent writer got there first. `change` returns false to leave the job as it is.
    pub async fn modify(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Job) -> bool,
    ) -> Result<Job, StoreError> {
        for _ in 0..16 {
            let mut job = self.store.get(id).await?.ok_or(StoreError::NotFound)?;
            if !change(&mut job) {
                return Ok(job);
            }
            match self.update(&job).await {
                Err(StoreError::Conflict) => continue,
                other => return other,
            }
        }
        Err(StoreError::Conflict)
    }
}
