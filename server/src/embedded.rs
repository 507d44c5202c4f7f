//! The embedded database (`exportal.db` in the data directory) that holds the local job store,
//! the local queue and the webhook outbox: SQLite in WAL mode, so readers never wait for the
//! writer.

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::time::Duration;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at TEXT NOT NULL,
  finished_at TEXT,
  idempotency_key TEXT,
  revision INTEGER NOT NULL,
  record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, finished_at);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (owner, idempotency_key)
  WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS queue_messages (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  queue TEXT NOT NULL,
  body TEXT NOT NULL,
  visible_at INTEGER NOT NULL,
  dequeue_count INTEGER NOT NULL DEFAULT 0,
  receipt TEXT,
  inserted_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_messages_visible ON queue_messages (queue, visible_at, id);

CREATE TABLE IF NOT EXISTS audit (
  id TEXT PRIMARY KEY,
  at TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  job TEXT NOT NULL,
  dataset TEXT NOT NULL,
  entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_job ON audit (job, id);

-- Webhook deliveries still owed (server/src/webhooks/local.rs); times are unix milliseconds.
CREATE TABLE IF NOT EXISTS webhook_outbox (
  id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL,
  url TEXT NOT NULL,
  body TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  next_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  claim TEXT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (next_at);
"#;

/// Opens (creating if needed) the embedded database at `path`.
pub async fn open(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL in WAL mode survives process crashes; only an OS crash may lose the last commits.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;
    // Added after the first release: when a job expired, for the deletion after a grace period.
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('jobs')")
        .fetch_all(&pool)
        .await?;
    if !columns.iter().any(|c| c == "expired_at") {
        sqlx::raw_sql(
            "ALTER TABLE jobs ADD COLUMN expired_at TEXT;
             CREATE INDEX IF NOT EXISTS jobs_expired ON jobs (status, expired_at);",
        )
        .execute(&pool)
        .await?;
    }
    Ok(pool)
}
