//! Scale-out on PostgreSQL: each replica follows what the other replicas commit and publishes
//! it on its own [`Hub`](super::Hub), so its watchers and its worker sessions see every change.
//!
//! Every transaction that appends a change event or a log entry notifies `presswork_changes`
//! at commit (a trigger, migration 0005), and records the replica that committed it
//! (`origin`). The follower `LISTEN`s; on each notification, and every [`POLL_INTERVAL`] in
//! case one was missed or the listening connection dropped, it reads the rows after the last
//! ones it saw that another replica committed, in id order, and publishes them marked remote.
//! Its own rows were published right after their commit. Event sequences and log ids commit
//! in id order (the order lock of `jobs.rs`), so "after the last id seen" misses nothing.

use std::sync::Arc;
use std::time::Duration;

use presswork_proto::v1::{Job, LogEntry};
use prost::Message;
use sqlx::postgres::{PgListener, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::rows::{LogRow, log_columns};
use super::{Db, JobChange, Store, StoreError};

/// The channel the migration's trigger notifies.
const CHANNEL: &str = "presswork_changes";
/// Safety net for a missed notification or a dropped listening connection.
const POLL_INTERVAL: Duration = Duration::from_millis(300);
/// Rows read per query.
const BATCH: i64 = 1000;

const REMOTE_EVENTS: &str = "SELECT seq, payload FROM job_events WHERE seq > $1 AND origin <> $2 \
     ORDER BY seq LIMIT $3";
const REMOTE_LOG: &str = concat!(
    "SELECT ",
    log_columns!(),
    " FROM job_log WHERE id > $1 AND origin <> $2 ORDER BY id LIMIT $3"
);

/// Where the follower is: the last event sequence and log id it has looked past.
struct Position {
    seq: i64,
    log_id: i64,
}

impl Store {
    /// Publishes, until `shutdown` fires, every change event and log entry that another
    /// replica commits, in commit order, with [`JobChange::remote`] set. Nothing to do on
    /// SQLite (one control plane).
    pub async fn follow_other_replicas(self, shutdown: CancellationToken) {
        let Db::Postgres(pool) = &self.db else {
            return;
        };
        let pool = pool.clone();
        let mut position = loop {
            match start_position(&pool).await {
                Ok(position) => break position,
                Err(error) => {
                    warn!(%error, "cannot read where the change log ends; retrying (other replicas' changes are not followed until then)");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        };
        let mut listener: Option<PgListener> = None;
        loop {
            if listener.is_none() {
                listener = listen(&pool).await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                notified = next_notification(&mut listener) => {
                    if let Err(error) = notified {
                        warn!(%error, "lost the connection listening for other replicas' changes; reconnecting (changes are still read every {POLL_INTERVAL:?})");
                        listener = None;
                    }
                }
            }
            if let Err(error) = self.publish_remote(&pool, &mut position).await {
                warn!(%error, "cannot read other replicas' changes; retrying");
            }
        }
    }

    /// Reads and publishes everything other replicas committed after `position`.
    async fn publish_remote(
        &self,
        pool: &PgPool,
        position: &mut Position,
    ) -> Result<(), StoreError> {
        loop {
            let log: Vec<LogRow> = sqlx::query_as(REMOTE_LOG)
                .bind(position.log_id)
                .bind(&*self.replica)
                .bind(BATCH)
                .fetch_all(pool)
                .await?;
            let events: Vec<(i64, Vec<u8>)> = sqlx::query_as(REMOTE_EVENTS)
                .bind(position.seq)
                .bind(&*self.replica)
                .bind(BATCH)
                .fetch_all(pool)
                .await?;
            let more = log.len() as i64 == BATCH || events.len() as i64 == BATCH;
            // Log entries first, as `publish` does: a job's terminal change comes after its
            // final entries.
            for row in log {
                let entry = LogEntry::from(row);
                position.log_id = i64::try_from(entry.id).unwrap_or(position.log_id);
                let _ = self.hub.log.send(Arc::new(entry));
            }
            for (seq, payload) in events {
                let job = Job::decode(payload.as_slice())
                    .map_err(|e| StoreError::Corrupt(format!("change {seq}: {e}")))?;
                position.seq = seq;
                debug!(seq, job_id = %job.id, "change committed by another replica");
                let _ = self.hub.jobs.send(Arc::new(JobChange {
                    sequence: seq as u64,
                    job,
                    remote: true,
                }));
            }
            if !more {
                return Ok(());
            }
        }
    }
}

async fn start_position(pool: &PgPool) -> Result<Position, sqlx::Error> {
    let (seq, log_id): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM job_events), \
         (SELECT COALESCE(MAX(id), 0) FROM job_log)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Position { seq, log_id })
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(error) => {
            warn!(%error, "cannot open a connection to listen for other replicas' changes; retrying (changes are still read every {POLL_INTERVAL:?})");
            return None;
        }
    };
    match listener.listen(CHANNEL).await {
        Ok(()) => Some(listener),
        Err(error) => {
            warn!(%error, "cannot LISTEN {CHANNEL}; retrying (changes are still read every {POLL_INTERVAL:?})");
            None
        }
    }
}

/// Waits for the next notification; never returns when there is no listener.
async fn next_notification(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await.map(|_| ()),
        None => std::future::pending().await,
    }
}
