//! Job operations. Reads are plain queries; every change goes through [`Store::apply`] or
//! [`Store::claim`], which run the pure state machine and write its decision with a
//! compare-and-set on the job's version, the log entries and the change event in one
//! transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use presswork_proto::v1::{JobStatus, LogEntry, LogLevel, ReportConfig, Stage};
use prost::Message;
use tracing::{debug, error, warn};

use super::backend::{Engine, with_pool};
use super::inline::{self, Binds};
use super::rows::{JobColumns, JobRow, LogRow, job_columns, job_to_wire, log_columns};
use super::{JobChange, Store, StoreError};
use crate::job::{self, Decision, JobEvent, JobRecord, LogDraft, Origin, Refusal};

const SELECT_JOB: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");

/// Returns the job as stored (defaults and `num` included), without a second query.
const INSERT_JOB: &str = concat!(
    "INSERT INTO jobs (id, report, params, status, submitted_by, created_at, route) \
     VALUES ($1, $2, $3, 'QUEUED', $4, $5, $6) RETURNING ",
    job_columns!()
);

const UPDATE_JOB: &str = "UPDATE jobs SET status = $3, stage = $4, progress = $5, attempt = $6, \
     worker_id = $7, version = $8, started_at = $9, finished_at = $10, error = $11, output = $12, \
     cancel_requested_by = $13, cancel_reason = $14, cancel_requested_at = $15, \
     cancel_deadline = $16, cancel_delivered_at = $17, cancel_acknowledged_at = $18, \
     cancel_stopped_at = $19, cancel_stopped_stage = $20, cancel_stop_duration_us = $21, \
     cancel_resolution = $22, cancel_past_point_of_no_return = $23 \
     WHERE id = $1 AND version = $2";

const INSERT_LOG: &str = "INSERT INTO job_log (job_id, at, level, event, actor, stage, attempt, message) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";

/// A worker's log line is kept only while its attempt is the job's live one.
const INSERT_WORKER_LOG: &str = "INSERT INTO job_log (job_id, at, level, event, actor, stage, attempt, message) \
     SELECT $1, $2, $3, 'worker.log', $4, $5, $6, $7 WHERE EXISTS \
     (SELECT 1 FROM jobs WHERE id = $1 AND attempt = $6 AND worker_id = $8 \
     AND status IN ('RUNNING', 'CANCELLING')) RETURNING id";

const INSERT_EVENT: &str =
    "INSERT INTO job_events (job_id, version, at, payload) VALUES ($1, $2, $3, $4) RETURNING seq";

const LIST_JOBS: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE ($1 = '' OR $1 LIKE ('%,' || status || ',%')) AND ($2 = 0 OR num < $2) \
     ORDER BY num DESC LIMIT $3"
);

const SELECT_LOG: &str = concat!(
    "SELECT ",
    log_columns!(),
    " FROM job_log WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3"
);

const MAX_CAS_RETRIES: usize = 16;

/// Submits written in one group commit at most (SQLite): bounds how long one group holds the
/// writer's turn, which a cancel may be waiting for.
const MAX_SUBMIT_GROUP: usize = 64;

/// A job to queue.
pub struct NewJob {
    pub report: String,
    pub params: BTreeMap<String, String>,
    pub submitted_by: String,
    /// For a stored report configuration: the configuration as it is now, which the job runs
    /// even if the configuration changes later.
    pub config: Option<ReportConfig>,
}

/// The claim route of a configured job (see migration 0004): only workers that run
/// configurations, and that have the connector its source names, may claim it.
pub fn config_route(config: &ReportConfig) -> String {
    match &config.source {
        Some(source) if source.kind == "connector" => format!(
            "config+connector:{}",
            source.params.get("name").map(String::as_str).unwrap_or("")
        ),
        _ => "config".to_owned(),
    }
}

/// The routes a worker may claim: its built-in reports, and configured jobs when it runs
/// them (those naming a connector only when it has that connector).
pub fn worker_routes(
    reports: &[String],
    runs_configurations: bool,
    connectors: &[String],
) -> Vec<String> {
    let mut routes = reports.to_vec();
    if runs_configurations {
        routes.push("config".to_owned());
        routes.extend(connectors.iter().map(|c| format!("config+connector:{c}")));
    }
    routes
}

/// A log line reported by a worker for one attempt.
pub struct NewLogLine<'a> {
    pub job_id: &'a str,
    pub attempt: u32,
    pub worker_id: &'a str,
    pub stage: Stage,
    pub level: LogLevel,
    pub message: &'a str,
}

/// Statuses to list (empty: all), and where the previous page ended.
#[derive(Default)]
pub struct JobFilter {
    pub statuses: Vec<JobStatus>,
    /// Only jobs older than this `num` (0: from the newest).
    pub before: i64,
    pub limit: u32,
}

/// A running or cancelling job whose worker has gone silent.
#[derive(Clone, Debug, PartialEq)]
pub struct SilentWorkerJob {
    pub job_id: String,
    pub attempt: u32,
    pub worker_id: String,
    pub status: JobStatus,
    /// When the worker was last heard from (Unix ms; 0 when it was never recorded).
    pub last_seen_at: i64,
}

/// The result of applying an event to a job.
#[derive(Debug)]
pub struct Applied {
    /// The job after the event (or as it is, when nothing changed or the event was refused).
    pub job: JobRecord,
    pub decision: Result<Decision, Refusal>,
    /// The change's sequence number, when something was written.
    pub sequence: Option<u64>,
}

/// Binds the parameters of [`INSERT_LOG`] to `query` (sqlx's or [`Binds`]): log entry `draft`
/// of job `next`'s attempt at time `now`.
macro_rules! bind_log {
    ($query:expr, $next:expr, $now:expr, $draft:expr) => {
        $query
            .bind(&$next.id)
            .bind($now)
            .bind($draft.level.as_str_name())
            .bind($draft.event)
            .bind(&$draft.actor)
            .bind($draft.stage.short_name())
            .bind(i64::from($next.attempt))
            .bind(&$draft.message)
    };
}

/// Binds the parameters of [`INSERT_EVENT`] to `query`: job `next` changed at `now`, its wire
/// form `wire` as the payload.
macro_rules! bind_event {
    ($query:expr, $next:expr, $now:expr, $wire:expr) => {
        $query
            .bind(&$next.id)
            .bind($next.version)
            .bind($now)
            .bind($wire.encode_to_vec())
    };
}

/// Appends `drafts` and the change event for `next` inside `tx`; returns the log entries (with
/// their ids) and the event's sequence.
macro_rules! append_log_and_event {
    ($pool:expr, $tx:expr, $next:expr, $drafts:expr, $now:expr) => {{
        if let Some(lock) = engine_order_lock($pool) {
            sqlx::query(lock).execute(&mut *$tx).await?;
        }
        let mut entries = Vec::with_capacity($drafts.len());
        for draft in $drafts {
            let id: i64 = bind_log!(sqlx::query_scalar(INSERT_LOG), $next, $now, draft)
                .fetch_one(&mut *$tx)
                .await?;
            entries.push(log_entry(id, &$next, $now, draft));
        }
        let wire = job_to_wire(&$next);
        let seq: i64 = bind_event!(sqlx::query_scalar(INSERT_EVENT), $next, $now, wire)
            .fetch_one(&mut *$tx)
            .await?;
        (
            entries,
            JobChange {
                sequence: seq as u64,
                job: wire,
                remote: false,
            },
        )
    }};
}

/// Binds the parameters of [`UPDATE_JOB`] (`$1`–`$23`) to `query`: job `next` (its version
/// already the new one) replacing version `from`.
macro_rules! bind_update {
    ($query:expr, $from:expr, $next:expr) => {{
        let next: &JobRecord = &$next;
        let cols = JobColumns::of(next);
        $query
            .bind(&next.id)
            .bind($from)
            .bind(next.status.short_name())
            .bind(next.stage.short_name())
            .bind(next.progress)
            .bind(i64::from(next.attempt))
            .bind(&next.worker_id)
            .bind(next.version)
            .bind(next.started_at)
            .bind(next.finished_at)
            .bind(&next.error)
            .bind(&next.output)
            .bind(cols.cancel.requested_by)
            .bind(cols.cancel.reason)
            .bind(cols.cancel.requested_at)
            .bind(cols.cancel.deadline)
            .bind(cols.cancel.delivered_at)
            .bind(cols.cancel.acknowledged_at)
            .bind(cols.cancel.stopped_at)
            .bind(cols.cancel.stopped_stage)
            .bind(cols.cancel.stop_duration_us)
            .bind(cols.cancel.resolution)
            .bind(cols.cancel.past_point_of_no_return)
    }};
}

/// Writes `next`, the state `decision` gives `job`, inside `tx`: a compare-and-set on the
/// version. Evaluates to `Some(next)` with its new version, or `None` when the version moved
/// (lost the race).
macro_rules! update_job {
    ($tx:expr, $job:expr, $next:expr) => {{
        let mut next: JobRecord = $next;
        next.version = $job.version + 1;
        let updated = bind_update!(sqlx::query(UPDATE_JOB), $job.version, next)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
        (updated == 1).then_some(next)
    }};
}

/// Writes `decision` for `job` inside `tx` (compare-and-set on the version), then its log
/// entries and change event. Evaluates to `Some((next, entries, change))`, or `None` when the
/// version moved (lost the race).
///
/// Transactions that change several jobs use [`update_job!`] for all of them first and
/// [`append_log_and_event!`] after: every transaction then takes its row locks before the
/// PostgreSQL order lock, and the holder of that lock never waits for a row (no deadlock).
macro_rules! write_decision {
    ($pool:expr, $tx:expr, $job:expr, $next:expr, $decision:expr, $now:expr) => {{
        match update_job!($tx, $job, $next) {
            Some(next) => {
                let (entries, change) =
                    append_log_and_event!($pool, $tx, next, &$decision.log, $now);
                Some((next, entries, change))
            }
            None => None,
        }
    }};
}

/// SQLite: writes `next` (the state a decision gives `job`), its log entries `drafts` and its
/// change event in one transaction on `conn`, on the calling thread (`store::inline`): the
/// compare-and-set, the inserts and the commit are function calls, not hand-overs to a
/// connection's thread. `Some((next, entries, change))`, or `None` when the version moved (lost
/// the race; nothing is written). A busy database is an error [`is_busy`] recognises; after any
/// error the caller must [`restore_writer`].
fn write_inline(
    conn: &mut rusqlite::Connection,
    job: &JobRecord,
    mut next: JobRecord,
    drafts: &[LogDraft],
    now: i64,
) -> Result<Option<(JobRecord, Vec<LogEntry>, JobChange)>, rusqlite::Error> {
    next.version = job.version + 1;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let updated = bind_update!(Binds::default(), job.version, next).execute(&tx, UPDATE_JOB)?;
    if updated != 1 {
        return Ok(None);
    }
    let mut entries = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let id = bind_log!(Binds::default(), next, now, draft).query_i64(&tx, INSERT_LOG)?;
        entries.push(log_entry(id, &next, now, draft));
    }
    let wire = job_to_wire(&next);
    let seq = bind_event!(Binds::default(), next, now, wire).query_i64(&tx, INSERT_EVENT)?;
    tx.commit()?;
    let change = JobChange {
        sequence: seq as u64,
        job: wire,
        remote: false,
    };
    Ok(Some((next, entries, change)))
}

/// After a failed [`write_inline`]: makes sure no transaction is left open on the writer's
/// connection (which would hold SQLite's write lock), replacing the connection if it cannot
/// roll back.
fn restore_writer(conn: &mut rusqlite::Connection, path: &std::path::Path) {
    if conn.is_autocommit() {
        return;
    }
    let Err(e) = conn.execute_batch("ROLLBACK") else {
        return;
    };
    warn!(error = %e, "the SQLite writer connection failed to roll back; opening a new one");
    match inline::open(path, true) {
        Ok(fresh) => *conn = fresh,
        Err(e) => {
            error!(error = %e, "could not open a new SQLite writer connection; writes will fail until the database is reachable again")
        }
    }
}

fn engine_order_lock<E: Engine>(_pool: &E) -> Option<&'static str> {
    E::ORDER_LOCK
}

fn engine_claim_sql<E: Engine>(_pool: &E) -> &'static str {
    E::CLAIM
}

fn log_entry(id: i64, job: &JobRecord, now: i64, draft: &LogDraft) -> LogEntry {
    LogEntry {
        id: id as u64,
        job_id: job.id.clone(),
        at_unix_ms: now,
        level: draft.level as i32,
        event: draft.event.to_string(),
        actor: draft.actor.clone(),
        stage: draft.stage as i32,
        attempt: job.attempt,
        message: draft.message.clone(),
    }
}

/// A submit, ready to write: its id, parameters and log entry are made before it waits for
/// the writer.
pub(super) struct PendingSubmit {
    id: String,
    new: NewJob,
    params: String,
    draft: LogDraft,
    now: i64,
    /// Where a group commit sends the result.
    done: Option<tokio::sync::oneshot::Sender<Result<JobRecord, StoreError>>>,
}

impl PendingSubmit {
    fn new(new: NewJob, now: i64) -> Result<Self, StoreError> {
        let params = serde_json::to_string(&new.params)
            .map_err(|e| StoreError::Corrupt(format!("params: {e}")))?;
        let draft = LogDraft {
            level: LogLevel::Info,
            event: "job.submitted",
            actor: new.submitted_by.clone(),
            stage: Stage::Unspecified,
            message: format!(
                "job submitted by {} for report {}",
                new.submitted_by, new.report
            ),
        };
        Ok(PendingSubmit {
            id: uuid::Uuid::now_v7().to_string(),
            new,
            params,
            draft,
            now,
            done: None,
        })
    }

    fn answer(&mut self, result: Result<JobRecord, StoreError>) {
        if let Some(done) = self.done.take() {
            // The caller may have gone away (its RPC was cancelled): the job stays submitted.
            let _ = done.send(result);
        }
    }
}

fn lock_submits(
    submits: &std::sync::Mutex<Vec<PendingSubmit>>,
) -> std::sync::MutexGuard<'_, Vec<PendingSubmit>> {
    submits
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Inserts the job of `pending` (and its configuration) inside `tx`; evaluates to the job as
/// stored.
macro_rules! insert_job {
    ($tx:expr, $pending:expr) => {{
        let pending: &PendingSubmit = $pending;
        let new = &pending.new;
        let row: JobRow = sqlx::query_as(INSERT_JOB)
            .bind(&pending.id)
            .bind(&new.report)
            .bind(&pending.params)
            .bind(&new.submitted_by)
            .bind(pending.now)
            .bind(
                new.config
                    .as_ref()
                    .map_or_else(|| new.report.clone(), config_route),
            )
            .fetch_one(&mut *$tx)
            .await?;
        if let Some(config) = &new.config {
            sqlx::query("INSERT INTO job_configs (job_id, body) VALUES ($1, $2)")
                .bind(&pending.id)
                .bind(config.encode_to_vec())
                .execute(&mut *$tx)
                .await?;
        }
        JobRecord::try_from(row)?
    }};
}

impl Store {
    /// Queues a new job; returns it as stored.
    ///
    /// On SQLite, submits that arrive while another write holds the writer's turn are
    /// committed together: whichever of them gets the turn next writes those waiting (up to
    /// [`MAX_SUBMIT_GROUP`]) in one transaction (each job with its own log entry and change event, in arrival
    /// order), answers the others, and publishes the changes in order. Should that
    /// transaction fail, each submit of it is written again on its own, so each gets its own
    /// result.
    pub async fn submit(&self, new: NewJob, now: i64) -> Result<JobRecord, StoreError> {
        let pending = PendingSubmit::new(new, now)?;
        let Some(writers) = self.writers.clone() else {
            // PostgreSQL: concurrent writers, nothing to wait for.
            let (job, entries, change) = self.submit_alone(&pending).await?;
            self.publish(entries, change);
            return Ok(job);
        };
        let (done, mut answer) = tokio::sync::oneshot::channel();
        lock_submits(&self.submits).push(PendingSubmit {
            done: Some(done),
            ..pending
        });
        loop {
            tokio::select! {
                biased;
                answer = &mut answer => {
                    return answer.unwrap_or_else(|_| {
                        Err(StoreError::Corrupt("a group commit ended without an answer".into()))
                    });
                }
                turn = Arc::clone(&writers).lock_owned() => {
                    let batch: Vec<PendingSubmit> = {
                        let mut waiting = lock_submits(&self.submits);
                        let n = waiting.len().min(MAX_SUBMIT_GROUP);
                        waiting.drain(..n).collect()
                    };
                    if batch.is_empty() {
                        // Ours was committed before we got the turn: its answer is there.
                        continue;
                    }
                    // In a task of its own, so that the batch is written, published and
                    // answered even if this call goes away meanwhile.
                    let store = self.clone();
                    let group = tokio::spawn(async move {
                        store.submit_group(batch).await;
                        drop(turn);
                    });
                    let _ = group.await;
                }
            }
        }
    }

    /// Writes `batch` in one transaction and answers each submit (the caller holds the
    /// writer's turn).
    async fn submit_group(&self, mut batch: Vec<PendingSubmit>) {
        let written = with_pool!(&self.db, pool => {
            async {
                let mut tx = pool.begin_write().await?;
                let mut written = Vec::with_capacity(batch.len());
                for pending in &batch {
                    let job = insert_job!(tx, pending);
                    let (entries, change) =
                        append_log_and_event!(pool, tx, job, [&pending.draft], pending.now);
                    written.push((job, entries, change));
                }
                tx.commit().await?;
                Ok::<_, StoreError>(written)
            }
            .await
        });
        match written {
            Ok(written) => {
                for (pending, (job, entries, change)) in batch.iter_mut().zip(written) {
                    self.publish(entries, change);
                    pending.answer(Ok(job));
                }
            }
            Err(e) if batch.len() == 1 => batch[0].answer(Err(e)),
            Err(e) => {
                tracing::warn!(error = %e, submits = batch.len(), "a group commit of submits failed; writing each on its own");
                for pending in &mut batch {
                    let result = self
                        .submit_alone(pending)
                        .await
                        .map(|(job, entries, change)| {
                            self.publish(entries, change);
                            job
                        });
                    pending.answer(result);
                }
            }
        }
    }

    /// Writes one submit in a transaction of its own (the caller holds the writer's turn
    /// on SQLite) and returns the job, its log entries and its change, not yet published.
    async fn submit_alone(
        &self,
        pending: &PendingSubmit,
    ) -> Result<(JobRecord, Vec<LogEntry>, JobChange), StoreError> {
        Ok(with_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let job = insert_job!(tx, pending);
            let (entries, change) =
                append_log_and_event!(pool, tx, job, [&pending.draft], pending.now);
            tx.commit().await?;
            (job, entries, change)
        }))
    }

    /// The configuration a configured job runs (as it was when it was submitted); `None` for
    /// a built-in report.
    pub async fn job_config(&self, id: &str) -> Result<Option<ReportConfig>, StoreError> {
        let body: Option<Vec<u8>> = with_pool!(&self.db, pool => {
            sqlx::query_scalar("SELECT body FROM job_configs WHERE job_id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        body.map(|b| {
            ReportConfig::decode(b.as_slice())
                .map_err(|e| StoreError::Corrupt(format!("configuration of job {id}: {e}")))
        })
        .transpose()
    }

    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let row: Option<JobRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(SELECT_JOB).bind(id).fetch_optional(pool).await?
        });
        row.map(JobRecord::try_from).transpose()
    }

    /// Newest first.
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        let statuses = if filter.statuses.is_empty() {
            String::new()
        } else {
            let names: Vec<_> = filter.statuses.iter().map(|s| s.short_name()).collect();
            format!(",{},", names.join(","))
        };
        let rows: Vec<JobRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(LIST_JOBS)
                .bind(&statuses)
                .bind(filter.before)
                .bind(i64::from(filter.limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    /// Applies `event` to job `id` at time `now`: runs the state machine on the job as stored
    /// and writes its decision with a compare-and-set, retrying if the job changed meanwhile.
    pub async fn apply(&self, id: &str, event: &JobEvent, now: i64) -> Result<Applied, StoreError> {
        self.apply_from(id, None, Origin::ControlPlane, event, now)
            .await
    }

    /// As [`Store::apply`], for an event worker `worker_id` reported: refused unless the job's
    /// current assignment is that worker's ([`job::apply_from`]).
    pub async fn apply_reported(
        &self,
        worker_id: &str,
        id: &str,
        event: &JobEvent,
        now: i64,
    ) -> Result<Applied, StoreError> {
        self.apply_from(id, None, Origin::Worker(worker_id), event, now)
            .await
    }

    /// As [`Store::apply`], starting from `seen`, the job as the caller has just read it: on
    /// SQLite the state machine runs on it and the compare-and-set checks it is still the job
    /// as stored (if not, the job is read again and the event applied to that), which saves a
    /// read on paths where every call counts (a cancel). A decision that writes nothing is
    /// made again on the job as stored unless `seen` is terminal. PostgreSQL reads the job
    /// again inside its transaction.
    pub async fn apply_seen(
        &self,
        seen: JobRecord,
        event: &JobEvent,
        now: i64,
    ) -> Result<Applied, StoreError> {
        let id = seen.id.clone();
        self.apply_from(&id, Some(seen), Origin::ControlPlane, event, now)
            .await
    }

    async fn apply_from(
        &self,
        id: &str,
        seen: Option<JobRecord>,
        origin: Origin<'_>,
        event: &JobEvent,
        now: i64,
    ) -> Result<Applied, StoreError> {
        match self.apply_on_writer(id, seen, origin, event, now).await? {
            Some(applied) => Ok(applied),
            None => self.apply_in_transaction(id, origin, event, now).await,
        }
    }

    /// SQLite: [`Store::apply`] on the writer's connection, each transition written on the
    /// calling thread ([`write_inline`]). Between its `BEGIN` and its `COMMIT` there is no
    /// `await`, so a caller that goes away (a cancelled RPC) cannot leave a transaction open.
    /// `None` on PostgreSQL, and when the database was busy (another process writing): then
    /// [`Store::apply_in_transaction`] waits for it.
    async fn apply_on_writer(
        &self,
        id: &str,
        seen: Option<JobRecord>,
        origin: Origin<'_>,
        event: &JobEvent,
        now: i64,
    ) -> Result<Option<Applied>, StoreError> {
        let (Some(mut conn), Some(readers)) = (self.write_turn().await, &self.readers) else {
            return Ok(None);
        };
        // The first try starts from the caller's read or this process's last commit of the job;
        // a compare-and-set that misses reads it from the database.
        let mut seen = seen.or_else(|| self.live_copy(id));
        for _ in 0..MAX_CAS_RETRIES {
            // A copy is checked by the compare-and-set when the decision writes; a decision
            // that writes nothing (a refusal, an idempotent repeat) is only taken from the job
            // as stored, or from a terminal copy (terminal states never change).
            let (job, checked) = match seen.take() {
                Some(job) => {
                    let terminal = job.status.is_terminal();
                    (job, terminal)
                }
                None => {
                    let row = self.get(id).await?;
                    (
                        row.ok_or_else(|| StoreError::NotFound(id.to_string()))?,
                        true,
                    )
                }
            };
            let decision = match job::apply_from(&job, origin, event, now) {
                Ok(decision) => decision,
                Err(_) if !checked => continue,
                Err(refusal) => {
                    return Ok(Some(Applied {
                        job,
                        decision: Err(refusal),
                        sequence: None,
                    }));
                }
            };
            let Some(next) = decision.next.clone() else {
                if !checked {
                    continue;
                }
                return Ok(Some(Applied {
                    job,
                    decision: Ok(decision),
                    sequence: None,
                }));
            };
            let written = match write_inline(&mut conn, &job, next, &decision.log, now) {
                Ok(written) => written,
                Err(e) => {
                    restore_writer(&mut conn, readers.path());
                    if inline::is_busy(&e) {
                        debug!(
                            job_id = id,
                            "the database is busy (another process is writing); writing this transition through the pool, which waits for it"
                        );
                        return Ok(None);
                    }
                    return Err(e.into());
                }
            };
            if let Some((next, entries, change)) = written {
                let sequence = change.sequence;
                self.publish_job(&next, entries, change);
                return Ok(Some(Applied {
                    job: next,
                    decision: Ok(decision),
                    sequence: Some(sequence),
                }));
            }
        }
        Err(StoreError::Contended)
    }

    /// [`Store::apply`] as one transaction that reads the job, then writes the decision
    /// statement by statement (PostgreSQL, and SQLite when another process held the write
    /// lock: sqlx's connection thread waits for it).
    async fn apply_in_transaction(
        &self,
        id: &str,
        origin: Origin<'_>,
        event: &JobEvent,
        now: i64,
    ) -> Result<Applied, StoreError> {
        for _ in 0..MAX_CAS_RETRIES {
            let _turn = self.write_turn().await;
            let written = with_pool!(&self.db, pool => {
                let mut tx = pool.begin_write().await?;
                let row: Option<JobRow> =
                    sqlx::query_as(SELECT_JOB).bind(id).fetch_optional(&mut *tx).await?;
                let job = JobRecord::try_from(row.ok_or_else(|| StoreError::NotFound(id.to_string()))?)?;
                let decision = match job::apply_from(&job, origin, event, now) {
                    Ok(decision) => decision,
                    Err(refusal) => return Ok(Applied { job, decision: Err(refusal), sequence: None }),
                };
                let Some(next) = decision.next.clone() else {
                    return Ok(Applied { job, decision: Ok(decision), sequence: None });
                };
                match write_decision!(pool, tx, job, next, decision, now) {
                    Some(written) => {
                        tx.commit().await?;
                        Some((written, decision))
                    }
                    None => None,
                }
            });
            if let Some(((next, entries, change), decision)) = written {
                let sequence = change.sequence;
                self.publish_job(&next, entries, change);
                return Ok(Applied {
                    job: next,
                    decision: Ok(decision),
                    sequence: Some(sequence),
                });
            }
        }
        Err(StoreError::Contended)
    }

    /// Applies several events, each as [`Store::apply`] would, in one transaction: one commit
    /// for a batch of outcomes a worker sent together. Results come in the order of `events`;
    /// each event is its own compare-and-set, so a refused or lost one changes nothing for the
    /// others. Rows are written in job id order (events of one job in the order given), so two
    /// batches never wait for each other's rows in opposite orders. An event whose
    /// compare-and-set lost (its job changed meanwhile; PostgreSQL only) is applied again on
    /// its own after the commit.
    pub async fn apply_batch(
        &self,
        events: &[(String, JobEvent)],
        origin: Origin<'_>,
        now: i64,
    ) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
        /// What became of one event inside the transaction.
        enum Slot {
            Done(Result<Applied, StoreError>),
            Updated(JobRecord, Decision),
            Lost,
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by(|&a, &b| events[a].0.cmp(&events[b].0));
        let turn = self.write_turn().await;
        let (slots, written) = with_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let mut slots: Vec<Slot> = events.iter().map(|_| Slot::Lost).collect();
            for &i in &order {
                let (id, event) = &events[i];
                let row: Option<JobRow> =
                    sqlx::query_as(SELECT_JOB).bind(id).fetch_optional(&mut *tx).await?;
                let Some(row) = row else {
                    slots[i] = Slot::Done(Err(StoreError::NotFound(id.clone())));
                    continue;
                };
                let job = JobRecord::try_from(row)?;
                let decision = match job::apply_from(&job, origin, event, now) {
                    Ok(decision) => decision,
                    Err(refusal) => {
                        slots[i] = Slot::Done(Ok(Applied { job, decision: Err(refusal), sequence: None }));
                        continue;
                    }
                };
                let Some(next) = decision.next.clone() else {
                    slots[i] = Slot::Done(Ok(Applied { job, decision: Ok(decision), sequence: None }));
                    continue;
                };
                slots[i] = match update_job!(tx, job, next) {
                    Some(next) => Slot::Updated(next, decision),
                    None => Slot::Lost,
                };
            }
            // Log entries and events after every row is written (see `write_decision!`), in
            // the order the rows were written.
            let mut written = Vec::new();
            for &i in &order {
                if let Slot::Updated(next, decision) = &slots[i] {
                    let (entries, change) = append_log_and_event!(pool, tx, next, &decision.log, now);
                    let applied = Applied {
                        job: next.clone(),
                        decision: Ok(decision.clone()),
                        sequence: Some(change.sequence),
                    };
                    written.push((entries, change));
                    slots[i] = Slot::Done(Ok(applied));
                }
            }
            if !written.is_empty() {
                tx.commit().await?;
            }
            (slots, written)
        });
        for (entries, change) in written {
            self.publish(entries, change);
        }
        drop(turn);
        let mut applied = Vec::with_capacity(slots.len());
        for (slot, (id, event)) in slots.into_iter().zip(events) {
            applied.push(match slot {
                Slot::Done(result) => result,
                Slot::Lost | Slot::Updated(..) => {
                    self.apply_from(id, None, origin, event, now).await
                }
            });
        }
        Ok(applied)
    }

    /// Claims the oldest queued job whose report is in `reports` for `worker_id`
    /// (`QUEUED → RUNNING`, a new attempt). Exactly one of a claim and a cancel of the same
    /// queued job wins.
    pub async fn claim(
        &self,
        worker_id: &str,
        reports: &[String],
        now: i64,
    ) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.claim_batch(worker_id, reports, 1, now).await?.pop())
    }

    /// Claims up to `max` of the oldest queued jobs whose report is in `reports` for
    /// `worker_id`, oldest first, in one transaction (one commit for a whole batch of free
    /// slots). Each is its own compare-and-set, as [`Store::claim`].
    pub async fn claim_batch(
        &self,
        worker_id: &str,
        reports: &[String],
        max: u32,
        now: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let reports = format!(",{},", reports.join(","));
        let event = JobEvent::Claim {
            worker_id: worker_id.to_string(),
        };
        for _ in 0..MAX_CAS_RETRIES {
            let _turn = self.write_turn().await;
            let claimed = with_pool!(&self.db, pool => {
                let mut tx = pool.begin_write().await?;
                let rows: Vec<JobRow> = sqlx::query_as(engine_claim_sql(pool))
                    .bind(&reports)
                    .bind(i64::from(max))
                    .fetch_all(&mut *tx)
                    .await?;
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                let mut updated = Vec::with_capacity(rows.len());
                for row in rows {
                    let job = JobRecord::try_from(row)?;
                    let decision = job::apply(&job, &event, now)
                        .map_err(|r| StoreError::Corrupt(format!("claim of queued job {}: {r}", job.id)))?;
                    let next = decision.next.clone().ok_or_else(|| StoreError::Corrupt("claim changed nothing".into()))?;
                    if let Some(next) = update_job!(tx, job, next) {
                        updated.push((next, decision));
                    }
                }
                // Log entries and events after every row is written (see `write_decision!`).
                let mut claimed = Vec::with_capacity(updated.len());
                for (next, decision) in updated {
                    let (entries, change) = append_log_and_event!(pool, tx, next, &decision.log, now);
                    claimed.push((next, entries, change));
                }
                if !claimed.is_empty() {
                    tx.commit().await?;
                }
                claimed
            });
            if !claimed.is_empty() {
                let mut jobs = Vec::with_capacity(claimed.len());
                for (next, entries, change) in claimed {
                    self.publish_job(&next, entries, change);
                    jobs.push(next);
                }
                return Ok(jobs);
            }
        }
        Err(StoreError::Contended)
    }

    /// Appends a worker's log line, unless the attempt is no longer the job's live one or is
    /// not assigned to the worker that sent the line. Returns whether it was kept.
    pub async fn append_worker_log(
        &self,
        line: NewLogLine<'_>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let actor = format!("worker:{}", line.worker_id);
        let _turn = self.write_turn().await;
        let id: Option<i64> = with_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            if let Some(lock) = engine_order_lock(pool) {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            let id = sqlx::query_scalar(INSERT_WORKER_LOG)
                .bind(line.job_id)
                .bind(now)
                .bind(line.level.as_str_name())
                .bind(&actor)
                .bind(line.stage.short_name())
                .bind(i64::from(line.attempt))
                .bind(line.message)
                .bind(line.worker_id)
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            id
        });
        let Some(id) = id else { return Ok(false) };
        let entry = LogEntry {
            id: id as u64,
            job_id: line.job_id.to_string(),
            at_unix_ms: now,
            level: line.level as i32,
            event: "worker.log".into(),
            actor,
            stage: line.stage as i32,
            attempt: line.attempt,
            message: line.message.to_string(),
        };
        let _ = self.hub.log.send(Arc::new(entry));
        Ok(true)
    }

    /// Appends an audit note to a job's log without changing the job (e.g. a cancel that lost
    /// the race to the job's completion).
    pub async fn append_note(
        &self,
        job: &JobRecord,
        draft: &LogDraft,
        now: i64,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let id: i64 = with_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            if let Some(lock) = engine_order_lock(pool) {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            let id = sqlx::query_scalar(INSERT_LOG)
                .bind(&job.id)
                .bind(now)
                .bind(draft.level.as_str_name())
                .bind(draft.event)
                .bind(&draft.actor)
                .bind(draft.stage.short_name())
                .bind(i64::from(job.attempt))
                .bind(&draft.message)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            id
        });
        let _ = self.hub.log.send(Arc::new(log_entry(id, job, now, draft)));
        Ok(())
    }

    /// A job's log entries with an id above `after_id`, oldest first: all of them (for tests
    /// and tools; the API reads pages, [`Store::log_page`]).
    pub async fn log(&self, job_id: &str, after_id: u64) -> Result<Vec<LogEntry>, StoreError> {
        self.log_page(job_id, after_id, u32::MAX).await
    }

    /// At most `limit` of a job's log entries with an id above `after_id`, oldest first.
    pub async fn log_page(
        &self,
        job_id: &str,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let rows: Vec<LogRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(SELECT_LOG)
                .bind(job_id)
                .bind(i64::try_from(after_id).unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(LogEntry::from).collect())
    }

    /// At most `limit` jobs with an insertion number above `after_num`, oldest first: one page
    /// of a watcher's snapshot. Read the sequence first ([`Store::last_sequence`]): a job on a
    /// page is as of that sequence or newer, and watchers keep the higher version of a job.
    pub async fn jobs_page(
        &self,
        after_num: i64,
        limit: u32,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let rows: Vec<JobRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(concat!("SELECT ", job_columns!(), " FROM jobs WHERE num > $1 ORDER BY num LIMIT $2"))
                .bind(after_num)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    /// Every job as of one sequence number: `(sequence, jobs oldest first)`.
    pub async fn snapshot(&self) -> Result<(u64, Vec<JobRecord>), StoreError> {
        let (seq, rows): (i64, Vec<JobRow>) = with_pool!(&self.db, pool => {
            let mut tx = pool.begin_snapshot().await?;
            let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM job_events")
                .fetch_one(&mut *tx)
                .await?;
            let rows = sqlx::query_as(concat!("SELECT ", job_columns!(), " FROM jobs ORDER BY num"))
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            (seq, rows)
        });
        let jobs = rows
            .into_iter()
            .map(JobRecord::try_from)
            .collect::<Result<_, _>>()?;
        Ok((seq as u64, jobs))
    }

    /// Committed changes with a sequence above `after`, in order, at most `limit`.
    pub async fn changes_after(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JobChange>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT seq, payload FROM job_events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(seq, payload)| {
                let job = presswork_proto::v1::Job::decode(payload.as_slice())
                    .map_err(|e| StoreError::Corrupt(format!("change {seq}: {e}")))?;
                Ok(JobChange {
                    sequence: seq as u64,
                    job,
                    remote: false,
                })
            })
            .collect()
    }

    /// The highest committed change sequence.
    pub async fn last_sequence(&self) -> Result<u64, StoreError> {
        let seq: i64 = with_pool!(&self.db, pool => {
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM job_events").fetch_one(pool).await?
        });
        Ok(seq as u64)
    }

    /// Ids of `CANCELLING` jobs whose cancel deadline has passed.
    pub async fn overdue_cancels(&self, now: i64) -> Result<Vec<String>, StoreError> {
        Ok(with_pool!(&self.db, pool => {
            sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'CANCELLING' AND cancel_deadline <= $1")
                .bind(now)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Running or cancelling jobs whose worker has not been seen after `seen_after` (or was
    /// never recorded), oldest first.
    pub async fn jobs_of_silent_workers(
        &self,
        seen_after: i64,
    ) -> Result<Vec<SilentWorkerJob>, StoreError> {
        let rows: Vec<(String, i64, String, String, i64)> = with_pool!(&self.db, pool => {
            sqlx::query_as(
                "SELECT jobs.id, jobs.attempt, jobs.worker_id, jobs.status, COALESCE(w.last_seen_at, 0) \
                 FROM jobs LEFT JOIN workers w ON w.id = jobs.worker_id \
                 WHERE jobs.status IN ('RUNNING', 'CANCELLING') \
                 AND (w.last_seen_at IS NULL OR w.last_seen_at <= $1) ORDER BY jobs.num",
            )
            .bind(seen_after)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(job_id, attempt, worker_id, status, last_seen_at)| {
                Ok(SilentWorkerJob {
                    job_id,
                    attempt: u32::try_from(attempt).map_err(|_| {
                        StoreError::Corrupt(format!("job attempt {attempt} out of range"))
                    })?,
                    worker_id,
                    status: JobStatus::from_short_name(&status).ok_or_else(|| {
                        StoreError::Corrupt(format!("unknown job status {status:?}"))
                    })?,
                    last_seen_at,
                })
            })
            .collect()
    }

    /// Running or cancelling jobs assigned to `worker_id`.
    pub async fn live_jobs_of_worker(&self, worker_id: &str) -> Result<Vec<JobRecord>, StoreError> {
        let rows: Vec<JobRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(concat!(
                "SELECT ", job_columns!(),
                " FROM jobs WHERE worker_id = $1 AND status IN ('RUNNING', 'CANCELLING') ORDER BY num"
            ))
            .bind(worker_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    /// Records a worker's (re)connection.
    pub async fn worker_connected(
        &self,
        id: &str,
        name: &str,
        capacity: u32,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO workers (id, name, capacity, connected_at, last_seen_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, capacity = excluded.capacity, \
                 connected_at = excluded.connected_at, last_seen_at = excluded.last_seen_at",
            )
            .bind(id)
            .bind(name)
            .bind(i64::from(capacity))
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Records that a worker was heard from.
    pub async fn worker_seen(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        with_pool!(&self.db, pool => {
            sqlx::query("UPDATE workers SET last_seen_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Publishes a committed change of a job whose new state is `job`, and keeps that state as
    /// the job's [`Store::current`] one while it is running or cancelling.
    fn publish_job(&self, job: &JobRecord, entries: Vec<LogEntry>, change: JobChange) {
        self.publish(entries, change);
        if let Some(live) = &self.live
            && matches!(job.status, JobStatus::Running | JobStatus::Cancelling)
            && let Ok(mut live) = live.lock()
        {
            live.insert(job.id.clone(), job.clone());
        }
    }

    /// The job as this process last committed it, when it is running or cancelling (SQLite),
    /// else as read from the store. A change committed by a call still under way may not be
    /// in it yet: callers use it only as the start of a compare-and-set, which then misses and
    /// reads the job again.
    pub async fn current(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        match self.live_copy(id) {
            Some(job) => Ok(Some(job)),
            None => self.get(id).await,
        }
    }

    fn live_copy(&self, id: &str) -> Option<JobRecord> {
        self.live.as_ref()?.lock().ok()?.get(id).cloned()
    }

    fn publish(&self, entries: Vec<LogEntry>, change: JobChange) {
        if let Some(live) = &self.live
            && let Ok(mut live) = live.lock()
        {
            live.remove(&change.job.id);
        }
        for entry in entries {
            let _ = self.hub.log.send(Arc::new(entry));
        }
        let _ = self.hub.jobs.send(Arc::new(change));
    }
}
