//! What the two network drivers (PostgreSQL and MariaDB, both sqlx pools) do the same way:
//! binding the typed parameters, describing a query's columns, and the health check.

use super::{Described, Param, SourceColumn, SourceError};
use app::catalog::ColumnType;
use sqlx::query::Query;
use sqlx::{Column, Database, Encode, Executor, Pool, Type};

/// `sql` with `params` bound in order.
pub(super) fn bound<'q, DB>(
    sql: &'q str,
    params: &'q [Param],
) -> Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    DB: Database,
    bool: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    f64: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<String>: Encode<'q, DB> + Type<DB>,
    chrono::NaiveDate: Encode<'q, DB> + Type<DB>,
    chrono::NaiveDateTime: Encode<'q, DB> + Type<DB>,
{
    let mut query = sqlx::query::<DB>(sql);
    for p in params {
        query = match p {
            Param::Null => query.bind(None::<String>),
            Param::Bool(b) => query.bind(*b),
            Param::Int(i) => query.bind(*i),
            Param::Float(f) => query.bind(*f),
            Param::Text(s) => query.bind(s.as_str()),
            Param::Date(d) => query.bind(*d),
            Param::DateTime(dt) => query.bind(*dt),
        };
    }
    query
}

/// The columns of `sql` as the server describes them, typed by `column_type` from the server's
/// type, and the number of parameters the server counts in it.
pub(super) async fn describe<DB>(
    pool: &Pool<DB>,
    source: &str,
    sql: &str,
    column_type: impl Fn(&DB::TypeInfo) -> ColumnType,
) -> Result<Described, SourceError>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
{
    let described = pool
        .describe(sql)
        .await
        .map_err(|e| SourceError::from_sqlx(source, e))?;
    let parameters = match described.parameters() {
        Some(sqlx::Either::Left(types)) => types.len(),
        Some(sqlx::Either::Right(count)) => count,
        None => {
            return Err(SourceError::query(format!(
                "The database `{source}` did not say how many parameters the query has."
            )))
        }
    };
    Ok(Described {
        columns: described
            .columns()
            .iter()
            .map(|c| SourceColumn {
                name: c.name().to_string(),
                kind: column_type(c.type_info()),
            })
            .collect(),
        parameters,
    })
}

pub(super) async fn ping<DB>(pool: &Pool<DB>, source: &str) -> Result<(), SourceError>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
{
    pool.execute("SELECT 1")
        .await
        .map(|_| ())
        .map_err(|e| SourceError::from_sqlx(source, e))
}
