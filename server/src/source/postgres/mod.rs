//! PostgreSQL through sqlx. Rows come from `COPY (query) TO STDOUT (FORMAT binary)` (see
//! `copy`), read on a task of their own that hands them over in batches, so reading the
//! socket runs beside the formatting on a second core.

mod binary;
mod copy;

use super::{
    BatchStream, Chunk, Param, Row, Sent, Source, SourceColumn, SourceError, SourceOptions,
};
use crate::catalog::sql::ParamStyle;
use async_trait::async_trait;
use binary::{column_type, kind};
use futures::{FutureExt, StreamExt};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Column, Executor, TypeInfo};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;

/// Rows per batch handed to the reader: each hand-over may wake a thread, so they are few.
const BATCH_ROWS: usize = 512;
/// While the server is slower than the reader, a batch that has waited this long is handed
/// over unfilled, so a slow query's first rows still show quickly.
const FLUSH_AFTER: Duration = Duration::from_millis(100);

pub struct PgSource {
    name: String,
    pool: PgPool,
}

impl PgSource {
    pub async fn connect(
        name: &str,
        url: &str,
        options: &SourceOptions,
    ) -> Result<Self, SourceError> {
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| {
                SourceError::query(format!("source `{name}`: invalid PostgreSQL URL: {e}"))
            })?
            .application_name("exportal");
        if !options.statement_timeout.is_zero() {
            connect = connect.options([(
                "statement_timeout",
                format!("{}ms", options.statement_timeout.as_millis()),
            )]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| SourceError::from_sqlx(name, e))?;
        Ok(Self {
            name: name.to_string(),
            pool,
        })
    }
}

/// Runs one query's `COPY` on a pooled connection and sends its rows to `tx`, and then the
/// error that ended it, if one did.
///
/// A connection whose `COPY` did not run to its end (an error, or a reader that went away) is
/// closed instead of going back to the pool: the rest of the output would still be on its way,
/// and closing the socket is also what makes the server stop sending it.
async fn read(pool: &PgPool, name: &str, sql: &str, statement: &str, tx: &mpsc::Sender<Sent>) {
    let mut batch: Vec<Row> = Vec::with_capacity(BATCH_ROWS);
    let outcome = match pool.acquire().await {
        Ok(mut conn) => {
            let outcome = copy_rows(&mut conn, name, sql, statement, &mut batch, tx).await;
            if !matches!(outcome, Ok(true)) {
                conn.close_on_drop();
            }
            outcome
        }
        Err(e) => Err(SourceError::from_sqlx(name, e)),
    };
    if !batch.is_empty() && tx.send(Ok(Chunk::Rows(batch))).await.is_err() {
        return;
    }
    let _ = match outcome {
        Ok(true) => tx.send(Ok(Chunk::End)).await,
        Ok(false) => Ok(()),
        Err(e) => tx.send(Err(e)).await,
    };
}

/// Reads the `COPY` into `batch`, handing full batches to `tx`; what is left in `batch` at the
/// end is the caller's to send. `Ok(false)` when the reader stopped listening before the end.
async fn copy_rows(
    conn: &mut PgConnection,
    name: &str,
    sql: &str,
    statement: &str,
    batch: &mut Vec<Row>,
    tx: &mpsc::Sender<Sent>,
) -> Result<bool, SourceError> {
    let fail = |e: sqlx::Error| SourceError::from_sqlx(name, e);
    // COPY's output carries no types: they come from describing the query, at the moment it runs.
    let described = conn.describe(sql).await.map_err(fail)?;
    let columns = described
        .columns()
        .iter()
        .map(|c| {
            let type_name = c.type_info().name();
            (c.name().to_string(), kind(type_name), type_name.to_string())
        })
        .collect();
    let mut reader = copy::CopyReader::new(columns);
    let mut copy = conn.copy_out_raw(statement).await.map_err(fail)?;
    let take = |batch: &mut Vec<Row>| {
        Ok(Chunk::Rows(std::mem::replace(
            batch,
            Vec::with_capacity(BATCH_ROWS),
        )))
    };
    let mut waiting_since = None;
    loop {
        let message = match copy.next().now_or_never() {
            Some(message) => message,
            None => {
                let since = *waiting_since.get_or_insert_with(tokio::time::Instant::now);
                tokio::select! {
                    biased;
                    _ = tx.closed() => return Ok(false),
                    message = copy.next() => message,
                    _ = tokio::time::sleep_until(since + FLUSH_AFTER), if !batch.is_empty() => {
                        waiting_since = None;
                        if tx.send(take(batch)).await.is_err() {
                            return Ok(false);
                        }
                        continue;
                    }
                }
            }
        };
        let Some(message) = message else { break };
        reader.feed(&message.map_err(fail)?, batch)?;
        if batch.len() >= BATCH_ROWS {
            waiting_since = None;
            if tx.send(take(batch)).await.is_err() {
                return Ok(false);
            }
        }
    }
    reader.finish()?;
    Ok(true)
}

#[async_trait]
impl Source for PgSource {
    fn style(&self) -> ParamStyle {
        ParamStyle::Dollar
    }

    async fn describe(&self, sql: &str) -> Result<Vec<SourceColumn>, SourceError> {
        super::pooled::describe(&self.pool, &self.name, sql, |t| column_type(kind(t))).await
    }

    fn batches<'a>(&'a self, sql: &'a str, params: &'a [Param]) -> BatchStream<'a> {
        super::batched(async move {
            let (tx, rx) = mpsc::channel::<Sent>(4);
            match copy::statement(sql, params) {
                Ok(statement) => {
                    let (pool, name, sql) = (self.pool.clone(), self.name.clone(), sql.to_string());
                    tokio::spawn(async move { read(&pool, &name, &sql, &statement, &tx).await });
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
            rx
        })
    }

    async fn ping(&self) -> Result<(), SourceError> {
        super::pooled::ping(&self.pool, &self.name).await
    }
}
