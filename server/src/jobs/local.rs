//! The job store in the embedded SQLite database: one row per job, the whole record as JSON
//! beside the columns it is queried by.

use super::{JobStore, StoreError};
use app::jobs::{Job, JobStatus};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::SqlitePool;

pub struct LocalJobStore {
    pool: SqlitePool,
}

impl LocalJobStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse(record: &str) -> Result<Job, StoreError> {
    serde_json::from_str(record)
        .map_err(|e| StoreError::Unavailable(format!("unreadable job record: {e}")))
}

#[async_trait]
impl JobStore for LocalJobStore {
    async fn create(
        &self,
        job: &Job,
        idempotency_key: Option<&str>,
    ) -> Result<(Job, bool), StoreError> {
        let mut job = job.clone();
        job.revision = 1;
        let record = serde_json::to_string(&job).expect("jobs serialise");
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, owner, status, created_at, finished_at, idempotency_key, revision, record)
             VALUES (?, ?, ?, ?, NULL, ?, 1, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&job.id)
        .bind(&job.owner)
        .bind(job.status.as_str())
        .bind(ts(&job.created_at))
        .bind(idempotency_key)
        .bind(&record)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if inserted == 1 {
            return Ok((job, true));
        }
        match idempotency_key {
            Some(key) => match self.find_by_key(&job.owner, key).await? {
                Some(existing) => Ok((existing, false)),
                None => Err(StoreError::Conflict),
            },
            None => Err(StoreError::Conflict),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let record: Option<String> = sqlx::query_scalar("SELECT record FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        record.as_deref().map(parse).transpose()
    }

    async fn find_by_key(&self, owner: &str, key: &str) -> Result<Option<Job>, StoreError> {
        let record: Option<String> =
            sqlx::query_scalar("SELECT record FROM jobs WHERE owner = ? AND idempotency_key = ?")
                .bind(owner)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        record.as_deref().map(parse).transpose()
    }

    async fn list(&self, owner: &str, limit: usize) -> Result<Vec<Job>, StoreError> {
        let records: Vec<String> = sqlx::query_scalar(
            "SELECT record FROM jobs WHERE owner = ? ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(owner)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        records.iter().map(|r| parse(r)).collect()
    }

    async fn update(&self, job: &Job) -> Result<Job, StoreError> {
        let mut next = job.clone();
        next.revision = job.revision + 1;
        let record = serde_json::to_string(&next).expect("jobs serialise");
        let changed = sqlx::query(
            "UPDATE jobs SET status = ?, finished_at = ?, revision = ?, record = ? WHERE id = ? AND revision = ?",
        )
        .bind(next.status.as_str())
        .bind(next.finished_at.as_ref().map(ts))
        .bind(next.revision as i64)
        .bind(&record)
        .bind(&job.id)
        .bind(job.revision as i64)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if changed == 1 {
            return Ok(next);
        }
        match self.get(&job.id).await? {
            Some(_) => Err(StoreError::Conflict),
            None => Err(StoreError::NotFound),
        }
    }

    async fn active_count(&self, owner: &str) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE owner = ? AND status IN ('queued', 'running', 'retrying')",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(n as usize)
    }

    async fn finished_before(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let records: Vec<String> = sqlx::query_scalar(
            "SELECT record FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled')
             AND finished_at IS NOT NULL AND finished_at < ? ORDER BY finished_at LIMIT ?",
        )
        .bind(ts(&before))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let jobs: Result<Vec<Job>, _> = records.iter().map(|r| parse(r)).collect();
        Ok(jobs?
            .into_iter()
            .filter(|j| j.status != JobStatus::Expired)
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
