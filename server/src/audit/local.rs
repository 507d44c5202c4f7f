//! The audit trail in the embedded SQLite database: one row per entry, the entry as JSON
//! beside the columns it is filtered by.

use super::{AuditError, AuditFilter, AuditLog};
use app::admin::AuditEntry;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::SqlitePool;

pub struct LocalAuditLog {
    pool: SqlitePool,
}

impl LocalAuditLog {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn unavailable(e: sqlx::Error) -> AuditError {
    AuditError(e.to_string())
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[async_trait]
impl AuditLog for LocalAuditLog {
    async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        sqlx::query(
            "INSERT INTO audit (id, at, actor, action, job, dataset, entry) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&entry.id)
        .bind(ts(&entry.at))
        .bind(&entry.actor)
        .bind(entry.action.as_str())
        .bind(&entry.job)
        .bind(&entry.dataset)
        .bind(serde_json::to_string(entry).expect("entries serialise"))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn list(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, AuditError> {
        // Every value is bound; an absent filter is a NULL that matches everything.
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT entry FROM audit
             WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action = ?2)
               AND (?3 IS NULL OR job = ?3) AND (?4 IS NULL OR dataset = ?4)
               AND (?5 IS NULL OR at >= ?5) AND (?6 IS NULL OR id < ?6)
             ORDER BY id DESC LIMIT ?7",
        )
        .bind(filter.actor.as_deref())
        .bind(filter.action.map(|a| a.as_str()))
        .bind(filter.job.as_deref())
        .bind(filter.dataset.as_deref())
        .bind(filter.since.as_ref().map(ts))
        .bind(filter.before.as_deref())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                serde_json::from_str(r)
                    .map_err(|e| AuditError(format!("unreadable audit entry: {e}")))
            })
            .collect()
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, AuditError> {
        Ok(sqlx::query("DELETE FROM audit WHERE at < ?")
            .bind(ts(&before))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?
            .rows_affected())
    }
}
