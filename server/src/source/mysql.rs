//! MySQL / MariaDB through sqlx. Rows are streamed from the server; each column's decoder is
//! chosen once, from the first row's types.

use super::{BatchStream, Chunk, Param, Source, SourceColumn, SourceError, SourceOptions, Value};
use crate::catalog::sql::ParamStyle;
use app::catalog::ColumnType;
use async_trait::async_trait;
use futures::StreamExt;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::types::BigDecimal;
use sqlx::{Column, Executor, Row, TypeInfo, ValueRef};
use std::str::FromStr;

/// The most rows per batch.
const BATCH_ROWS: usize = 256;

pub struct MySqlSource {
    name: String,
    pool: MySqlPool,
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
        Ok(Self {
            name: name.to_string(),
            pool,
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
    fn style(&self) -> ParamStyle {
        ParamStyle::Question
    }

    async fn describe(&self, sql: &str) -> Result<Vec<SourceColumn>, SourceError> {
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

    async fn ping(&self) -> Result<(), SourceError> {
        super::pooled::ping(&self.pool, &self.name).await
    }
}
