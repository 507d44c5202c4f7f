//! PostgreSQL through sqlx. Rows come from `COPY (query) TO STDOUT (FORMAT binary)` (see
//! `copy`), read on a task of their own that hands them over in batches, so reading the
//! socket runs beside the formatting on a second core.
//!
//! Each query runs in a transaction of its own: its parameter values, and for previews and
//! counts a shorter `statement_timeout`, are `set_config(…, true)` there (`SET LOCAL`), bound,
//! and end with it.

mod binary;
mod copy;

use super::{BatchStream, Chunk, Described, Param, Row, Sent, Source, SourceError, SourceOptions};
use crate::catalog::sql::Dialect;
use async_trait::async_trait;
use binary::plan;
use futures::{FutureExt, StreamExt};
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Column, Executor, Row as _, Statement, TypeInfo};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument as _;

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
        // The placeholder scanner reads `'…'` as PostgreSQL does with standard strings (the
        // default since 9.1): with them off, a backslash would end a literal elsewhere.
        let standard: String =
            sqlx::query_scalar("SELECT current_setting('standard_conforming_strings')")
                .fetch_one(&pool)
                .await
                .map_err(|e| SourceError::from_sqlx(name, e))?;
        if standard != "on" {
            return Err(SourceError::query(format!(
                "source `{name}`: standard_conforming_strings is `{standard}`; Exportal reads \
                 the datasets' SQL as PostgreSQL does with it `on` (the default): turn it on \
                 for the connecting role or database"
            )));
        }
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
async fn read(pool: &PgPool, name: &str, query: &Query, tx: &mpsc::Sender<Sent>) {
    let mut batch: Vec<Row> = Vec::with_capacity(BATCH_ROWS);
    let outcome = match pool.acquire().await {
        Ok(mut conn) => {
            let outcome = copy_rows(&mut conn, name, query, &mut batch, tx).await;
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

/// What one `COPY` reads: the dataset's SQL in `$n` style, its values, and the time limit that
/// replaces the pool's for this query (previews, counts).
struct Query {
    sql: String,
    params: Vec<Param>,
    timeout: Option<Duration>,
}

/// Reads the `COPY` into `batch`, handing full batches to `tx`; what is left in `batch` at the
/// end is the caller's to send. `Ok(false)` when the reader stopped listening before the end.
/// The connection is in a transaction until `Ok(true)`: the caller closes it otherwise.
async fn copy_rows(
    conn: &mut PgConnection,
    name: &str,
    query: &Query,
    batch: &mut Vec<Row>,
    tx: &mpsc::Sender<Sent>,
) -> Result<bool, SourceError> {
    let fail = |e: sqlx::Error| SourceError::from_sqlx(name, e);
    conn.execute("BEGIN").await.map_err(fail)?;
    // COPY's output carries no types: they come from preparing the query, at the moment it
    // runs, and so do the types PostgreSQL infers for its parameters.
    let prepared = conn.prepare(&query.sql).await.map_err(fail)?;
    let columns: Vec<_> = prepared
        .columns()
        .iter()
        .map(|c| {
            let t = c.type_info();
            (c.name().to_string(), plan(t), t.name().to_string())
        })
        .collect();
    let plans: Vec<_> = columns.iter().map(|(_, p, _)| p.clone()).collect();
    let oids: Vec<Oid> = match prepared.parameters() {
        Some(sqlx::Either::Left(types)) => types.iter().filter_map(|t| t.oid()).collect(),
        _ => Vec::new(),
    };
    if oids.len() != query.params.len() {
        return Err(SourceError::query(format!(
            "The query on `{name}` takes {} parameter(s) but {} value(s) were given.",
            oids.len(),
            query.params.len()
        )));
    }
    let texts = query
        .params
        .iter()
        .map(copy::text)
        .collect::<Result<Vec<_>, _>>()?;
    let inferred = bind_settings(conn, &texts, &oids, query.timeout)
        .await
        .map_err(fail)?;
    let statement = copy::statement(&query.sql, &query.params, &inferred, &plans)?;
    let mut reader = copy::CopyReader::new(columns);
    let mut copy = conn.copy_out_raw(&statement).await.map_err(fail)?;
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
    drop(copy);
    conn.execute("COMMIT").await.map_err(fail)?;
    Ok(true)
}

/// In one round trip: binds each value (as text) to its setting, sets the statement timeout
/// when there is one (`SET LOCAL`, bound too), and has PostgreSQL format the name of each
/// inferred parameter type, for the casts in the `COPY`. Everything is local to the
/// transaction.
async fn bind_settings(
    conn: &mut PgConnection,
    texts: &[Option<String>],
    oids: &[Oid],
    timeout: Option<Duration>,
) -> Result<Vec<String>, sqlx::Error> {
    if oids.is_empty() && timeout.is_none() {
        return Ok(Vec::new());
    }
    let mut select: Vec<String> = Vec::new();
    let mut slot = 0;
    let mut next = || {
        slot += 1;
        format!("${slot}")
    };
    for (i, t) in texts.iter().enumerate() {
        if t.is_some() {
            select.push(format!(
                "set_config('{}', {}, true)",
                copy::setting(i + 1),
                next()
            ));
        }
    }
    if timeout.is_some() {
        select.push(format!("set_config('statement_timeout', {}, true)", next()));
    }
    let first_type = select.len();
    for _ in oids {
        select.push(format!("format_type({}, NULL)", next()));
    }
    let sql = format!("SELECT {}", select.join(", "));
    let mut q = sqlx::query(&sql);
    for t in texts.iter().flatten() {
        q = q.bind(t.as_str());
    }
    if let Some(timeout) = timeout {
        // At least 1 ms: 0 would mean no limit at all.
        q = q.bind(format!("{}ms", timeout.as_millis().max(1)));
    }
    for oid in oids {
        q = q.bind(*oid);
    }
    let row = q.fetch_one(&mut *conn).await?;
    (first_type..row.len()).map(|i| row.try_get(i)).collect()
}

/// The `COPY` statement the source runs for `sql` (in `$n` style) and `params`, given the names
/// of the types PostgreSQL inferred for the `$n`.
pub fn copy_statement(
    sql: &str,
    params: &[Param],
    inferred: &[String],
) -> Result<String, SourceError> {
    copy::statement(sql, params, inferred, &[])
}

impl PgSource {
    fn copy<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param],
        timeout: Option<Duration>,
    ) -> BatchStream<'a> {
        super::batched(async move {
            let (tx, rx) = mpsc::channel::<Sent>(4);
            let query = Query {
                sql: sql.to_string(),
                params: params.to_vec(),
                timeout,
            };
            let (pool, name) = (self.pool.clone(), self.name.clone());
            // The caller's span (the job) goes with the reader, for the errors it logs.
            tokio::spawn(async move { read(&pool, &name, &query, &tx).await }.in_current_span());
            rx
        })
    }
}

#[async_trait]
impl Source for PgSource {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn describe(&self, sql: &str) -> Result<Described, SourceError> {
        super::pooled::describe(&self.pool, &self.name, sql, |t| plan(t).shown).await
    }

    fn batches<'a>(&'a self, sql: &'a str, params: &'a [Param]) -> BatchStream<'a> {
        self.copy(sql, params, None)
    }

    fn batches_limited<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param],
        timeout: Duration,
    ) -> BatchStream<'a> {
        self.copy(sql, params, Some(timeout))
    }

    async fn ping(&self) -> Result<(), SourceError> {
        super::pooled::ping(&self.pool, &self.name).await
    }
}
