//! The store: jobs, their change events, their execution log and the workers, on SQLite (the
//! embedded default) or PostgreSQL (scale-out), with the same SQL text on both.
//!
//! Every change of a job is a compare-and-set on its `version`, made in one transaction with its
//! log entries and its change event; committed changes are then published on the [`Hub`].

mod backend;
mod follow;
mod inline;
mod jobs;
mod reports;
mod rows;
mod users;

use std::sync::Arc;

use presswork_proto::v1::{Job, LogEntry};
use tokio::sync::broadcast;

pub use backend::Db;
pub use jobs::{
    Applied, JobFilter, NewJob, NewLogLine, SilentWorkerJob, config_route, worker_routes,
};
pub use rows::job_to_wire;
pub use users::UserRecord;

/// Errors of the store. Database details stay in the server log; clients see [`StoreError`]
/// mapped to a generic message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job {0} not found")]
    NotFound(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// An error of the SQLite connections that run on the calling thread (`store::inline`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unreadable row in the store: {0}")]
    Corrupt(String),
    #[error("the job kept changing under this update; try again")]
    Contended,
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("user {0} not found")]
    UserNotFound(String),
    #[error("report {0} already exists")]
    ReportExists(String),
    #[error("report {0} not found")]
    ReportNotFound(String),
    #[error("report {name} is at version {current}, not the version expected")]
    ReportVersion { name: String, current: i64 },
}

/// How often the SQLite write-ahead log is checkpointed in the background.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// A committed change of a job, as watchers see it.
#[derive(Debug)]
pub struct JobChange {
    pub sequence: u64,
    pub job: Job,
    /// Committed by another control-plane replica (PostgreSQL scale-out), and published here
    /// by [`Store::follow_other_replicas`].
    pub remote: bool,
}

/// In-process fan-out of committed changes. Receivers that lag re-read from the store, so a
/// full channel never loses anything.
#[derive(Clone)]
pub struct Hub {
    jobs: broadcast::Sender<Arc<JobChange>>,
    log: broadcast::Sender<Arc<LogEntry>>,
}

impl Hub {
    fn new() -> Self {
        Hub {
            jobs: broadcast::channel(16 * 1024).0,
            log: broadcast::channel(16 * 1024).0,
        }
    }

    pub fn subscribe_jobs(&self) -> broadcast::Receiver<Arc<JobChange>> {
        self.jobs.subscribe()
    }

    pub fn subscribe_log(&self) -> broadcast::Receiver<Arc<LogEntry>> {
        self.log.subscribe()
    }
}

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Db,
    hub: Hub,
    /// SQLite has one writer. Writers queue here, in arrival order, instead of in SQLite's
    /// busy handler, which sleeps in growing steps (up to 100 ms) and made waits long and
    /// unfair under concurrent cancels. The lock holds a connection of its own, outside the
    /// pool, on which [`Store::apply`] writes a transition on the calling thread
    /// (`store::inline`): no hand-over to a connection's thread on the path of a cancel.
    /// `None` on PostgreSQL.
    writers: Option<Arc<tokio::sync::Mutex<rusqlite::Connection>>>,
    /// SQLite: read-only connections for reads on the calling thread (the caller's lookup in
    /// `users`). `None` on PostgreSQL.
    readers: Option<Arc<inline::Readers>>,
    /// SQLite: running and cancelling jobs as this process last committed them, so that a
    /// cancel and a worker's events need not read the job first (see [`Store::current`]).
    /// Every commit of a job drops its entry before it is published; the paths that have the
    /// committed record put it back. Only a starting point for a compare-and-set, never a
    /// source of truth. `None` on PostgreSQL, where other replicas write too.
    live: Option<Arc<std::sync::Mutex<std::collections::HashMap<String, crate::job::JobRecord>>>>,
    /// Submits waiting for the next group commit (SQLite; see `Store::submit`).
    submits: Arc<std::sync::Mutex<Vec<jobs::PendingSubmit>>>,
    /// This process's replica id, random at start: the `origin` of what it commits.
    replica: Arc<str>,
}

impl Store {
    /// Connects to `url` (`sqlite:///path.db`, created when missing, or `postgres://…`) and
    /// applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let replica: Arc<str> = Arc::from(uuid::Uuid::new_v4().simple().to_string());
        let file = url
            .starts_with("sqlite:")
            .then(|| backend::sqlite_file(url))
            .transpose()?;
        let db = Db::connect(url, &replica).await?;
        let (writers, readers) = match (&db, file) {
            (Db::Sqlite(_), Some(path)) => {
                let writer = inline::open(&path, true)?;
                (
                    Some(Arc::new(tokio::sync::Mutex::new(writer))),
                    Some(Arc::new(inline::Readers::new(path))),
                )
            }
            _ => (None, None),
        };
        let live = writers.as_ref().map(|_| Arc::default());
        Ok(Store {
            db,
            hub: Hub::new(),
            writers,
            readers,
            live,
            submits: Arc::default(),
            replica,
        })
    }

    /// Waits for this process's turn to write (SQLite only).
    pub(crate) async fn write_turn(
        &self,
    ) -> Option<tokio::sync::OwnedMutexGuard<rusqlite::Connection>> {
        match &self.writers {
            Some(lock) => Some(Arc::clone(lock).lock_owned().await),
            None => None,
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// This replica's id (random at each start).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn backend_name(&self) -> &'static str {
        self.db.name()
    }

    pub async fn close(&self) {
        self.db.close().await;
    }

    /// Checkpoints the SQLite write-ahead log every [`CHECKPOINT_INTERVAL`] until `shutdown`
    /// fires, so that no commit pays for a checkpoint's fsyncs (see `Db::checkpoint`).
    pub async fn checkpoint_until(&self, shutdown: tokio_util::sync::CancellationToken) {
        if !matches!(self.db, Db::Sqlite(_)) {
            return;
        }
        let mut ticks = tokio::time::interval(CHECKPOINT_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.db.checkpoint().await {
                tracing::warn!(%error, "could not checkpoint the database; SQLite will checkpoint on commit instead");
            }
        }
    }
}
