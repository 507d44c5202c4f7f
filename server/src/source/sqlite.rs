//! SQLite through rusqlite, read-only, each query on a blocking thread of its own.
//!
//! SQLite is a library call, not a network round trip, so a thread steps the statement and hands
//! rows to the async side in batches. (sqlx's SQLite driver passes every row through a channel
//! from its worker thread and copies every value first; exports ran at about a third of the
//! `sqlite3` shell's speed with it.) Each query opens its own read-only connection, which takes
//! microseconds for a local file; a semaphore bounds how many run at once.
//!
//! A progress handler interrupts a statement whose reader went away (the export was cancelled, a
//! preview has its rows) or that ran past the statement timeout, so even a long sort before the
//! first row stops promptly.
//!
//! SQLite types are per value, so each cell is decoded by its storage class, with the column's
//! declared type as a hint for dates and booleans.

use super::{
    datetime, BatchStream, Chunk, Described, Param, Row, Sent, Source, SourceColumn, SourceError,
    SourceErrorKind, SourceOptions, Value,
};
use crate::catalog::sql::Dialect;
use app::catalog::ColumnType;
use async_trait::async_trait;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Rows per hand-over from the SQLite thread.
const BATCH_ROWS: usize = 256;
/// SQLite virtual-machine steps between checks for a cancel or the deadline.
const CHECK_EVERY_OPS: i32 = 10_000;

pub struct SqliteSource {
    name: String,
    path: String,
    options: SourceOptions,
    slots: Arc<Semaphore>,
}

/// The file path of a `sqlite://path` or `sqlite:path` URL (URL options are not used: sources
/// are always opened read-only).
fn database_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty()).then_some(path)
}

impl SqliteSource {
    pub async fn connect(
        name: &str,
        url: &str,
        options: &SourceOptions,
    ) -> Result<Self, SourceError> {
        let path = database_path(url).ok_or_else(|| {
            SourceError::query(format!(
                "source `{name}`: invalid SQLite URL (expected sqlite://path/to/file.db)"
            ))
        })?;
        let source = Self {
            name: name.to_string(),
            path: path.to_string(),
            options: options.clone(),
            slots: Arc::new(Semaphore::new(options.max_connections.max(1) as usize)),
        };
        // Opening it now makes a missing or unreadable file a start-up error.
        source.ping().await?;
        Ok(source)
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, SourceError> {
        let acquire = self.slots.clone().acquire_owned();
        match tokio::time::timeout(self.options.connect_timeout, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(unavailable(
                &self.name,
                "timed out waiting for a connection".into(),
            )),
        }
    }

    /// Runs `work` on a fresh connection in a blocking thread, within the connection limit.
    async fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, SourceError> {
        let permit = self.slot().await?;
        let (name, path, options) = (self.name.clone(), self.path.clone(), self.options.clone());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = open(&path, &options).map_err(|e| classify(&name, e, false))?;
            work(&conn).map_err(|e| classify(&name, e, false))
        })
        .await
        .map_err(|e| unavailable(&self.name, format!("its reader stopped: {e}")))?
    }
}

fn unavailable(source: &str, what: String) -> SourceError {
    logged(
        SourceError {
            kind: SourceErrorKind::Unavailable,
            message: format!("The database `{source}` is not reachable right now."),
            detail: what,
        },
        source,
    )
}

/// The driver's text goes to the log (and `detail`), never into the user's message.
fn logged(e: SourceError, source: &str) -> SourceError {
    tracing::warn!(source, detail = %e.detail, "{}", e.message);
    e
}

fn open(path: &str, options: &SourceOptions) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A writer holding the file briefly is waited for instead of failing the export.
    conn.busy_timeout(options.connect_timeout)?;
    Ok(conn)
}

/// A driver error in words for the person who asked; busy and unopenable files are worth a retry.
fn classify(source: &str, e: rusqlite::Error, timed_out: bool) -> SourceError {
    if let rusqlite::Error::SqliteFailure(failure, detail) = &e {
        let detail = detail.clone().unwrap_or_else(|| failure.to_string());
        match failure.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen => {
                return unavailable(source, detail)
            }
            ErrorCode::OperationInterrupted if timed_out => {
                return SourceError::query(format!(
                    "The query on `{source}` ran longer than its statement timeout and was stopped."
                ))
            }
            _ => {
                let mut e = SourceError::query(format!(
                    "The database `{source}` rejected the query (SQLite error {}).",
                    failure.extended_code
                ));
                e.detail = detail;
                return logged(e, source);
            }
        }
    }
    let mut failed = SourceError::query(format!("The database `{source}` failed."));
    failed.detail = e.to_string();
    logged(failed, source)
}

fn column_type(declared: &str) -> ColumnType {
    let d = declared.to_ascii_uppercase();
    if d.contains("INT") {
        ColumnType::Integer
    } else if d.contains("BOOL") {
        ColumnType::Boolean
    } else if d.contains("DATETIME") || d.contains("TIMESTAMP") {
        ColumnType::Datetime
    } else if d == "DATE" {
        ColumnType::Date
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        ColumnType::Text
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        ColumnType::Number
    } else if d.contains("NUMERIC") || d.contains("DECIMAL") {
        ColumnType::Decimal
    } else if d.contains("BLOB") {
        ColumnType::Bytes
    } else {
        ColumnType::Unknown
    }
}

fn decode(value: ValueRef<'_>, hint: &ColumnType) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) if *hint == ColumnType::Boolean => Value::Bool(i != 0),
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
        ValueRef::Text(bytes) => {
            let text = match std::str::from_utf8(bytes) {
                Ok(s) => s,
                // SQLite does not check encodings; a bad byte must not fail the export.
                Err(_) => return Value::Text(String::from_utf8_lossy(bytes).into_owned()),
            };
            match hint {
                ColumnType::Date => datetime::parse_date(text)
                    .map(Value::Date)
                    .unwrap_or_else(|| Value::Text(text.to_string())),
                ColumnType::Datetime => super::parse_datetime_text(text)
                    .unwrap_or_else(|| Value::Text(text.to_string())),
                _ => Value::Text(text.to_string()),
            }
        }
    }
}

fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[Param]) -> rusqlite::Result<()> {
    for (i, p) in params.iter().enumerate() {
        let at = i + 1;
        match p {
            Param::Null => stmt.raw_bind_parameter(at, rusqlite::types::Null)?,
            Param::Bool(b) => stmt.raw_bind_parameter(at, *b)?,
            Param::Int(n) => stmt.raw_bind_parameter(at, *n)?,
            Param::Float(f) => stmt.raw_bind_parameter(at, *f)?,
            Param::Text(s) => stmt.raw_bind_parameter(at, s.as_str())?,
            // The text forms SQLite's date functions write and compare with.
            Param::Date(d) => stmt.raw_bind_parameter(at, d.format("%Y-%m-%d").to_string())?,
            Param::DateTime(dt) => {
                stmt.raw_bind_parameter(at, dt.format("%Y-%m-%d %H:%M:%S").to_string())?
            }
        }
    }
    Ok(())
}

/// Steps the statement on this (blocking) thread and sends the rows in batches until they end,
/// the receiver goes away, or the statement fails; the rows read before a failure are sent
/// before it.
fn produce(
    name: &str,
    path: &str,
    sql: &str,
    params: &[Param],
    options: &SourceOptions,
    tx: &mpsc::Sender<Sent>,
) -> Result<(), SourceError> {
    let conn = open(path, options).map_err(|e| classify(name, e, false))?;
    let timed_out = Arc::new(AtomicBool::new(false));
    let deadline =
        (!options.statement_timeout.is_zero()).then(|| Instant::now() + options.statement_timeout);
    let (watch, late) = (tx.clone(), timed_out.clone());
    conn.progress_handler(
        CHECK_EVERY_OPS,
        Some(move || {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                late.store(true, Ordering::Relaxed);
                return true;
            }
            watch.is_closed()
        }),
    );
    let fail = |e| classify(name, e, timed_out.load(Ordering::Relaxed));
    let mut stmt = conn.prepare(sql).map_err(fail)?;
    bind(&mut stmt, params).map_err(fail)?;
    let hints: Vec<ColumnType> = stmt
        .columns()
        .iter()
        .map(|c| column_type(c.decl_type().unwrap_or_default()))
        .collect();
    let mut rows = stmt.raw_query();
    let mut batch: Vec<Row> = Vec::with_capacity(BATCH_ROWS);
    let read_row = |row: &rusqlite::Row<'_>| -> rusqlite::Result<Row> {
        let mut values = Vec::with_capacity(hints.len());
        for (i, hint) in hints.iter().enumerate() {
            values.push(decode(row.get_ref(i)?, hint));
        }
        Ok(values)
    };
    let ended = loop {
        match rows.next().and_then(|row| row.map(read_row).transpose()) {
            Ok(Some(values)) => batch.push(values),
            Ok(None) => break Ok(()),
            Err(e) => break Err(fail(e)),
        }
        if batch.len() == BATCH_ROWS {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
            if tx.blocking_send(Ok(Chunk::Rows(full))).is_err() {
                return Ok(());
            }
        }
    };
    if !batch.is_empty() {
        let _ = tx.blocking_send(Ok(Chunk::Rows(batch)));
    }
    if ended.is_ok() {
        let _ = tx.blocking_send(Ok(Chunk::End));
    }
    ended
}

#[async_trait]
impl Source for SqliteSource {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn describe(&self, sql: &str) -> Result<Described, SourceError> {
        let sql = sql.to_string();
        self.with_connection(move |conn| {
            let stmt = conn.prepare(&sql)?;
            Ok(Described {
                columns: stmt
                    .columns()
                    .iter()
                    .map(|c| SourceColumn {
                        name: c.name().to_string(),
                        kind: column_type(c.decl_type().unwrap_or_default()),
                    })
                    .collect(),
                parameters: stmt.parameter_count(),
            })
        })
        .await
    }

    fn batches<'a>(&'a self, sql: &'a str, params: &'a [Param]) -> BatchStream<'a> {
        self.batches_limited(sql, params, self.options.statement_timeout)
    }

    /// SQLite runs in this process: the progress handler interrupts the statement at
    /// `timeout`, which stops it as surely as a server-side timeout would.
    fn batches_limited<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param],
        timeout: std::time::Duration,
    ) -> BatchStream<'a> {
        let (sql, params) = (sql.to_string(), params.to_vec());
        let (name, path) = (self.name.clone(), self.path.clone());
        let mut options = self.options.clone();
        if !timeout.is_zero()
            && (options.statement_timeout.is_zero() || timeout < options.statement_timeout)
        {
            options.statement_timeout = timeout;
        }
        super::batched(async move {
            let (tx, rx) = mpsc::channel::<Sent>(4);
            match self.slot().await {
                Ok(permit) => {
                    tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        if let Err(e) = produce(&name, &path, &sql, &params, &options, &tx) {
                            let _ = tx.blocking_send(Err(e));
                        }
                    });
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
            rx
        })
    }

    async fn ping(&self) -> Result<(), SourceError> {
        self.with_connection(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_file_and_their_options_are_ignored() {
        assert_eq!(database_path("sqlite:///data/x.db"), Some("/data/x.db"));
        assert_eq!(database_path("sqlite://rel/x.db?mode=ro"), Some("rel/x.db"));
        assert_eq!(database_path("sqlite:x.db"), Some("x.db"));
        assert_eq!(database_path("sqlite://"), None);
        assert_eq!(database_path("postgres://x"), None);
    }

    #[test]
    fn cells_decode_by_storage_class_with_the_declared_type_as_a_hint() {
        use ColumnType as T;
        assert_eq!(decode(ValueRef::Integer(1), &T::Boolean), Value::Bool(true));
        assert_eq!(decode(ValueRef::Integer(7), &T::Unknown), Value::Int(7));
        assert_eq!(
            decode(ValueRef::Text(b"2024-03-01"), &T::Date),
            Value::Date(chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap())
        );
        assert_eq!(
            decode(ValueRef::Text(b"soon"), &T::Datetime),
            Value::Text("soon".into())
        );
        assert_eq!(
            decode(ValueRef::Text(b"a\xffb"), &T::Text),
            Value::Text("a\u{fffd}b".into())
        );
    }
}
