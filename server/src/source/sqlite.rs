//! SQLite through sqlx, read-only. SQLite types are per value, so each cell is decoded by its
//! storage class, with the column's declared type as a hint for dates and booleans.

use super::{Param, RowStream, Source, SourceColumn, SourceError, SourceOptions, Value};
use crate::catalog::sql::ParamStyle;
use app::catalog::ColumnType;
use async_trait::async_trait;
use futures::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Column, Executor, Row, TypeInfo, ValueRef};
use std::str::FromStr;

pub struct SqliteSource {
    name: String,
    pool: SqlitePool,
}

impl SqliteSource {
    pub async fn connect(
        name: &str,
        url: &str,
        options: &SourceOptions,
    ) -> Result<Self, SourceError> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| SourceError::query(format!("source `{name}`: invalid SQLite URL: {e}")))?
            .read_only(true)
            .busy_timeout(options.connect_timeout);
        let pool = SqlitePoolOptions::new()
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

fn decode(row: &SqliteRow, hints: &[ColumnType]) -> Result<Vec<Value>, sqlx::Error> {
    let mut out = Vec::with_capacity(hints.len());
    for (i, hint) in hints.iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            out.push(Value::Null);
            continue;
        }
        let class = raw.type_info().name().to_string();
        out.push(match class.as_str() {
            "INTEGER" if *hint == ColumnType::Boolean => {
                Value::Bool(row.try_get::<i64, _>(i)? != 0)
            }
            "INTEGER" => Value::Int(row.try_get(i)?),
            "REAL" => Value::Float(row.try_get(i)?),
            "BLOB" => Value::Bytes(row.try_get(i)?),
            _ => {
                let text: String = row.try_get_unchecked(i)?;
                match hint {
                    ColumnType::Date => {
                        match chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
                            Ok(d) => Value::Date(d),
                            Err(_) => Value::Text(text),
                        }
                    }
                    ColumnType::Datetime => {
                        super::parse_datetime_text(&text).unwrap_or(Value::Text(text))
                    }
                    _ => Value::Text(text),
                }
            }
        });
    }
    Ok(out)
}

#[async_trait]
impl Source for SqliteSource {
    fn style(&self) -> ParamStyle {
        ParamStyle::Question
    }

    async fn describe(&self, sql: &str) -> Result<Vec<SourceColumn>, SourceError> {
        let described = (&self.pool)
            .describe(sql)
            .await
            .map_err(|e| SourceError::from_sqlx(&self.name, e))?;
        Ok(described
            .columns()
            .iter()
            .map(|c| SourceColumn {
                name: c.name().to_string(),
                kind: column_type(c.type_info().name()),
            })
            .collect())
    }

    fn rows<'a>(&'a self, sql: &'a str, params: &'a [Param]) -> RowStream<'a> {
        let mut query = sqlx::query(sql);
        for p in params {
            query = match p {
                Param::Null => query.bind(None::<String>),
                Param::Bool(b) => query.bind(*b),
                Param::Int(i) => query.bind(*i),
                Param::Float(f) => query.bind(*f),
                Param::Text(s) => query.bind(s.as_str()),
                Param::Date(d) => query.bind(d.format("%Y-%m-%d").to_string()),
                Param::DateTime(dt) => query.bind(dt.format("%Y-%m-%d %H:%M:%S").to_string()),
            };
        }
        let name = self.name.as_str();
        let mut hints: Option<Vec<ColumnType>> = None;
        query
            .fetch(&self.pool)
            .map(move |row| {
                let row = row.map_err(|e| SourceError::from_sqlx(name, e))?;
                let hints = hints.get_or_insert_with(|| {
                    row.columns()
                        .iter()
                        .map(|c| column_type(c.type_info().name()))
                        .collect()
                });
                decode(&row, hints).map_err(|e| SourceError::from_sqlx(name, e))
            })
            .boxed()
    }

    async fn ping(&self) -> Result<(), SourceError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| SourceError::from_sqlx(&self.name, e))
    }
}
