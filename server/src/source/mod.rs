//! Sources: where rows come from. One adapter per database driver, all streamed row by row.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use std::fmt::Write as _;

/// One cell, as every driver's value maps into it (see `format` for how each is written).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// An unsigned 64-bit integer past `i64::MAX` (MySQL's `BIGINT UNSIGNED`, `BIT(64)`).
    UInt(u64),
    Float(f64),
    /// Exact decimal digits as the database printed them (NUMERIC / DECIMAL).
    Decimal(String),
    Text(String),
    Date(NaiveDate),
    /// A timestamp without time zone.
    DateTime(NaiveDateTime),
    /// A timestamp with time zone: sources give it in UTC, and an export's time zone option
    /// moves it to that zone's offset before it is written.
    Timestamp(DateTime<FixedOffset>),
    /// A time of day without a date.
    Time(NaiveTime),
    /// A JSON document as the database printed it: embedded as JSON by the JSON formats (when
    /// it parses), written as its text by the others.
    Json(String),
    /// An array (nested for more dimensions): a JSON array in the JSON formats, PostgreSQL's
    /// `{a,"b c",NULL}` text elsewhere.
    Array(Vec<Value>),
    Bytes(Vec<u8>),
}

impl Value {
    /// Appends the plain-text form used by CSV (and by JSON inside a string): see the table in
    /// `format`. Text is appended unchanged.
    pub fn write_plain(&self, out: &mut String) {
        match self {
            Value::Null => {}
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
            Value::UInt(u) => out.push_str(itoa::Buffer::new().format(*u)),
            Value::Float(f) if f.is_finite() => out.push_str(ryu::Buffer::new().format_finite(*f)),
            Value::Float(f) => {
                let _ = write!(out, "{f}");
            }
            Value::Decimal(d) => out.push_str(d),
            Value::Text(s) => out.push_str(s),
            Value::Date(d) => datetime::write_date(out, *d),
            Value::DateTime(dt) => datetime::write_datetime(out, *dt),
            // UTC, what every source gives, skips the offset arithmetic: this is on every row
            // of most exports.
            Value::Timestamp(ts) if ts.offset().local_minus_utc() == 0 => {
                datetime::write_datetime(out, ts.naive_utc());
                out.push('Z');
            }
            Value::Timestamp(ts) => {
                datetime::write_datetime(out, ts.naive_local());
                datetime::write_offset(out, ts.offset().local_minus_utc());
            }
            Value::Time(t) => datetime::write_time(out, *t),
            Value::Json(j) => out.push_str(j),
            Value::Array(items) => write_array(out, items),
            Value::Bytes(b) => out.push_str(&crate::format::base64(b)),
        }
    }
}

/// PostgreSQL's text form of an array, `{1,"a b",NULL,{2,3}}`: an element is quoted when it is
/// empty, is the word NULL, or holds a brace, a comma, a quote, a backslash or white space;
/// inside quotes, `"` and `\` are escaped with a backslash. Elements are written as they are
/// on their own (so a timestamp keeps Exportal's form).
fn write_array(out: &mut String, items: &[Value]) {
    out.push('{');
    let mut element = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => write_array(out, inner),
            other => {
                element.clear();
                other.write_plain(&mut element);
                let quote = element.is_empty()
                    || element.eq_ignore_ascii_case("NULL")
                    || element.chars().any(|c| {
                        matches!(c, '{' | '}' | ',' | '"' | '\\')
                            || matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
                    });
                if quote {
                    out.push('"');
                    for c in element.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                } else {
                    out.push_str(&element);
                }
            }
        }
    }
    out.push('}');
}

pub mod datetime;
mod mysql;
mod pooled;
mod postgres;
mod sqlite;

use crate::catalog::sql::Dialect;
use app::catalog::ColumnType;
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::sync::Arc;
use std::time::Duration;

/// A value bound to a `:name` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Date(NaiveDate),
    DateTime(NaiveDateTime),
}

/// What describing a statement tells: its columns, and how many parameters the database
/// itself counts in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub columns: Vec<SourceColumn>,
    pub parameters: usize,
}

/// A column as the source describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceColumn {
    pub name: String,
    pub kind: ColumnType,
}

/// Whether trying again later may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// The database could not be reached or timed out: worth retrying.
    Unavailable,
    /// The query itself failed (syntax, permission, type): retrying will not help.
    Query,
}

/// A source failure: a short, stable `message` for the person who asked for the export (it
/// never carries the database's own text, which may show table names, values or the server's
/// version), and the driver's full text in `detail`, for the operator's log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub kind: SourceErrorKind,
    pub message: String,
    /// The driver's text, for the log only (empty when `message` says it all).
    pub detail: String,
}

impl SourceError {
    pub fn query(message: impl Into<String>) -> Self {
        Self {
            kind: SourceErrorKind::Query,
            message: message.into(),
            detail: String::new(),
        }
    }

    /// `message`, and the detail after it when there is one: for the operator (start-up errors).
    pub fn full(&self) -> String {
        if self.detail.is_empty() {
            self.message.clone()
        } else {
            format!("{} ({})", self.message, self.detail)
        }
    }

    /// Classifies a driver error; `source` names the source in the message (never its URL,
    /// which may carry a password). The driver's text is logged here, once, as a warning with
    /// the source's name (the caller's span adds the job), and kept in `detail`.
    pub fn from_sqlx(source: &str, e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let error = |kind, message: String, detail: String| {
            tracing::warn!(source, detail = %detail, "{message}");
            Self {
                kind,
                message,
                detail,
            }
        };
        let unavailable = |detail: String| {
            error(
                SourceErrorKind::Unavailable,
                format!("The database `{source}` is not reachable right now."),
                detail,
            )
        };
        match e {
            E::Io(e) => unavailable(e.to_string()),
            E::Tls(e) => unavailable(format!("TLS: {e}")),
            E::PoolTimedOut => unavailable("timed out waiting for a connection".into()),
            E::PoolClosed | E::WorkerCrashed => unavailable("its connection pool is closed".into()),
            E::Protocol(p) => unavailable(format!("protocol error: {p}")),
            E::Database(db) => {
                let code = db.code().map(|c| c.to_string()).unwrap_or_default();
                let number = db
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(|m| m.number());
                let detail = match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    Some(pg) => {
                        let mut text = format!("{code}: {}", pg.message());
                        for extra in [pg.detail(), pg.hint()].into_iter().flatten() {
                            text.push_str("; ");
                            text.push_str(extra);
                        }
                        text
                    }
                    None => match number {
                        Some(n) => format!("{n} ({code}): {}", db.message()),
                        None => format!("{code}: {}", db.message()),
                    },
                };
                let shown = number.map_or(code.clone(), |n| n.to_string());
                match number.map_or_else(|| postgres_class(&code), mysql_class) {
                    Class::Transient => error(
                        SourceErrorKind::Unavailable,
                        format!(
                            "The database `{source}` could not complete the query right now (error {shown})."
                        ),
                        detail,
                    ),
                    Class::TimedOut => error(
                        SourceErrorKind::Query,
                        format!(
                            "The query on `{source}` ran longer than its statement timeout and was stopped."
                        ),
                        detail,
                    ),
                    Class::Rejected => error(
                        SourceErrorKind::Query,
                        format!("The database `{source}` rejected the query (error {shown})."),
                        detail,
                    ),
                }
            }
            E::ColumnDecode { index, source: e } => error(
                SourceErrorKind::Query,
                format!("A value in column {index} could not be read."),
                e.to_string(),
            ),
            other => error(
                SourceErrorKind::Query,
                format!("The database `{source}` failed."),
                other.to_string(),
            ),
        }
    }
}

/// What a database error means for the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Worth a retry: the connection, the server or a lock failed, not the query.
    Transient,
    /// Stopped by a statement timeout.
    TimedOut,
    /// The query itself is wrong for the database: retrying will not help.
    Rejected,
}

/// PostgreSQL, by SQLSTATE: the connection (08…), shutdown (57P0x), serialisation and deadlock
/// (40…) and too-many-connections (53300) classes are transient; 57014 is a statement timeout
/// (or a cancel, which Exportal only sends for timeouts).
pub fn postgres_class(sqlstate: &str) -> Class {
    if sqlstate == "57014" {
        Class::TimedOut
    } else if sqlstate.starts_with("08")
        || sqlstate.starts_with("57P0")
        || sqlstate.starts_with("40")
        || sqlstate == "53300"
    {
        Class::Transient
    } else {
        Class::Rejected
    }
}

/// MySQL/MariaDB, by error number (their SQLSTATEs are too coarse: most are HY000).
pub fn mysql_class(number: u16) -> Class {
    match number {
        // Lock wait timeout, deadlock, server gone away, lost connection; too many
        // connections, server shutdown, connection killed (MariaDB).
        1205 | 1213 | 2006 | 2013 | 1040 | 1053 | 1927 => Class::Transient,
        // MariaDB's max_statement_time, MySQL's max_execution_time.
        1969 | 3024 => Class::TimedOut,
        _ => Class::Rejected,
    }
}

/// Connection settings of one source.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub max_connections: u32,
    pub connect_timeout: Duration,
    /// The longest a single export query may run (0: no limit).
    pub statement_timeout: Duration,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            max_connections: 4,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(3600),
        }
    }
}

/// One result row, in the query's column order.
pub type Row = Vec<Value>;

/// What a source stream yields, in order: batches of rows (never empty), then exactly one
/// [`Chunk::End`] once the query has run to its end; or an error as the last item instead.
///
/// The end is explicit because a reader that dies (a panicking thread, a dropped task) closes
/// its channel exactly as a finished one does: without the marker, a cut-off result would be
/// indistinguishable from a complete one and a truncated file would be recorded as succeeded.
#[derive(Debug)]
pub enum Chunk {
    Rows(Vec<Row>),
    End,
}

/// A query's rows in batches, as the driver hands them over (see [`Chunk`]).
pub type BatchStream<'a> = BoxStream<'a, Result<Chunk, SourceError>>;

/// A query's rows one at a time; like [`complete`], it fails when the source stops without its
/// end marker.
pub type RowStream<'a> = BoxStream<'a, Result<Row, SourceError>>;

/// What a reader on another thread or task hands over: batches, then the end marker or the
/// error that ended the query.
type Sent = Result<Chunk, SourceError>;

/// The error of a stream that stopped without its end marker.
fn cut_off() -> SourceError {
    // Most likely a dropped connection or a reader that died: worth another attempt, and the
    // attempt limit ends it if it keeps happening.
    SourceError {
        kind: SourceErrorKind::Unavailable,
        message: "The database connection stopped before the query finished; the rows read so far were discarded.".into(),
        detail: String::new(),
    }
}

/// The batches of `stream`, ending (`None`) only after the source's end marker: a stream that
/// stops without it yields an error as its last item. Anything after the end or an error is
/// ignored.
pub fn complete(stream: BatchStream<'_>) -> BoxStream<'_, Result<Vec<Row>, SourceError>> {
    use futures::StreamExt;
    futures::stream::unfold(Some(stream), |state| async move {
        let mut stream = state?;
        loop {
            return match stream.next().await {
                Some(Ok(Chunk::Rows(rows))) if rows.is_empty() => continue,
                Some(Ok(Chunk::Rows(rows))) => Some((Ok(rows), Some(stream))),
                Some(Ok(Chunk::End)) => None,
                Some(Err(e)) => Some((Err(e), None)),
                None => Some((Err(cut_off()), None)),
            };
        }
    })
    .boxed()
}

/// The batches from the receiver `start` yields; `start` runs when the stream is first polled,
/// so nothing is read for a stream that is never used.
fn batched<'a>(
    start: impl std::future::Future<Output = tokio::sync::mpsc::Receiver<Sent>> + Send + 'a,
) -> BatchStream<'a> {
    use futures::StreamExt;
    futures::stream::once(start)
        .flat_map(|rx| {
            futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|sent| (sent, rx))
            })
        })
        .boxed()
}

/// A database that datasets read from.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// How this database reads SQL (and so how it writes positional parameters).
    fn dialect(&self) -> Dialect;
    /// The columns and the parameter count of `sql` (already in this driver's parameter
    /// style), without running it.
    async fn describe(&self, sql: &str) -> Result<Described, SourceError>;
    /// Streams the rows of `sql` with `params` bound in order, in batches (exports pass them on
    /// whole, so no per-row hand-over is paid twice).
    fn batches<'a>(&'a self, sql: &'a str, params: &'a [Param]) -> BatchStream<'a>;
    /// Like [`Source::batches`], but the database itself stops the query after `timeout` (previews and counts).
    fn batches_limited<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param],
        timeout: std::time::Duration,
    ) -> BatchStream<'a> {
        let _ = timeout;
        self.batches(sql, params)
    }
    /// The same rows one at a time (previews, counts); fails if the source stops without its
    /// end marker.
    fn rows<'a>(&'a self, sql: &'a str, params: &'a [Param]) -> RowStream<'a> {
        use futures::future::Either;
        use futures::StreamExt;
        complete(self.batches(sql, params))
            .flat_map(|batch| match batch {
                Ok(rows) => Either::Left(futures::stream::iter(rows.into_iter().map(Ok))),
                Err(e) => Either::Right(futures::stream::iter([Err(e)])),
            })
            .boxed()
    }
    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), SourceError>;
}

/// Opens a source from its URL: `sqlite:`, `postgres:`/`postgresql:` or `mysql:`/`mariadb:`.
pub async fn connect(
    name: &str,
    url: &str,
    options: &SourceOptions,
) -> Result<Arc<dyn Source>, SourceError> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "sqlite" => Ok(Arc::new(
            sqlite::SqliteSource::connect(name, url, options).await?,
        )),
        "postgres" | "postgresql" => Ok(Arc::new(
            postgres::PgSource::connect(name, url, options).await?,
        )),
        "mysql" | "mariadb" => Ok(Arc::new(
            mysql::MySqlSource::connect(name, url, options).await?,
        )),
        _ => Err(SourceError::query(format!(
            "source `{name}`: unsupported URL scheme `{scheme}:` (use sqlite:, postgres: or mysql:)"
        ))),
    }
}

/// The `COPY` statement the PostgreSQL source runs for `sql` (in `$n` style) with `params`,
/// given the type names PostgreSQL inferred for the `$n`: public so that a test can show the
/// plan PostgreSQL makes for it (each value read once, in an InitPlan).
pub fn postgres_copy_statement(
    sql: &str,
    params: &[Param],
    inferred: &[String],
) -> Result<String, SourceError> {
    postgres::copy_statement(sql, params, inferred)
}

/// `SELECT COUNT(*)` around a query, for the estimate shown before an export.
pub fn count_sql(sql: &str) -> String {
    // The line break ends a trailing `--` comment in the operator's SQL.
    format!(
        "SELECT COUNT(*) FROM ({}\n) AS exportal_count",
        sql.trim().trim_end_matches(';')
    )
}

/// Parses the text forms SQLite and others use for timestamps.
pub(crate) fn parse_datetime_text(s: &str) -> Option<Value> {
    if let Some(dt) = datetime::parse_naive_datetime(s) {
        return Some(Value::DateTime(dt));
    }
    if let Ok(ts) = DateTime::parse_from_rfc3339(s) {
        return Some(Value::Timestamp(ts.with_timezone(&Utc).fixed_offset()));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Value::DateTime(dt));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn rows(n: i64) -> Result<Chunk, SourceError> {
        Ok(Chunk::Rows(vec![vec![Value::Int(n)]]))
    }

    async fn collect(items: Vec<Result<Chunk, SourceError>>) -> Vec<Result<usize, String>> {
        complete(futures::stream::iter(items).boxed())
            .map(|b| b.map(|rows| rows.len()).map_err(|e| e.message))
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_stream_is_complete_only_after_its_end_marker() {
        assert_eq!(
            collect(vec![rows(1), rows(2), Ok(Chunk::End)]).await,
            [Ok(1), Ok(1)]
        );
        // What follows the end (or an error) is never passed on.
        assert_eq!(
            collect(vec![rows(1), Ok(Chunk::End), rows(2)]).await,
            [Ok(1)]
        );
        let failed = collect(vec![rows(1), Err(SourceError::query("boom")), rows(2)]).await;
        assert_eq!(failed, [Ok(1), Err("boom".to_string())]);
    }

    #[tokio::test]
    async fn a_stream_that_stops_without_its_end_marker_is_a_failure() {
        let cut = collect(vec![rows(1), rows(2)]).await;
        assert_eq!(cut.len(), 3);
        assert!(cut[2]
            .as_ref()
            .unwrap_err()
            .contains("stopped before the query finished"));
        assert!(collect(vec![]).await[0].is_err());
        // Empty batches are skipped, never mistaken for the end.
        let padded = collect(vec![Ok(Chunk::Rows(vec![])), rows(1), Ok(Chunk::End)]).await;
        assert_eq!(padded, [Ok(1)]);
    }

    #[test]
    fn mysql_errors_are_classified_by_their_number_not_their_sqlstate() {
        for transient in [1205, 1213, 2006, 2013, 1040, 1053, 1927] {
            assert_eq!(mysql_class(transient), Class::Transient, "{transient}");
        }
        assert_eq!(mysql_class(1969), Class::TimedOut);
        assert_eq!(mysql_class(3024), Class::TimedOut);
        // Unknown table, syntax error, access denied.
        for permanent in [1146, 1064, 1045] {
            assert_eq!(mysql_class(permanent), Class::Rejected, "{permanent}");
        }
    }

    #[test]
    fn postgres_errors_are_classified_by_their_sqlstate() {
        for transient in ["08006", "57P01", "40001", "40P01", "53300"] {
            assert_eq!(postgres_class(transient), Class::Transient, "{transient}");
        }
        assert_eq!(postgres_class("57014"), Class::TimedOut);
        for permanent in ["42P01", "42601", "22012", ""] {
            assert_eq!(postgres_class(permanent), Class::Rejected, "{permanent}");
        }
    }

    #[test]
    fn arrays_are_written_as_postgresql_writes_them() {
        let plain = |v: Value| {
            let mut s = String::new();
            v.write_plain(&mut s);
            s
        };
        let text = |s: &str| Value::Text(s.into());
        assert_eq!(
            plain(Value::Array(vec![
                text("a"),
                text(""),
                text("null"),
                text("x y"),
                text(r#"say "hi" \ bye"#),
                text("{,}"),
                Value::Null,
                Value::Int(-3),
            ])),
            r#"{a,"","null","x y","say \"hi\" \\ bye","{,}",NULL,-3}"#
        );
        assert_eq!(
            plain(Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Array(vec![]),
            ])),
            "{{1,2},{}}"
        );
        assert_eq!(plain(Value::Array(vec![])), "{}");
    }

    #[test]
    fn a_count_survives_a_trailing_line_comment() {
        assert_eq!(
            count_sql("SELECT 1 -- the end;"),
            "SELECT COUNT(*) FROM (SELECT 1 -- the end\n) AS exportal_count"
        );
    }
}
