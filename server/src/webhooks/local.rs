//! The webhook outbox in the embedded database: one row per delivery owed. A claim is a random
//! token written with a `next_at` pushed to the end of the claim, in the same statement that
//! selects the due rows, so two processes on the same data directory (a `web` and a `worker`)
//! never take the same row at once.

use super::{Delivery, Outbox, OutboxError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqlitePool;
use std::time::Duration;

pub struct LocalOutbox {
    pool: SqlitePool,
}

impl LocalOutbox {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn unavailable(e: sqlx::Error) -> OutboxError {
    OutboxError::Unavailable(e.to_string())
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

type Row = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
);

#[async_trait]
impl Outbox for LocalOutbox {
    async fn add(&self, d: &Delivery) -> Result<(), OutboxError> {
        sqlx::query(
            "INSERT INTO webhook_outbox (id, job_id, url, body, created_at, next_at, attempts, last_error)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&d.id)
        .bind(&d.job_id)
        .bind(&d.url)
        .bind(&d.body)
        .bind(d.created_at.timestamp_millis())
        .bind(d.next_at.timestamp_millis())
        .bind(d.attempts as i64)
        .bind(&d.last_error)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        claim: Duration,
    ) -> Result<Vec<Delivery>, OutboxError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let until = now + chrono::Duration::from_std(claim).unwrap_or(chrono::Duration::MAX);
        let rows: Vec<Row> = sqlx::query_as(
            "UPDATE webhook_outbox SET next_at = ?, claim = ?
             WHERE id IN (SELECT id FROM webhook_outbox WHERE next_at <= ? ORDER BY next_at LIMIT ?)
             RETURNING id, job_id, url, body, created_at, next_at, attempts, last_error",
        )
        .bind(until.timestamp_millis())
        .bind(&token)
        .bind(now.timestamp_millis())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(
                |(id, job_id, url, body, created_at, next_at, attempts, last_error)| Delivery {
                    id,
                    job_id,
                    url,
                    body,
                    created_at: from_ms(created_at),
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    next_at: from_ms(next_at),
                    last_error,
                    claim: Some(token.clone()),
                },
            )
            .collect())
    }

    async fn reschedule(&self, d: &Delivery) -> Result<(), OutboxError> {
        let changed = sqlx::query(
            "UPDATE webhook_outbox SET attempts = ?, next_at = ?, last_error = ?, claim = NULL
             WHERE id = ? AND claim = ?",
        )
        .bind(d.attempts as i64)
        .bind(d.next_at.timestamp_millis())
        .bind(&d.last_error)
        .bind(&d.id)
        .bind(&d.claim)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if changed == 1 {
            Ok(())
        } else {
            Err(OutboxError::Lost)
        }
    }

    async fn remove(&self, d: &Delivery) -> Result<(), OutboxError> {
        sqlx::query("DELETE FROM webhook_outbox WHERE id = ?")
            .bind(&d.id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
