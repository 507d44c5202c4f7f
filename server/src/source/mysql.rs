//! MySQL / MariaDB through sqlx. Rows are streamed from the server; each column's decoder is
//! chosen once, from the first row's types.
//!
//! At connect, the server says which it is (MariaDB and MySQL name their statement time limits
//! differently) and how it reads SQL (`sql_mode`'s `NO_BACKSLASH_ESCAPES` and `ANSI_QUOTES`
//! change where a literal ends, so the placeholder scanner must know them).

use super::{
    BatchStream, Chunk, Described, Param, Sent, Source, SourceError, SourceOptions, Value,
};
use crate::catalog::sql::Dialect;
use app::catalog::ColumnType;
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::types::BigDecimal;
use sqlx::{Column, Executor, Row, TypeInfo, ValueRef};
use std::str::FromStr;

/// The most rows per batch.
const BATCH_ROWS: usize = 256;

pub struct MySqlSource {
    name: String,
    pool: MySqlPool,
    flavour: Flavour,
    dialect: Dialect,
    /// The session's own limit, restored after a shorter one (MySQL only).
    statement_timeout: std::time::Duration,
}

/// Which server answers: they stop long statements differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    /// `SET STATEMENT max_statement_time = <seconds> FOR <query>`.
    MariaDb,
    /// The session's `max_execution_time` (milliseconds, SELECT only).
    MySql,
}

/// The flavour from `VERSION()`, and the dialect from the session's `sql_mode`.
fn server_traits(version: &str, sql_mode: &str) -> (Flavour, Dialect) {
    let flavour = if version.to_ascii_lowercase().contains("mariadb") {
        Flavour::MariaDb
    } else {
        Flavour::MySql
    };
    let has = |mode: &str| {
        sql_mode
            .split(',')
            .any(|m| m.trim().eq_ignore_ascii_case(mode))
    };
    let dialect = Dialect::MySql {
        backslash_escapes: !has("NO_BACKSLASH_ESCAPES"),
        ansi_quotes: has("ANSI_QUOTES") || has("ANSI"),
    };
    (flavour, dialect)
}

impl MySqlSource {
    pub async fn connect(
        name: &str,
        url: &str,
        options: &SourceOptions,
    ) -> Result<Self, SourceError> {
        // `mariadb://` is accepted as a friendlier spelling of the same protocol.
        let url = match url.strip_prefix("mariadb:") {
            Some(rest) => format!("mysql:{rest}"),
            None => url.to_string(),
        };
        let connect = MySqlConnectOptions::from_str(&url)
            .map_err(|e| SourceError::query(format!("source `{name}`: invalid MySQL URL: {e}")))?
            .charset("utf8mb4");
        let timeout_secs = options.statement_timeout.as_secs();
        let pool = MySqlPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.connect_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if timeout_secs > 0 {
                        // MariaDB names it max_statement_time (seconds), MySQL
                        // max_execution_time (milliseconds); each ignores the other's.
                        let _ = conn
                            .execute(
                                format!("SET SESSION max_statement_time = {timeout_secs}").as_str(),
                            )
                            .await;
                        let _ = conn
                            .execute(
                                format!("SET SESSION max_execution_time = {}", timeout_secs * 1000)
                                    .as_str(),
                            )
                            .await;
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await
            .map_err(|e| SourceError::from_sqlx(name, e))?;
        let (version, sql_mode): (String, String) =
            sqlx::query_as("SELECT VERSION(), @@SESSION.sql_mode")
                .fetch_one(&pool)
                .await
                .map_err(|e| SourceError::from_sqlx(name, e))?;
        let (flavour, dialect) = server_traits(&version, &sql_mode);
        Ok(Self {
            name: name.to_string(),
            pool,
            flavour,
            dialect,
            statement_timeout: options.statement_timeout,
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Bool,
    Signed,
    Unsigned,
    Float,
    Double,
    Decimal,
    Text,
    Date,
    DateTime,
    Timestamp,
    Time,
    Bytes,
}

fn kind(type_name: &str) -> Kind {
    let unsigned = type_name.ends_with("UNSIGNED");
    match type_name.trim_end_matches(" UNSIGNED") {
        "BOOLEAN" => Kind::Bool,
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" if unsigned => {
            Kind::Unsigned
        }
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => Kind::Signed,
        "YEAR" => Kind::Unsigned,
        "FLOAT" => Kind::Float,
        "DOUBLE" => Kind::Double,
        "DECIMAL" => Kind::Decimal,
        "DATE" => Kind::Date,
        "DATETIME" => Kind::DateTime,
        "TIMESTAMP" => Kind::Timestamp,
        "TIME" => Kind::Time,
        "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" | "BIT"
        | "GEOMETRY" => Kind::Bytes,
        _ => Kind::Text,
    }
}

fn column_type(k: Kind) -> ColumnType {
    match k {
        Kind::Bool => ColumnType::Boolean,
        Kind::Signed | Kind::Unsigned => ColumnType::Integer,
        Kind::Float | Kind::Double => ColumnType::Number,
        Kind::Decimal => ColumnType::Decimal,
        Kind::Text | Kind::Time => ColumnType::Text,
        Kind::Date => ColumnType::Date,
        Kind::DateTime | Kind::Timestamp => ColumnType::Datetime,
        Kind::Bytes => ColumnType::Bytes,
    }
}

fn decode(row: &MySqlRow, kinds: &[Kind]) -> Result<Vec<Value>, sqlx::Error> {
    let mut out = Vec::with_capacity(kinds.len());
    for (i, k) in kinds.iter().enumerate() {
        if row.try_get_raw(i)?.is_null() {
            out.push(Value::Null);
            continue;
        }
        out.push(match k {
            Kind::Bool => Value::Bool(row.try_get(i)?),
            Kind::Signed => Value::Int(row.try_get(i)?),
            Kind::Unsigned => {
                let u: u64 = row.try_get(i)?;
                i64::try_from(u)
                    .map(Value::Int)
                    .unwrap_or_else(|_| Value::Decimal(u.to_string()))
            }
            Kind::Float => Value::Float(row.try_get::<f32, _>(i)?.into()),
            Kind::Double => Value::Float(row.try_get(i)?),
            Kind::Decimal => Value::Decimal(row.try_get::<BigDecimal, _>(i)?.to_plain_string()),
            Kind::Text => Value::Text(row.try_get_unchecked(i)?),
            Kind::Date => Value::Date(row.try_get(i)?),
            Kind::DateTime => Value::DateTime(row.try_get(i)?),
            Kind::Timestamp => Value::Timestamp(row.try_get(i)?),
            Kind::Time => Value::Text(row.try_get::<chrono::NaiveTime, _>(i)?.to_string()),
            Kind::Bytes => Value::Bytes(row.try_get(i)?),
        });
    }
    Ok(out)
}

#[async_trait]
impl Source for MySqlSource {
    fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn describe(&self, sql: &str) -> Result<Described, SourceError> {
        super::pooled::describe(&self.pool, &self.name, sql, |t| column_type(kind(t))).await
    }

    fn batches<'a>(&'a self, sql: &'a str, params: &'a [Param]) -> BatchStream<'a> {
        let query = super::pooled::bound(sql, params);
        let name = self.name.as_str();
        let mut kinds: Option<Vec<Kind>> = None;
        query
            .fetch(&self.pool)
            .map(move |row| {
                let row = row.map_err(|e| SourceError::from_sqlx(name, e))?;
                let kinds = kinds.get_or_insert_with(|| {
                    row.columns()
                        .iter()
                        .map(|c| kind(c.type_info().name()))
                        .collect()
                });
                decode(&row, kinds).map_err(|e| SourceError::from_sqlx(name, e))
            })
            // The rows the driver already holds, as one batch; the rows before an error go
            // out before it.
            .ready_chunks(BATCH_ROWS)
            .flat_map(|chunk| {
                let mut rows = Vec::with_capacity(chunk.len());
                let mut failure = None;
                // The driver's stream ends at its first error.
                for row in chunk {
                    match row {
                        Ok(row) => rows.push(row),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                let rows = (!rows.is_empty()).then_some(Ok(Chunk::Rows(rows)));
                futures::stream::iter(rows.into_iter().chain(failure.map(Err)))
            })
            // The driver's stream ends after its last row or its first error; only the former
            // is the end of the query.
            .chain(futures::stream::once(async { Ok(Chunk::End) }))
            .scan(false, |failed, item| {
                let item = match item {
                    Ok(Chunk::End) if *failed => None,
                    other => {
                        *failed |= other.is_err();
                        Some(other)
                    }
                };
                futures::future::ready(Some(item))
            })
            .filter_map(futures::future::ready)
            .boxed()
    }

    fn batches_limited<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param],
        timeout: std::time::Duration,
    ) -> BatchStream<'a> {
        if timeout.is_zero() {
            return self.batches(sql, params);
        }
        let (pool, name, flavour) = (self.pool.clone(), self.name.clone(), self.flavour);
        let (sql, params) = (sql.to_string(), params.to_vec());
        let restore = self.statement_timeout;
        super::batched(async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Sent>(4);
            tokio::spawn(
                async move {
                    read_limited(&pool, &name, flavour, &sql, &params, timeout, restore, &tx).await
                }
                .in_current_span(),
            );
            rx
        })
    }

    async fn ping(&self) -> Result<(), SourceError> {
        super::pooled::ping(&self.pool, &self.name).await
    }
}

use tracing::Instrument as _;

/// Runs `sql` under a server-side time limit of `timeout` and sends its rows to `tx` in
/// batches, then the error that ended it, if one did.
#[allow(clippy::too_many_arguments)]
async fn read_limited(
    pool: &MySqlPool,
    name: &str,
    flavour: Flavour,
    sql: &str,
    params: &[Param],
    timeout: std::time::Duration,
    restore: std::time::Duration,
    tx: &tokio::sync::mpsc::Sender<Sent>,
) {
    let fail = |e| SourceError::from_sqlx(name, e);
    let outcome = match flavour {
        Flavour::MariaDb => {
            // The limit is our own number, never user text; it binds this statement only, so
            // the pooled connection keeps its settings.
            let limited = format!(
                "SET STATEMENT max_statement_time = {:.3} FOR {sql}",
                timeout.as_secs_f64().max(0.001)
            );
            let rows = super::pooled::bound(&limited, params).fetch(pool);
            send_rows(name, rows, tx).await
        }
        Flavour::MySql => match pool.acquire().await {
            Err(e) => Err(fail(e)),
            Ok(mut conn) => {
                let set = |d: std::time::Duration| {
                    format!("SET SESSION max_execution_time = {}", d.as_millis())
                };
                let outcome = match sqlx::Executor::execute(&mut *conn, set(timeout).as_str()).await
                {
                    Err(e) => Err(fail(e)),
                    Ok(_) => {
                        let rows = super::pooled::bound(sql, params).fetch(&mut *conn);
                        send_rows(name, rows, tx).await
                    }
                };
                // The session's own limit back, or the connection is not reused.
                let restored = matches!(outcome, Ok(true))
                    && sqlx::Executor::execute(&mut *conn, set(restore).as_str())
                        .await
                        .is_ok();
                if !restored {
                    conn.close_on_drop();
                }
                outcome
            }
        },
    };
    let _ = match outcome {
        Ok(true) => tx.send(Ok(Chunk::End)).await,
        Ok(false) => Ok(()),
        Err(e) => tx.send(Err(e)).await,
    };
}

/// Sends `rows` to `tx` in batches, each as soon as the driver has no more rows ready;
/// `Ok(false)` when the receiver went away first.
async fn send_rows(
    name: &str,
    mut rows: futures::stream::BoxStream<'_, Result<MySqlRow, sqlx::Error>>,
    tx: &tokio::sync::mpsc::Sender<Sent>,
) -> Result<bool, SourceError> {
    let mut kinds: Option<Vec<Kind>> = None;
    let mut batch: Vec<super::Row> = Vec::with_capacity(BATCH_ROWS);
    loop {
        let next = match rows.next().now_or_never() {
            Some(next) => next,
            None => {
                if !batch.is_empty()
                    && tx
                        .send(Ok(Chunk::Rows(std::mem::take(&mut batch))))
                        .await
                        .is_err()
                {
                    return Ok(false);
                }
                rows.next().await
            }
        };
        let Some(row) = next else { break };
        let row = row.map_err(|e| SourceError::from_sqlx(name, e));
        let decoded = row.and_then(|row| {
            let kinds = kinds.get_or_insert_with(|| {
                row.columns()
                    .iter()
                    .map(|c| kind(c.type_info().name()))
                    .collect()
            });
            decode(&row, kinds).map_err(|e| SourceError::from_sqlx(name, e))
        });
        match decoded {
            Ok(values) => batch.push(values),
            Err(e) => {
                if !batch.is_empty() && tx.send(Ok(Chunk::Rows(batch))).await.is_err() {
                    return Ok(false);
                }
                return Err(e);
            }
        }
        if batch.len() >= BATCH_ROWS
            && tx
                .send(Ok(Chunk::Rows(std::mem::take(&mut batch))))
                .await
                .is_err()
        {
            return Ok(false);
        }
    }
    if !batch.is_empty() && tx.send(Ok(Chunk::Rows(batch))).await.is_err() {
        return Ok(false);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flavour_and_the_dialect_come_from_the_server() {
        let (f, d) = server_traits(
            "11.8.3-MariaDB-0+deb13u1",
            "STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION",
        );
        assert_eq!(f, Flavour::MariaDb);
        assert_eq!(d, Dialect::MYSQL);
        let (f, d) = server_traits("8.4.2", "ANSI_QUOTES,NO_BACKSLASH_ESCAPES");
        assert_eq!(f, Flavour::MySql);
        assert_eq!(
            d,
            Dialect::MySql {
                backslash_escapes: false,
                ansi_quotes: true
            }
        );
    }
}
