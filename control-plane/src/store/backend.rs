//! The two database engines behind one enum, and the few statements that differ between them.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, SqlSafeStr, Sqlite, Transaction};

use tracing::warn;

use super::StoreError;

/// WAL pages after which a commit checkpoints by itself, should the background checkpoint
/// fall behind (SQLite's default is 1000).
pub(crate) const WAL_AUTOCHECKPOINT_PAGES: u32 = 20_000;

/// The active database.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same body on whichever pool is active: `with_pool!(db, pool => expr)`.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

impl Db {
    /// Opens the database at `url`. On PostgreSQL every connection records `replica` as the
    /// origin of the events and log entries it appends (migration 0005 on PostgreSQL).
    pub async fn connect(url: &str, replica: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let replica: Arc<str> = Arc::from(replica);
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(move |conn, _meta| {
                    let replica = Arc::clone(&replica);
                    Box::pin(async move {
                        sqlx::query("SELECT set_config('presswork.replica', $1, false)")
                            .bind(&*replica)
                            .execute(conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await?;
            migrator(&[
                include_str!("../../migrations/postgres/0001_init.sql"),
                include_str!("../../migrations/postgres/0002_users.sql"),
                include_str!("../../migrations/postgres/0003_reports.sql"),
                include_str!("../../migrations/postgres/0004_configured_jobs.sql"),
                include_str!("../../migrations/postgres/0005_replicas.sql"),
                include_str!("../../migrations/postgres/0006_credential_version.sql"),
            ])
            .run(&pool)
            .await?;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            if let Ok(path) = sqlite_file(url) {
                create_private(&path)?;
                warn_if_not_private(&path);
            }
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                // Checkpoints (and their fsyncs, 1–50 ms here) run in the background
                // (`Store::checkpoint`), not in whichever commit crosses 1000 WAL pages; this
                // larger automatic threshold is only a backstop.
                .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string());
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                // An in-process connection cannot go stale the way a network one can, and the
                // pool already pings every connection when it is released: a ping before each
                // use would add a round trip to the connection's thread to every query.
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            migrator(&[
                include_str!("../../migrations/sqlite/0001_init.sql"),
                include_str!("../../migrations/sqlite/0002_users.sql"),
                include_str!("../../migrations/sqlite/0003_reports.sql"),
                include_str!("../../migrations/sqlite/0004_configured_jobs.sql"),
                include_str!("../../migrations/sqlite/0005_credential_version.sql"),
            ])
            .run(&pool)
            .await?;
            Ok(Db::Sqlite(pool))
        } else {
            Err(StoreError::Database(sqlx::Error::Configuration(
                format!(
                    "unsupported database URL {url:?}: use sqlite:///absolute/path.db or postgres://user:password@host/database"
                )
                .into(),
            )))
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    /// SQLite: copies committed WAL pages into the database file without waiting for (or
    /// blocking) readers and writers. PostgreSQL checkpoints by itself: nothing to do.
    pub async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        if let Db::Sqlite(pool) = self {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }
}

/// The file of the SQLite database at `url`, for connections outside sqlx's pool
/// (`store::inline`). An in-memory database is refused: each connection would see its own.
pub(crate) fn sqlite_file(url: &str) -> Result<std::path::PathBuf, StoreError> {
    let options = SqliteConnectOptions::from_str(url)?;
    let path = options.get_filename();
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" || url.contains("mode=memory")
    {
        return Err(StoreError::Database(sqlx::Error::Configuration(
            format!("the SQLite database {url:?} is in memory, where each connection sees a database of its own: use a file, sqlite:///absolute/path.db").into(),
        )));
    }
    Ok(path.to_path_buf())
}

/// Creates the SQLite file readable and writable by its owner only (0600, whatever the umask),
/// before SQLite opens it: it holds the token signing key and password hashes. SQLite creates
/// the `-wal` and `-shm` files with the main file's permissions. An existing file is left as
/// it is.
fn create_private(path: &Path) -> Result<(), StoreError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(sqlx::Error::Configuration(
            format!(
                "cannot create the SQLite database {}: {e}; check that its directory exists and is writable",
                path.display()
            )
            .into(),
        ))),
    }
}

/// Warns when the database files can be read by other users, or its directory by anyone else:
/// the signing key in the file is enough to mint an administrator's token.
fn warn_if_not_private(path: &Path) {
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        files.push(side.into());
    }
    for file in files {
        if let Ok(meta) = std::fs::metadata(&file)
            && meta.permissions().mode() & 0o077 != 0
        {
            warn!(
                path = %file.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the database file can be read by other users: it holds the token signing key and password hashes; run `chmod 600 {}`",
                file.display()
            );
        }
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Ok(meta) = std::fs::metadata(dir)
        && meta.permissions().mode() & 0o007 != 0
    {
        warn!(
            dir = %dir.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the database's directory is open to other users; run `chmod 700 {}` (or keep the database in a private directory)",
            dir.display()
        );
    }
}

fn migrator(files: &[&'static str]) -> Migrator {
    let migrations = files
        .iter()
        .zip(1..)
        .map(|(sql, version)| {
            Migration::new(
                version,
                format!("presswork schema {version}").into(),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: migrations.into(),
        ..Migrator::DEFAULT
    }
}

/// What differs between the engines for the statements the store runs.
pub(crate) trait Engine {
    type Database: sqlx::Database;
    /// Starts a transaction that will write. SQLite takes the write lock at once (no
    /// upgrade deadlock); PostgreSQL relies on row locks and the version check.
    async fn begin_write(&self) -> Result<Transaction<'static, Self::Database>, sqlx::Error>;
    /// Starts a read-only transaction that sees one consistent snapshot.
    async fn begin_snapshot(&self) -> Result<Transaction<'static, Self::Database>, sqlx::Error>;
    /// Run before appending log entries or events, so their ids commit in id order and a
    /// reader that saw id N has seen every smaller id. SQLite has one writer: nothing to do.
    const ORDER_LOCK: Option<&'static str>;
    /// Picks the oldest queued jobs (at most `$2`) this worker can run, locking them against
    /// other claimers.
    const CLAIM: &'static str;
}

impl Engine for SqlitePool {
    type Database = Sqlite;
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
    async fn begin_snapshot(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin().await
    }
    const ORDER_LOCK: Option<&'static str> = None;
    const CLAIM: &'static str = concat!(
        "SELECT ",
        super::rows::job_columns!(),
        " FROM jobs WHERE status = 'QUEUED' AND $1 LIKE ('%,' || route || ',%') ORDER BY num LIMIT $2"
    );
}

impl Engine for PgPool {
    type Database = Postgres;
    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.begin().await
    }
    async fn begin_snapshot(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
    }
    const ORDER_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7307001)");
    const CLAIM: &'static str = concat!(
        "SELECT ",
        super::rows::job_columns!(),
        " FROM jobs WHERE status = 'QUEUED' AND $1 LIKE ('%,' || route || ',%') ORDER BY num LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
}
