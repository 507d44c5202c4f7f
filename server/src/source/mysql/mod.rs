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
use std::sync::Arc;

mod binary;

/// The most rows per batch.
const BATCH_ROWS: usize = 256;

pub struct MySqlSource {
    name: String,
    pool: MySqlPool,
    flavour: Flavour,
    dialect: Dialect,
    /// The session's own limit, restored after a shorter one (MySQL only).
    statement_timeout: std::time::Duration,
    /// Per described query, whether each column's character set is `binary` (see
    /// [`MySqlSource::binary_charsets`]). One entry per dataset query, filled at start-up.
    charsets: std::sync::Mutex<std::collections::HashMap<String, Arc<[bool]>>>,
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
            charsets: Default::default(),
        })
    }

    fn charsets_of(&self, sql: &str) -> Option<Arc<[bool]>> {
        self.charsets
            .lock()
            .expect("charset cache lock")
            .get(sql)
            .cloned()
    }

    /// Whether each column of `sql` has the `binary` character set. The protocol's BINARY
    /// flag cannot tell (it is also set for `utf8mb4_bin` text, MariaDB's JSON, UUID and
    /// INET6), and the driver does not pass on the character set, so the server is asked:
    /// `CHARSET()` of each column of the query, over none of its rows: every parameter NULL,
    /// and the query behind `LIMIT 0` (the server's plan says "Zero limit": it is not run) in a
    /// join `ON FALSE`, which still gives the one row `CHARSET()` needs. `None` when the server
    /// cannot answer (no CTEs before MySQL 8): such columns stay binary.
    async fn binary_charsets(&self, sql: &str, described: &Described) -> Option<Arc<[bool]>> {
        if !described
            .columns
            .iter()
            .any(|c| c.kind == ColumnType::Bytes)
        {
            return None;
        }
        let n = described.columns.len();
        let names: Vec<String> = (1..=n).map(|i| format!("c{i}")).collect();
        let charsets: Vec<String> = names.iter().map(|c| format!("CHARSET(z.{c})")).collect();
        // The line break ends a trailing `--` comment in the operator's SQL.
        let probe = format!(
            "WITH exportal_q({}) AS ({}\n) SELECT {} FROM (SELECT 1) AS exportal_one \
             LEFT JOIN (SELECT * FROM exportal_q LIMIT 0) AS z ON FALSE",
            names.join(", "),
            sql.trim().trim_end_matches(';'),
            charsets.join(", ")
        );
        let nulls = vec![Param::Null; described.parameters];
        match super::pooled::bound(&probe, &nulls)
            .fetch_one(&self.pool)
            .await
        {
            Ok(row) => (0..n)
                .map(|i| row.try_get::<String, _>(i).ok().map(|cs| cs == "binary"))
                .collect::<Option<Vec<bool>>>()
                .map(Into::into),
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "the columns' character sets could not be read; binary-flagged text columns are exported as bytes");
                None
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// MySQL's TIME is a duration (-838:59:59 to 838:59:59): written as the server writes it.
    Time,
    /// BIT(n), written as the number its bits make.
    Bit,
    Json,
    /// The server's geometry (SRID + WKB), written as WKT.
    Geometry,
    Bytes,
}

/// The string types the driver names by the protocol's BINARY flag, which the server also
/// sets for text with a binary collation (`utf8mb4_bin`, MariaDB's JSON, UUID and INET6).
fn flagged_binary(type_name: &str) -> bool {
    matches!(
        type_name,
        "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB"
    )
}

/// How a column is read, from the driver's type name and, for the types [`flagged_binary`]
/// cannot settle, whether the server's character set for it is `binary` (`None`: not known,
/// taken as binary, so no bytes are ever mistaken for text).
fn kind(type_name: &str, binary_charset: Option<bool>) -> Kind {
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
        "BIT" => Kind::Bit,
        "JSON" => Kind::Json,
        "GEOMETRY" => Kind::Geometry,
        name if flagged_binary(name) && binary_charset == Some(false) => Kind::Text,
        name if flagged_binary(name) => Kind::Bytes,
        _ => Kind::Text,
    }
}

fn column_type(type_name: &str, k: Kind) -> ColumnType {
    match k {
        Kind::Bool => ColumnType::Boolean,
        Kind::Signed | Kind::Unsigned | Kind::Bit => ColumnType::Integer,
        Kind::Float | Kind::Double => ColumnType::Number,
        Kind::Decimal => ColumnType::Decimal,
        Kind::Text if matches!(type_name, "ENUM" | "SET") => ColumnType::Enum,
        Kind::Text => ColumnType::Text,
        Kind::Time => ColumnType::Time,
        Kind::Date => ColumnType::Date,
        Kind::DateTime | Kind::Timestamp => ColumnType::Datetime,
        Kind::Json => ColumnType::Json,
        Kind::Geometry => ColumnType::Geometry,
        Kind::Bytes => ColumnType::Bytes,
    }
}

/// The kinds of a row's columns; `binary` holds the charset answers for the query, if known.
fn kinds_of(row: &MySqlRow, binary: Option<&[bool]>) -> Vec<Kind> {
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, c)| kind(c.type_info().name(), binary.and_then(|b| b.get(i).copied())))
        .collect()
}

fn decode(source: &str, row: &MySqlRow, kinds: &[Kind]) -> Result<Vec<Value>, SourceError> {
    let fail = |e| SourceError::from_sqlx(source, e);
    let mut out = Vec::with_capacity(kinds.len());
    for (i, k) in kinds.iter().enumerate() {
        // The driver calls a zero date NULL; only a cell without bytes is one. A temporal
        // value's bytes (its length byte first) are read once, here.
        let temporal = matches!(k, Kind::Date | Kind::DateTime | Kind::Timestamp)
            .then(|| row.try_get_unchecked::<&[u8], _>(i).ok());
        let null = match temporal {
            Some(bytes) => bytes.is_none(),
            None => row.try_get_raw(i).map_err(fail)?.is_null(),
        };
        if null {
            out.push(Value::Null);
            continue;
        }
        // The statement protocol's bytes, for the types read here rather than by the driver.
        let raw = || row.try_get_unchecked::<&[u8], _>(i).map_err(fail);
        let invalid = || {
            SourceError::query(format!(
                "A value in column {} could not be read as {k:?}.",
                i + 1
            ))
        };
        out.push(match k {
            Kind::Bool => Value::Bool(row.try_get(i).map_err(fail)?),
            Kind::Signed => Value::Int(row.try_get(i).map_err(fail)?),
            Kind::Unsigned => unsigned(row.try_get(i).map_err(fail)?),
            Kind::Float => Value::Float(row.try_get::<f32, _>(i).map_err(fail)?.into()),
            Kind::Double => Value::Float(row.try_get(i).map_err(fail)?),
            Kind::Decimal => Value::Decimal(
                row.try_get::<BigDecimal, _>(i)
                    .map_err(fail)?
                    .to_plain_string(),
            ),
            Kind::Text => Value::Text(row.try_get_unchecked(i).map_err(fail)?),
            Kind::Json => Value::Json(row.try_get_unchecked(i).map_err(fail)?),
            Kind::Date | Kind::DateTime | Kind::Timestamp => {
                let bytes = temporal.flatten().unwrap_or_default();
                let parts =
                    binary::date_parts(bytes.get(1..).unwrap_or_default()).ok_or_else(invalid)?;
                calendar(*k, parts).unwrap_or_else(|| Value::Text(parts.text(*k != Kind::Date)))
            }
            // TIME keeps its length byte in front, too.
            Kind::Time => Value::Text(
                binary::time_text(raw()?.get(1..).unwrap_or_default()).ok_or_else(invalid)?,
            ),
            Kind::Bit => unsigned(binary::bit_value(raw()?).ok_or_else(invalid)?),
            Kind::Geometry => Value::Text(binary::geometry_wkt(raw()?).ok_or_else(invalid)?),
            Kind::Bytes => Value::Bytes(row.try_get(i).map_err(fail)?),
        });
    }
    Ok(out)
}

/// A 64-bit unsigned value.
fn unsigned(u: u64) -> Value {
    i64::try_from(u).map(Value::Int).unwrap_or(Value::UInt(u))
}

/// A date or date-time that is on the calendar; `None` for MySQL's zero dates
/// (`0000-00-00`, `2024-00-15`), which are then written as the server writes them instead of
/// turning into a silent NULL.
fn calendar(kind: Kind, p: binary::DateParts) -> Option<Value> {
    if !p.is_calendar_date() {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(p.year.into(), p.month.into(), p.day.into())?;
    let at = date.and_hms_micro_opt(p.hour.into(), p.minute.into(), p.second.into(), p.micros)?;
    Some(match kind {
        Kind::Date => Value::Date(date),
        // The driver sets the session's time zone to UTC, so TIMESTAMPs arrive in UTC.
        Kind::Timestamp => Value::Timestamp(at.and_utc().fixed_offset()),
        _ => Value::DateTime(at),
    })
}

#[async_trait]
impl Source for MySqlSource {
    fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn describe(&self, sql: &str) -> Result<Described, SourceError> {
        let described = super::pooled::describe(&self.pool, &self.name, sql, |t| {
            column_type(t.name(), kind(t.name(), None))
        })
        .await?;
        // Which of the columns the protocol flags as binary really are: asked once, at
        // start-up, and kept for the exports of this query.
        let binary = self.binary_charsets(sql, &described).await;
        let mut described = described;
        if let Some(binary) = &binary {
            for (column, &is_binary) in described.columns.iter_mut().zip(binary.iter()) {
                if column.kind == ColumnType::Bytes && !is_binary {
                    column.kind = ColumnType::Text;
                }
            }
            self.charsets
                .lock()
                .expect("charset cache lock")
                .insert(sql.to_string(), binary.clone());
        }
        Ok(described)
    }

    fn batches<'a>(&'a self, sql: &'a str, params: &'a [Param]) -> BatchStream<'a> {
        let query = super::pooled::bound(sql, params);
        let name = self.name.as_str();
        let binary = self.charsets_of(sql);
        let mut kinds: Option<Vec<Kind>> = None;
        query
            .fetch(&self.pool)
            .map(move |row| {
                let row = row.map_err(|e| SourceError::from_sqlx(name, e))?;
                let kinds = kinds.get_or_insert_with(|| kinds_of(&row, binary.as_deref()));
                decode(name, &row, kinds)
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
        let binary = self.charsets_of(sql);
        let (sql, params) = (sql.to_string(), params.to_vec());
        let restore = self.statement_timeout;
        super::batched(async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Sent>(4);
            tokio::spawn(
                async move {
                    let query = Limited {
                        flavour,
                        sql: &sql,
                        params: &params,
                        timeout,
                        restore,
                        binary: binary.as_deref(),
                    };
                    read_limited(&pool, &name, &query, &tx).await
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

/// A query that the server stops at `timeout`; `restore` is the session's own limit.
struct Limited<'a> {
    flavour: Flavour,
    sql: &'a str,
    params: &'a [Param],
    timeout: std::time::Duration,
    restore: std::time::Duration,
    binary: Option<&'a [bool]>,
}

/// Runs the query under its server-side time limit and sends its rows to `tx` in batches,
/// then the error that ended it, if one did.
async fn read_limited(
    pool: &MySqlPool,
    name: &str,
    query: &Limited<'_>,
    tx: &tokio::sync::mpsc::Sender<Sent>,
) {
    let Limited {
        flavour,
        sql,
        params,
        timeout,
        restore,
        binary,
    } = *query;
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
            send_rows(name, rows, binary, tx).await
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
                        send_rows(name, rows, binary, tx).await
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
    binary: Option<&[bool]>,
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
            let kinds = kinds.get_or_insert_with(|| kinds_of(&row, binary));
            decode(name, &row, kinds)
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
