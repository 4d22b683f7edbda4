//! SQLite on the calling thread, for the statements on a cancel's path: the caller's lookup in
//! `users` and a transition's compare-and-set.
//!
//! sqlx runs each SQLite connection on a thread of its own, and every statement is two
//! hand-overs between that thread and the caller's. A statement by primary key takes
//! microseconds, but each hand-over is a chance to wait for a busy core (up to a scheduler tick,
//! 4 ms on a `HZ=250` kernel), and a cancel's latency is the sum of them. These connections
//! (rusqlite, on the same SQLite library as sqlx) run the same SQL text on the async thread that
//! asks. They never wait for a lock: their busy timeout is zero, and a statement that finds the
//! database busy (another process writing, a checkpoint's rare lock) reports [`is_busy`], on
//! which the caller falls back to sqlx, whose thread can afford to wait.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, Statement, ToSql};

/// Reader connections kept for reuse; more concurrent readers open (and close) their own.
const KEPT_READERS: usize = 8;

/// Opens a connection to the database file at `path` with the pragmas sqlx's connections have
/// (`Db::connect`); `writer: false` makes it read-only (`query_only`).
pub(crate) fn open(path: &Path, writer: bool) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::ZERO)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        super::backend::WAL_AUTOCHECKPOINT_PAGES,
    )?;
    if !writer {
        conn.pragma_update(None, "query_only", true)?;
    }
    Ok(conn)
}

/// Whether `error` is SQLite saying the database is locked by someone else right now.
pub(crate) fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Read-only connections to one database file, taken and given back by [`Readers::read`].
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(crate) fn new(path: PathBuf) -> Self {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `read` on a reader connection, on this thread.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open(&self.path, false)?,
        };
        let result = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < KEPT_READERS {
            idle.push(conn);
        }
        result
    }
}

/// The parameters of one statement, bound by their `$N` names, so that these connections run
/// the SQL text sqlx runs. `bind` takes them in order, as sqlx's `Query::bind` does (the
/// `bind_update!` macro fills either).
#[derive(Default)]
pub(crate) struct Binds<'a>(Vec<Box<dyn ToSql + 'a>>);

impl<'a> Binds<'a> {
    pub(crate) fn bind<T: ToSql + 'a>(mut self, value: T) -> Self {
        self.0.push(Box::new(value));
        self
    }

    /// Binds every `$N` of `statement` to the `N`th value.
    fn to(&self, statement: &mut Statement<'_>) -> rusqlite::Result<()> {
        for index in 1..=statement.parameter_count() {
            let name = statement.parameter_name(index).unwrap_or("?");
            let value = name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1))
                .and_then(|n| self.0.get(n))
                .ok_or_else(|| rusqlite::Error::InvalidParameterName(name.to_owned()))?;
            statement.raw_bind_parameter(index, &**value)?;
        }
        Ok(())
    }

    /// Runs `sql` (cached per connection) with these parameters; the number of rows changed.
    pub(crate) fn execute(&self, conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
        let mut statement = conn.prepare_cached(sql)?;
        self.to(&mut statement)?;
        statement.raw_execute()
    }

    /// Runs `sql` with these parameters and maps its first row, if any.
    pub(crate) fn query_optional<T>(
        &self,
        conn: &Connection,
        sql: &str,
        map: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Option<T>> {
        let mut statement = conn.prepare_cached(sql)?;
        self.to(&mut statement)?;
        let mut rows = statement.raw_query();
        match rows.next()? {
            Some(row) => map(row).map(Some),
            None => Ok(None),
        }
    }

    /// Runs `sql` with these parameters; the first column of its one row.
    pub(crate) fn query_i64(&self, conn: &Connection, sql: &str) -> rusqlite::Result<i64> {
        self.query_optional(conn, sql, |row| row.get(0))?
            .ok_or(rusqlite::Error::QueryReturnedNoRows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_follow_dollar_numbers_not_their_order_in_the_text() {
        let conn = Connection::open_in_memory().unwrap();
        // `$2` appears first, and `$1` twice: each is bound by its number.
        let row = Binds::default()
            .bind("one")
            .bind(2_i64)
            .query_optional(&conn, "SELECT $2, $1 || $1", |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .unwrap();
        assert_eq!(row, Some((2, "oneone".to_owned())));
    }

    #[test]
    fn a_missing_parameter_is_an_error_not_a_null() {
        let conn = Connection::open_in_memory().unwrap();
        let missing = Binds::default()
            .bind(1_i64)
            .query_optional(&conn, "SELECT $1, $3", |row| row.get::<_, i64>(0));
        assert!(
            matches!(missing, Err(rusqlite::Error::InvalidParameterName(ref name)) if name == "$3"),
            "{missing:?}"
        );
    }

    #[test]
    fn a_locked_database_is_reported_busy_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.db");
        // `open` expects the database sqlx created; create it here.
        drop(Connection::open(&path).unwrap());
        let first = open(&path, true).unwrap();
        first
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
            .unwrap();
        let second = open(&path, true).unwrap();
        let started = std::time::Instant::now();
        let error = second.execute_batch("BEGIN IMMEDIATE").unwrap_err();
        assert!(is_busy(&error), "{error:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the connection waited for the lock"
        );
        // A reader is not blocked by the writer (WAL), and cannot write.
        let reader = open(&path, false).unwrap();
        let rows: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 0, "the uncommitted row is not visible");
        assert!(reader.execute_batch("INSERT INTO t VALUES (2)").is_err());
    }
}
