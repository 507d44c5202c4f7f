//! The queue in the embedded SQLite database. Each operation is one statement, so concurrent
//! receivers (several worker tasks, or processes on one data directory) never get the same
//! message while it is hidden.

use super::{Queue, QueueError, Received};
use async_trait::async_trait;
use sqlx::{Row, SqlitePool};
use std::time::Duration;

const MAIN: &str = "main";
const POISON: &str = "poison";

pub struct LocalQueue {
    pool: SqlitePool,
}

impl LocalQueue {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn unavailable(e: sqlx::Error) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn new_receipt() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[async_trait]
impl Queue for LocalQueue {
    async fn send(&self, body: &str, delay: Duration) -> Result<(), QueueError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO queue_messages (queue, body, visible_at, inserted_at) VALUES (?, ?, ?, ?)",
        )
        .bind(MAIN)
        .bind(body)
        .bind(now + delay.as_millis() as i64)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Received>, QueueError> {
        let now = now_ms();
        // A per-call receipt prefix; the message id makes each receipt unique.
        let receipt = new_receipt();
        let rows = sqlx::query(
            "UPDATE queue_messages
             SET visible_at = ?, dequeue_count = dequeue_count + 1, receipt = ? || '-' || id
             WHERE id IN (SELECT id FROM queue_messages WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, id LIMIT ?)
             RETURNING id, body, dequeue_count, receipt",
        )
        .bind(now + visibility.as_millis() as i64)
        .bind(&receipt)
        .bind(MAIN)
        .bind(now)
        .bind(max as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut out: Vec<Received> = rows
            .into_iter()
            .map(|r| Received {
                id: r.get::<i64, _>("id").to_string(),
                receipt: r.get("receipt"),
                body: r.get("body"),
                dequeue_count: r.get::<i64, _>("dequeue_count") as u32,
            })
            .collect();
        out.sort_by_key(|m| m.id.parse::<i64>().unwrap_or_default());
        Ok(out)
    }

    async fn extend(
        &self,
        message: &Received,
        visibility: Duration,
    ) -> Result<Received, QueueError> {
        let receipt = format!("{}-{}", new_receipt(), message.id);
        let changed = sqlx::query(
            "UPDATE queue_messages SET visible_at = ?, receipt = ? WHERE id = ? AND receipt = ? AND queue = ?",
        )
        .bind(now_ms() + visibility.as_millis() as i64)
        .bind(&receipt)
        .bind(&message.id)
        .bind(&message.receipt)
        .bind(MAIN)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if changed == 0 {
            return Err(QueueError::Lost);
        }
        Ok(Received {
            receipt,
            ..message.clone()
        })
    }

    async fn delete(&self, message: &Received) -> Result<(), QueueError> {
        let changed = sqlx::query("DELETE FROM queue_messages WHERE id = ? AND receipt = ?")
            .bind(&message.id)
            .bind(&message.receipt)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?
            .rows_affected();
        if changed == 0 {
            return Err(QueueError::Lost);
        }
        Ok(())
    }

    async fn dead_letter(&self, message: &Received) -> Result<(), QueueError> {
        let changed = sqlx::query(
            "UPDATE queue_messages SET queue = ?, receipt = NULL, visible_at = ? WHERE id = ? AND receipt = ? AND queue = ?",
        )
        .bind(POISON)
        .bind(now_ms())
        .bind(&message.id)
        .bind(&message.receipt)
        .bind(MAIN)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if changed == 0 {
            return Err(QueueError::Lost);
        }
        Ok(())
    }

    async fn poison_len(&self) -> Result<usize, QueueError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_messages WHERE queue = ?")
            .bind(POISON)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(n as usize)
    }

    async fn depth(&self) -> Result<usize, QueueError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_messages WHERE queue = ?")
            .bind(MAIN)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(n as usize)
    }

    async fn remove_poisoned(&self, job: &str) -> Result<usize, QueueError> {
        // Bodies are only ever written by `JobMessage::encode`; one that does not parse as JSON
        // is not this job's, and `json_valid` keeps `json_extract` from failing on it.
        let removed = sqlx::query(
            "DELETE FROM queue_messages WHERE id IN (
               SELECT id FROM queue_messages WHERE queue = ? ORDER BY id LIMIT ?)
             AND json_valid(body) AND json_extract(body, '$.job') = ?",
        )
        .bind(POISON)
        .bind(super::POISON_SCAN_LIMIT as i64)
        .bind(job)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(removed as usize)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
