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

/// The limit as SQLite's integer; "no limit" (`usize::MAX`) stays the largest.
fn limit(max_active: usize) -> i64 {
    i64::try_from(max_active).unwrap_or(i64::MAX)
}

const ACTIVE_OF_OWNER: &str =
    "(SELECT COUNT(*) FROM jobs WHERE owner = ? AND status IN ('queued', 'running', 'retrying'))";

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
        max_active: usize,
    ) -> Result<(Job, bool), StoreError> {
        let mut job = job.clone();
        job.revision = 1;
        let record = serde_json::to_string(&job).expect("jobs serialise");
        // One statement counts and inserts: SQLite runs it under its write lock, so two
        // submits can never both see room for one more job.
        let inserted = sqlx::query(&format!(
            "INSERT INTO jobs (id, owner, status, created_at, finished_at, idempotency_key, revision, record)
             SELECT ?, ?, ?, ?, NULL, ?, 1, ? WHERE {ACTIVE_OF_OWNER} < ?
             ON CONFLICT DO NOTHING"
        ))
        .bind(&job.id)
        .bind(&job.owner)
        .bind(job.status.as_str())
        .bind(ts(&job.created_at))
        .bind(idempotency_key)
        .bind(&record)
        .bind(&job.owner)
        .bind(limit(max_active))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if inserted == 1 {
            return Ok((job, true));
        }
        if let Some(key) = idempotency_key {
            if let Some(existing) = self.find_by_key(&job.owner, key).await? {
                return Ok((existing, false));
            }
        }
        if self.get(&job.id).await?.is_some() {
            return Err(StoreError::Conflict);
        }
        Err(StoreError::LimitReached {
            active: self.active_count(&job.owner).await?,
        })
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

    async fn list_ids(&self, owner: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT id FROM jobs WHERE owner = ? ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(owner)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)
    }

    async fn update(&self, job: &Job) -> Result<Job, StoreError> {
        let mut next = job.clone();
        next.revision = job.revision + 1;
        let record = serde_json::to_string(&next).expect("jobs serialise");
        // `expired_at` is set by the write that makes the job expired, and kept after it.
        let changed = sqlx::query(
            "UPDATE jobs SET status = ?1, finished_at = ?2, revision = ?3, record = ?4,
               expired_at = CASE WHEN ?1 = 'expired' THEN COALESCE(expired_at, ?7) END
             WHERE id = ?5 AND revision = ?6",
        )
        .bind(next.status.as_str())
        .bind(next.finished_at.as_ref().map(ts))
        .bind(next.revision as i64)
        .bind(&record)
        .bind(&job.id)
        .bind(job.revision as i64)
        .bind(ts(&Utc::now()))
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

    async fn reactivate(&self, job: &Job, max_active: usize) -> Result<Job, StoreError> {
        let mut next = job.clone();
        next.revision = job.revision + 1;
        let record = serde_json::to_string(&next).expect("jobs serialise");
        // As in `create`: the count and the write are one statement.
        let changed = sqlx::query(&format!(
            "UPDATE jobs SET status = ?, finished_at = ?, revision = ?, record = ?
             WHERE id = ? AND revision = ? AND {ACTIVE_OF_OWNER} < ?"
        ))
        .bind(next.status.as_str())
        .bind(next.finished_at.as_ref().map(ts))
        .bind(next.revision as i64)
        .bind(&record)
        .bind(&job.id)
        .bind(job.revision as i64)
        .bind(&job.owner)
        .bind(limit(max_active))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if changed == 1 {
            return Ok(next);
        }
        match self.get(&job.id).await? {
            None => Err(StoreError::NotFound),
            Some(stored) if stored.revision != job.revision => Err(StoreError::Conflict),
            Some(_) => Err(StoreError::LimitReached {
                active: self.active_count(&job.owner).await?,
            }),
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

    async fn purge_expired(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        // Records expired before `expired_at` existed count from their finish instead.
        let deleted = sqlx::query(
            "DELETE FROM jobs WHERE id IN (
               SELECT id FROM jobs WHERE status = 'expired'
               AND COALESCE(expired_at, finished_at) < ? LIMIT ?)",
        )
        .bind(ts(&before))
        .bind(limit as i64)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(deleted as usize)
    }

    async fn search(
        &self,
        filter: &super::JobFilter,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        // Every value is bound; an absent filter is a NULL that matches everything. Ids are
        // UUIDv7 (time-ordered), so the id order is the creation order and a stable cursor.
        let (after, order) = if filter.oldest_first {
            ("id > ?5", "ASC")
        } else {
            ("id < ?5", "DESC")
        };
        let records: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT record FROM jobs
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR owner = ?2)
               AND (?3 IS NULL OR json_extract(record, '$.dataset') = ?3)
               AND (?4 IS NULL OR created_at >= ?4) AND (?5 IS NULL OR {after})
             ORDER BY id {order} LIMIT ?6"
        ))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.owner.as_deref())
        .bind(filter.dataset.as_deref())
        .bind(filter.since.as_ref().map(ts))
        .bind(filter.cursor.as_deref())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        records.iter().map(|r| parse(r)).collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
