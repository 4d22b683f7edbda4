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
//! - PostgreSQL: a role that is a superuser or a member of pg_read_server_files,
//!   pg_write_server_files or pg_execute_server_program is refused unless the worker runs with
//!   `--allow-privileged-sql-roles`: a read-only session of such a role can still read and
//!   write the server's files (`pg_read_file`, `lo_import`, `COPY … PROGRAM` through dblink).
//! - SQLite: the file must be under the worker's `--data-dir` or `--allow-dirs`.
//! - Errors name the database without its password or query string, and do not quote the
//!   database's message (which may quote the data): the job's error gives its SQLSTATE, the
//!   worker's log the message.
//!
//! The query stops when the stream is dropped: a cancel drops it and the connection, and on
//! PostgreSQL asks the server to cancel the query (`pg_cancel_backend` from a second
//! connection: sqlx has no cancel request), which would otherwise run on to its end.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{Column, ConnectOptions, Connection, Row as _, TypeInfo, ValueRef};

use crate::reach::Reach;
use crate::stages::{StageContext, StageError};
use crate::table::{Row, Value};

use super::RowSink;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cancel of a running PostgreSQL query may take (connect and ask).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the session's role may do, and the backend serving it.
const ROLE_CHECK: &str = "SELECT current_user::text, r.rolsuper, \
     pg_has_role(current_user, 'pg_read_server_files', 'MEMBER'), \
     pg_has_role(current_user, 'pg_write_server_files', 'MEMBER'), \
     pg_has_role(current_user, 'pg_execute_server_program', 'MEMBER'), \
     pg_backend_pid() \
     FROM pg_roles r WHERE r.rolname = current_user";

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

/// A database URL without its password and query string (`?password=…` is allowed there),
/// for messages; only its scheme when it does not parse.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => super::shown_url(&parsed),
        Err(_) => {
            let scheme: String = url
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                .take(20)
                .collect();
            format!("{scheme}:… (a URL that does not parse)")
        }
    }
}

/// A database error as the job's error shows it: the database's own message may quote the
/// data (`invalid input syntax for type integer: "…"`), so it goes to the worker's log and
/// the job's error gets its SQLSTATE.
fn shown_error(ctx: &StageContext, error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(database) => {
            let code = database.code().unwrap_or_default().to_string();
            tracing::warn!(job_id = %ctx.job_id(), attempt = ctx.attempt(), %code, message = %database.message(), "sql source: the database answered with an error");
            format!(
                "the database answered with an error (SQLSTATE {code}); its message is in the worker's log, not here, as it may quote the data"
            )
        }
        other => other.to_string(),
    }
}

/// Runs the query and pushes each row into `sink`.
pub async fn read(
    ctx: &StageContext,
    url: &str,
    query: &str,
    reach: &Reach,
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
        let options = if options.get_filename() == Path::new(":memory:") {
            options
        } else {
            let file = ctx
                .cancellable(reach.readable_file(options.get_filename()))
                .await?
                .map_err(|problem| sink.failed(problem))?;
            options.filename(file)
        };
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
        ctx.cancellable(
            reach
                .allow_hosts
                .check_server(options.get_host(), options.get_port()),
        )
        .await?
        .map_err(|problem| sink.failed(problem))?;
        let mut connection: PgConnection = connect(ctx, options.connect())
            .await?
            .map_err(connect_failed)?;
        let backend = match check_role(ctx, &mut connection, reach, &shown).await {
            Ok(Ok(backend)) => backend,
            Err(cancelled) => {
                close(connection).await;
                return Err(cancelled);
            }
            Ok(Err(problem)) => {
                close(connection).await;
                return Err(sink.failed_with(problem, "connect as a role that may only read the tables the report needs (GRANT SELECT), or start the worker with --allow-privileged-sql-roles"));
            }
        };
        let result = fetch_rows(ctx, &mut connection, query, postgres_values, sink).await;
        if result == Err(StageError::Cancelled) {
            cancel_on_server(options, backend, ctx.job_id().to_string());
        }
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
            Ok(Err(error)) => Err(shown_error(ctx, &error)),
            Err(_) => Err(format!(
                "no connection after {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
        },
    )
}

/// Checks the session's role (see the module documentation) and returns the backend's pid
/// (to cancel its query). The error says what the role may do.
async fn check_role(
    ctx: &StageContext,
    connection: &mut PgConnection,
    reach: &Reach,
    shown: &str,
) -> Result<Result<i32, String>, StageError> {
    let (role, superuser, read_files, write_files, run_programs, backend): (
        String,
        bool,
        bool,
        bool,
        bool,
        i32,
    ) = match ctx
        .cancellable(sqlx::query_as(ROLE_CHECK).fetch_one(&mut *connection))
        .await?
    {
        Ok(found) => found,
        Err(error) => {
            return Ok(Err(format!(
                "cannot check the role's privileges on {shown}: {}",
                shown_error(ctx, &error)
            )));
        }
    };
    let mut privileges = Vec::new();
    if superuser {
        privileges.push("is a superuser");
    } else {
        for (member, name) in [
            (read_files, "is a member of pg_read_server_files"),
            (write_files, "is a member of pg_write_server_files"),
            (run_programs, "is a member of pg_execute_server_program"),
        ] {
            if member {
                privileges.push(name);
            }
        }
    }
    if privileges.is_empty() {
        return Ok(Ok(backend));
    }
    let privileges = privileges.join(" and ");
    if !reach.allow_privileged_sql_roles {
        return Ok(Err(format!(
            "the role `{role}` on {shown} {privileges}: even a read-only session of it can read or write the database server's files, so this worker refuses it"
        )));
    }
    tracing::warn!(job_id = %ctx.job_id(), %role, %privileges, "sql source runs as a privileged role (--allow-privileged-sql-roles)");
    ctx.log_at(
        presswork_proto::v1::LogLevel::Warn,
        format!(
            "the role `{role}` on {shown} {privileges}; allowed by --allow-privileged-sql-roles"
        ),
    );
    Ok(Ok(backend))
}

/// Asks PostgreSQL to cancel the query of `backend` (`pg_cancel_backend` on a connection of
/// its own, with the same settings), in the background: the stage returns at once, the
/// server stops the query within [`CANCEL_TIMEOUT`] or the worker's log says why not.
fn cancel_on_server(options: PgConnectOptions, backend: i32, job_id: String) {
    tokio::spawn(async move {
        let cancelling = async {
            let mut connection = options.connect().await?;
            let cancelled: bool = sqlx::query_scalar("SELECT pg_cancel_backend($1)")
                .bind(backend)
                .fetch_one(&mut connection)
                .await?;
            close(connection).await;
            Ok::<bool, sqlx::Error>(cancelled)
        };
        match tokio::time::timeout(CANCEL_TIMEOUT, cancelling).await {
            Ok(Ok(true)) => {
                tracing::info!(%job_id, backend, "sql source: asked the server to cancel the query")
            }
            Ok(Ok(false)) => {
                tracing::debug!(%job_id, backend, "sql source: the query had ended before its cancel")
            }
            Ok(Err(error)) => {
                tracing::warn!(%job_id, backend, %error, "sql source: cannot cancel the query on the server; it runs until it ends")
            }
            Err(_) => {
                tracing::warn!(%job_id, backend, "sql source: no answer to the cancel of the query; it may run until it ends")
            }
        }
    });
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
                    format!("the query failed: {}", shown_error(ctx, &error)),
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
        assert_eq!(
            shown_url("postgres://db/sales?user=ann&password=secret"),
            "postgres://db/sales?…"
        );
        let shown = shown_url("postgres://ann:secret@[db/sales");
        assert!(!shown.contains("secret"), "{shown}");
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
