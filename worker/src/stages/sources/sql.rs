//! SQL sources: one read-only query against PostgreSQL or SQLite, its rows streamed as the
//! database sends them.
//!
//! - Only one statement starting with `SELECT` or `WITH` is run (no `;` inside).
//! - PostgreSQL: the session starts with `default_transaction_read_only=on` (a `WITH … DELETE`
//!   fails), and the query goes by the simple query protocol, so every value arrives as text
//!   and any column type can be shown: integers and floating or numeric types become numbers,
//!   the rest text (dates, UUIDs, JSON as PostgreSQL prints them); `bool` is `true`/`false`.
//! - SQLite: the file is opened read-only (`mode=ro`); integers and reals are numbers, text is
//!   text, a blob is its bytes as text.
//!
//! The query stops when the stream is dropped: a cancel drops it and the connection.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{Column, ConnectOptions, Connection, Row as _, TypeInfo, ValueRef};

use crate::stages::{StageContext, StageError};
use crate::table::{Row, Value};

use super::RowSink;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks that `query` is one read-only query: `SELECT` or `WITH` first, no `;` but at the end.
pub fn check_read_only(query: &str) -> Result<(), String> {
    let trimmed = query
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    let first = trimmed
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if !matches!(first.as_str(), "select" | "with") {
        return Err(
            "source.params.query must be one read-only query starting with SELECT or WITH".into(),
        );
    }
    if trimmed.contains(';') {
        return Err("source.params.query must be one statement: remove the `;` inside it (a `;` in a quoted string is refused too)".into());
    }
    Ok(())
}

/// A database URL without its password, for messages.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// Runs the query and pushes each row into `sink`.
pub async fn read(
    ctx: &StageContext,
    url: &str,
    query: &str,
    sink: &mut RowSink<'_>,
) -> Result<(), StageError> {
    check_read_only(query).map_err(|problem| sink.failed(problem))?;
    let shown = shown_url(url);
    let connect_failed = |error: String| {
        sink.failed_with(format!(
            "cannot connect to {shown}: {error}"
        ), "check source.params.url, that the database is up and reachable from the worker, and the credentials")
    };
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| connect_failed(e.to_string()))?
            .read_only(true);
        let mut connection: SqliteConnection = connect(ctx, options.connect())
            .await?
            .map_err(connect_failed)?;
        let result = fetch_rows(ctx, &mut connection, query, sqlite_values, sink).await;
        close(connection).await;
        result
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| connect_failed(e.to_string()))?
            .options([("default_transaction_read_only", "on")])
            .application_name("presswork-worker");
        let mut connection: PgConnection = connect(ctx, options.connect())
            .await?
            .map_err(connect_failed)?;
        let result = fetch_rows(ctx, &mut connection, query, postgres_values, sink).await;
        close(connection).await;
        result
    } else {
        Err(sink.failed(format!(
            "`{shown}` is not a database URL this worker reads: use postgres://, postgresql:// or sqlite://"
        )))
    }
}

/// Connects unless the token fires first or it takes longer than [`CONNECT_TIMEOUT`].
async fn connect<C>(
    ctx: &StageContext,
    connecting: impl Future<Output = Result<C, sqlx::Error>>,
) -> Result<Result<C, String>, StageError> {
    Ok(
        match ctx
            .cancellable(tokio::time::timeout(CONNECT_TIMEOUT, connecting))
            .await?
        {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "no connection after {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
        },
    )
}

/// Closes a connection politely, but without waiting long for it.
async fn close<C: Connection>(connection: C) {
    let _ = tokio::time::timeout(Duration::from_secs(1), connection.close()).await;
}

/// Streams the query's rows, looking at the token before each.
async fn fetch_rows<'c, C, R>(
    ctx: &StageContext,
    connection: &'c mut C,
    query: &str,
    values: fn(&R) -> Vec<Value>,
    sink: &mut RowSink<'_>,
) -> Result<(), StageError>
where
    &'c mut C: sqlx::Executor<'c, Database = R::Database>,
    R: sqlx::Row,
{
    let mut rows = sqlx::raw_sql(sqlx::AssertSqlSafe(query.to_string())).fetch(connection);
    let mut columns: Option<Arc<[String]>> = None;
    loop {
        let next = tokio::select! {
            biased;
            _ = ctx.token().cancelled() => return Err(StageError::Cancelled),
            next = rows.next() => next,
        };
        let row = match next {
            None => return Ok(()),
            Some(Ok(row)) => row,
            Some(Err(error)) => {
                return Err(sink.failed_with(
                    format!("the query failed: {error}"),
                    "check source.params.query against the database (one SELECT, read only)",
                ));
            }
        };
        let names = columns
            .get_or_insert_with(|| row.columns().iter().map(|c| c.name().to_string()).collect());
        let row = Row {
            columns: names.clone(),
            values: values(&row),
        };
        sink.push(ctx, &row)?;
    }
}

/// A PostgreSQL row's values (text format: the simple query protocol).
fn postgres_values(row: &PgRow) -> Vec<Value> {
    (0..row.len())
        .map(|i| {
            let Ok(raw) = row.try_get_raw(i) else {
                return Value::Null;
            };
            if raw.is_null() {
                return Value::Null;
            }
            let type_name = raw.type_info().name().to_string();
            let text = raw.as_str().unwrap_or_default().to_string();
            postgres_value(&type_name, text)
        })
        .collect()
}

/// A PostgreSQL value in text form, by its type's name.
pub fn postgres_value(type_name: &str, text: String) -> Value {
    match type_name {
        "INT2" | "INT4" | "INT8" | "OID" | "FLOAT4" | "FLOAT8" | "NUMERIC" => {
            match text.parse::<f64>() {
                Ok(n) if n.is_finite() => Value::Number(n),
                // NaN, Infinity: shown as PostgreSQL prints them.
                _ => Value::Text(text),
            }
        }
        "BOOL" => Value::Text(if text == "t" { "true" } else { "false" }.into()),
        _ => Value::Text(text),
    }
}

/// An SQLite row's values, by each value's own type (SQLite types values, not columns).
fn sqlite_values(row: &SqliteRow) -> Vec<Value> {
    (0..row.len())
        .map(|i| {
            let Ok(raw) = row.try_get_raw(i) else {
                return Value::Null;
            };
            if raw.is_null() {
                return Value::Null;
            }
            let type_name = raw.type_info().name().to_string();
            match type_name.as_str() {
                "INTEGER" => row
                    .try_get_unchecked::<i64, _>(i)
                    .map_or(Value::Null, |n| Value::Number(n as f64)),
                "REAL" => row.try_get_unchecked::<f64, _>(i).map_or(Value::Null, |n| {
                    if n.is_finite() {
                        Value::Number(n)
                    } else {
                        Value::Text(n.to_string())
                    }
                }),
                "BLOB" => row
                    .try_get_unchecked::<Vec<u8>, _>(i)
                    .map_or(Value::Null, |b| {
                        Value::Text(String::from_utf8_lossy(&b).into_owned())
                    }),
                _ => row
                    .try_get_unchecked::<String, _>(i)
                    .map_or(Value::Null, Value::Text),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_read_only_query_is_run() {
        for ok in [
            "SELECT 1",
            "  select * from t;  ",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "select\n*\nfrom t;;",
        ] {
            assert_eq!(check_read_only(ok), Ok(()), "{ok:?}");
        }
        for refused in [
            "DELETE FROM t",
            "selectx",
            "",
            "-- comment\nSELECT 1",
            "SELECT 1; DROP TABLE t",
            "select ';'",
        ] {
            assert!(check_read_only(refused).is_err(), "{refused:?}");
        }
        assert_eq!(
            check_read_only("SELECT 1; DROP TABLE t").unwrap_err(),
            "source.params.query must be one statement: remove the `;` inside it (a `;` in a quoted string is refused too)"
        );
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            shown_url("postgres://ann:secret@db:5432/sales"),
            "postgres://ann:***@db:5432/sales"
        );
        assert_eq!(shown_url("sqlite:///srv/x.db"), "sqlite:///srv/x.db");
    }

    #[test]
    fn postgres_text_values_by_type() {
        assert_eq!(postgres_value("INT8", "42".into()), Value::Number(42.0));
        assert_eq!(
            postgres_value("NUMERIC", "1234.50".into()),
            Value::Number(1234.5)
        );
        assert_eq!(
            postgres_value("FLOAT8", "NaN".into()),
            Value::Text("NaN".into())
        );
        assert_eq!(
            postgres_value("BOOL", "t".into()),
            Value::Text("true".into())
        );
        assert_eq!(
            postgres_value("TEXT", "42".into()),
            Value::Text("42".into()),
            "text stays text"
        );
        assert_eq!(
            postgres_value("DATE", "2025-01-20".into()),
            Value::Text("2025-01-20".into())
        );
    }

    #[tokio::test]
    async fn sqlite_values_by_type() {
        let mut connection = SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("in memory");
        let row: SqliteRow = sqlx::query(
            "SELECT 42 AS i, 2.5 AS r, 'north' AS t, NULL AS n, x'6869' AS b, '12' AS s",
        )
        .fetch_one(&mut connection)
        .await
        .expect("a row");
        assert_eq!(
            sqlite_values(&row),
            vec![
                Value::Number(42.0),
                Value::Number(2.5),
                Value::Text("north".into()),
                Value::Null,
                Value::Text("hi".into()),
                Value::Text("12".into()),
            ]
        );
    }

    /// Against a real PostgreSQL when PRESSWORK_TEST_POSTGRES_URL is set (skipped otherwise).
    #[tokio::test]
    async fn postgres_values_by_type() {
        let Ok(url) = std::env::var("PRESSWORK_TEST_POSTGRES_URL") else {
            eprintln!("PRESSWORK_TEST_POSTGRES_URL is not set; skipping");
            return;
        };
        let mut connection = PgConnection::connect(&url).await.expect("connect");
        let mut rows = sqlx::raw_sql(
            "SELECT 42::int8 AS i, 2.5::numeric AS n, 1.5::float8 AS f, 'x'::text AS t, \
             NULL::int4 AS z, true AS b, DATE '2025-01-20' AS d",
        )
        .fetch(&mut connection);
        let row = rows.next().await.expect("a row").expect("no error");
        assert_eq!(
            postgres_values(&row),
            vec![
                Value::Number(42.0),
                Value::Number(2.5),
                Value::Number(1.5),
                Value::Text("x".into()),
                Value::Null,
                Value::Text("true".into()),
                Value::Text("2025-01-20".into()),
            ]
        );
    }
}
