//! `JobService`: submit, read, list, watch and cancel jobs, and read their execution logs.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use presswork_proto::v1::job_service_server::JobService;
use presswork_proto::v1::watch_jobs_response::Kind;
use presswork_proto::v1::{
    CancelJobRequest, CancelJobResponse, CancelOutcome, GetJobLogRequest, GetJobLogResponse,
    GetJobRequest, GetJobResponse, JobStatus, ListJobsRequest, ListJobsResponse, LogLevel,
    SubmitJobRequest, SubmitJobResponse, WatchJobLogRequest, WatchJobLogResponse, WatchJobsRequest,
    WatchJobsResponse,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::caller::caller;
use super::store_status;
use crate::dispatch::Dispatcher;
use crate::job::{JobEvent, JobRecord, LogDraft, Refusal};
use crate::store::{JobFilter, NewJob, Store, job_to_wire};
use crate::time::now_ms;
use presswork_proto::built_in::{BUILT_IN_REPORTS, BuiltInReport, built_in};

const MAX_PARAMS: usize = 64;
const MAX_PARAM_VALUE: usize = 4096;
/// Names and values of one job's parameters together, at most: they are stored with the job
/// and sent in every change of it.
const MAX_PARAMS_TOTAL: usize = 16 * 1024;
const MAX_REASON: usize = 1000;
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
const DEFAULT_LOG_PAGE: u32 = 1000;
const MAX_LOG_PAGE: u32 = 5000;
/// Encoded entries per log page at most: half of the 4 MiB a gRPC client takes by default.
const MAX_LOG_PAGE_BYTES: usize = 2 << 20;
/// Changes read from the store per catch-up query.
const CATCH_UP_BATCH: u32 = 1000;
/// Messages buffered per watcher before the stream pushes back: a watcher's memory on the
/// control plane is this many jobs, whatever the history holds.
const WATCH_BUFFER: usize = 64;
/// Jobs read per query of a snapshot.
const SNAPSHOT_PAGE: u32 = 500;
/// How long a new watcher waits for a turn to read its snapshot before it is told to retry.
const SNAPSHOT_ADMISSION_WAIT: Duration = Duration::from_secs(2);
/// How long a watcher may take to receive its whole snapshot; a slower one is dropped so that
/// it does not hold a turn for ever.
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(120);

pub struct JobApi {
    pub dispatcher: Arc<Dispatcher>,
    pub shutdown: CancellationToken,
    pub limits: Arc<JobLimits>,
}

/// The job API's admission control and budgets (`--max-watchers`, `--max-snapshot-readers`,
/// `--submit-rate`).
pub struct JobLimits {
    /// Streams (WatchJobs, WatchJobLog) open at once.
    watchers: Arc<Semaphore>,
    max_watchers: usize,
    /// Watchers reading their snapshot at once: each holds a database connection meanwhile.
    snapshots: Arc<Semaphore>,
    /// Submits per user; `None`: unlimited.
    submits: Option<DefaultKeyedRateLimiter<String>>,
    submit_rate: u32,
}

impl JobLimits {
    /// `submit_rate`: jobs per second per user, with bursts of ten seconds' worth (0:
    /// unlimited).
    pub fn new(max_watchers: usize, max_snapshot_readers: usize, submit_rate: u32) -> Self {
        let submits = NonZeroU32::new(submit_rate).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        JobLimits {
            watchers: Arc::new(Semaphore::new(max_watchers)),
            max_watchers,
            snapshots: Arc::new(Semaphore::new(max_snapshot_readers.max(1))),
            submits,
            submit_rate,
        }
    }

    /// A place for one more stream, or UNAVAILABLE (retryable) when all are taken.
    fn watcher(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.watchers).try_acquire_owned().map_err(|_| {
            Status::unavailable(format!(
                "the control plane already serves {} live streams: retry in a few seconds, or ask an operator to raise --max-watchers",
                self.max_watchers
            ))
        })
    }

    /// A turn to read a snapshot, or UNAVAILABLE (retryable) after a short wait.
    async fn snapshot_turn(&self) -> Result<OwnedSemaphorePermit, Status> {
        match tokio::time::timeout(
            SNAPSHOT_ADMISSION_WAIT,
            Arc::clone(&self.snapshots).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Status::unavailable(
                "many watchers are loading the job list right now: retry in a moment (resume from your last sequence when you have one, which needs no snapshot)",
            )),
        }
    }

    fn check_submit(&self, user: &str) -> Result<(), Status> {
        let Some(submits) = &self.submits else {
            return Ok(());
        };
        if submits.check_key(&user.to_string()).is_err() {
            return Err(Status::resource_exhausted(format!(
                "{user} submitted more than {} jobs per second: wait a moment and submit the rest, or ask an operator to raise --submit-rate",
                self.submit_rate
            )));
        }
        // Users come from the store (a verified token), so the keys are few; drop idle ones.
        if submits.len() > 10_000 {
            submits.retain_recent();
        }
        Ok(())
    }
}

impl JobApi {
    fn store(&self) -> &Store {
        self.dispatcher.store()
    }

    async fn existing_job(&self, id: &str) -> Result<JobRecord, Status> {
        self.store()
            .get(id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| not_found(id))
    }
}

impl JobApi {
    /// NOT_FOUND for a report nobody knows, naming those that exist (a few of each kind).
    async fn unknown_report(&self, report: &str) -> Status {
        const SHOWN: usize = 20;
        let mut known: BTreeSet<String> = BUILT_IN_REPORTS
            .iter()
            .filter(|r| !r.test_only)
            .map(|r| r.name.to_string())
            .collect();
        known.extend(self.dispatcher.advertised_reports());
        match self.store().reports(None, SHOWN as u32).await {
            Ok(stored) => known.extend(stored.into_iter().map(|c| c.name)),
            Err(e) => {
                tracing::warn!(error = %e, "could not list the stored reports for an error message")
            }
        }
        let more = if known.len() > SHOWN { ", …" } else { "" };
        let names: Vec<String> = known.into_iter().take(SHOWN).collect();
        Status::not_found(format!(
            "report {} does not exist: no stored configuration, built-in report or connected worker has that name. Known reports: {}{more} (`presswork reports list` shows the stored ones)",
            crate::echo::shown(report),
            names.join(", ")
        ))
    }
}

/// INVALID_ARGUMENT for a parameter the built-in report does not take (the job would only
/// fail on its worker).
fn check_built_in_params(
    report: &BuiltInReport,
    params: &BTreeMap<String, String>,
) -> Result<(), Status> {
    match params.keys().find(|name| !report.accepts(name)) {
        None => Ok(()),
        Some(unknown) => Err(Status::invalid_argument(format!(
            "unknown parameter {} for report {}; it accepts {}",
            crate::echo::shown(unknown),
            report.name,
            report.accepted()
        ))),
    }
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!(
        "job {id} not found: check the id (`presswork jobs list` shows existing jobs)"
    ))
}

type WatchStream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl JobService for JobApi {
    async fn submit_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<SubmitJobResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        validate_report(&req.report)?;
        let params = validate_params(req.params)?;
        self.limits.check_submit(caller.name())?;
        let config = match built_in(&req.report) {
            Some(report) => {
                check_built_in_params(report, &params)?;
                None
            }
            // A stored configuration of that name: the job runs it as it is now.
            None => match self
                .store()
                .report(&req.report)
                .await
                .map_err(store_status)?
            {
                Some(config) => Some(config),
                None if self.dispatcher.advertised_reports().contains(&req.report) => None,
                None => return Err(self.unknown_report(&req.report).await),
            },
        };
        let job = self
            .store()
            .submit(
                NewJob {
                    report: req.report,
                    params,
                    submitted_by: caller.name().to_string(),
                    config,
                },
                now_ms(),
            )
            .await
            .map_err(store_status)?;
        self.dispatcher.wake();
        Ok(Response::new(SubmitJobResponse {
            job: Some(job_to_wire(&job)),
        }))
    }

    async fn get_job(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<GetJobResponse>, Status> {
        caller(&request)?;
        let id = validate_job_id(&request.get_ref().job_id)?;
        let job = self.existing_job(id).await?;
        Ok(Response::new(GetJobResponse {
            job: Some(job_to_wire(&job)),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        caller(&request)?;
        let req = request.into_inner();
        let statuses = req
            .statuses
            .iter()
            .map(|s| match JobStatus::try_from(*s) {
                Ok(status) if status != JobStatus::Unspecified => Ok(status),
                _ => Err(Status::invalid_argument(format!(
                    "statuses contains {s}, which is not a job status: use QUEUED, RUNNING, CANCELLING, SUCCEEDED, FAILED or CANCELLED"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let before = if req.page_token.is_empty() {
            0
        } else {
            req.page_token.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                Status::invalid_argument("page_token is not one this server issued: pass next_page_token from the previous response, or leave it empty")
            })?
        };
        let limit = match req.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let jobs = self
            .store()
            .list(&JobFilter {
                statuses,
                before,
                limit: limit + 1,
            })
            .await
            .map_err(store_status)?;
        let more = jobs.len() > limit as usize;
        let page: Vec<_> = jobs.into_iter().take(limit as usize).collect();
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => last.num.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListJobsResponse {
            jobs: page.iter().map(job_to_wire).collect(),
            next_page_token,
        }))
    }

    type WatchJobsStream = WatchStream<WatchJobsResponse>;

    async fn watch_jobs(
        &self,
        request: Request<WatchJobsRequest>,
    ) -> Result<Response<Self::WatchJobsStream>, Status> {
        caller(&request)?;
        let after = request.get_ref().after_sequence;
        let place = self.limits.watcher()?;
        let store = self.store().clone();
        // Subscribe before reading, so nothing committed in between is missed.
        let live = store.hub().subscribe_jobs();
        let turn = if after > 0 {
            let last = store.last_sequence().await.map_err(store_status)?;
            if after > last {
                return Err(Status::out_of_range(format!(
                    "after_sequence {after} is ahead of the last change {last}: resume from a sequence this server sent, or 0 for a fresh snapshot"
                )));
            }
            None
        } else {
            Some(self.limits.snapshot_turn().await?)
        };
        Ok(Response::new(spawn_stream(
            self.shutdown.clone(),
            place,
            move |tx| async move { watch_jobs(store, after, turn, live, &tx).await },
        )))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let id = validate_job_id(&req.job_id)?;
        if req.reason.chars().count() > MAX_REASON {
            return Err(Status::invalid_argument(format!(
                "reason is longer than {MAX_REASON} characters: shorten it"
            )));
        }
        // Read first, to tell "already terminal" (BR-002) from "finished while we cancelled".
        // A running job is usually known from this process's own last commit: no database
        // call (the compare-and-set below checks it is still current).
        let seen = self
            .store()
            .current(id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| not_found(id))?;
        let now = now_ms();
        let timeout =
            i64::try_from(self.dispatcher.timing().cancel_timeout.as_millis()).unwrap_or(i64::MAX);
        let event = JobEvent::Cancel {
            actor: caller.name().to_string(),
            reason: req.reason.clone(),
            deadline: now.saturating_add(timeout),
        };
        let seen_status = seen.status;
        // The job just read is where the compare-and-set starts (one read on this path).
        let applied = self
            .store()
            .apply_seen(seen, &event, now)
            .await
            .map_err(store_status)?;
        let (outcome, message) = match &applied.decision {
            Ok(decision) => match decision.cancel_outcome {
                Some(CancelOutcome::CancelledWhileQueued) => (
                    CancelOutcome::CancelledWhileQueued,
                    "The job was queued: it is cancelled and will never run.".to_string(),
                ),
                Some(CancelOutcome::Cancelling) => {
                    self.dispatcher.cancel_requested(&applied.job);
                    (CancelOutcome::Cancelling, "The job is running: it is now cancelling and its worker has been told to stop.".to_string())
                }
                _ => (
                    CancelOutcome::AlreadyCancelling,
                    "A cancel of this job is already in progress; nothing more was done."
                        .to_string(),
                ),
            },
            Err(Refusal::NotCancellable { .. }) if seen_status == JobStatus::Cancelling => {
                // A cancel already in progress ended the job meanwhile: this one added nothing.
                (CancelOutcome::AlreadyCancelling, "A cancel of this job was already in progress and has since ended it; nothing more was done.".to_string())
            }
            Err(Refusal::NotCancellable { status }) if !seen_status.is_terminal() => {
                // The job finished between our read and the cancel: the cancel is ignored (AC-005).
                let note = LogDraft {
                    level: LogLevel::Warn,
                    event: "cancel.ignored",
                    actor: caller.name().to_string(),
                    stage: applied.job.stage,
                    message: format!(
                        "cancel by {} ignored: the job finished as {} before the cancel took effect",
                        caller.name(),
                        status.short_name()
                    ),
                };
                self.store()
                    .append_note(&applied.job, &note, now_ms())
                    .await
                    .map_err(store_status)?;
                (
                    CancelOutcome::AlreadyFinished,
                    format!(
                        "The job already finished with status {}; the cancel was ignored.",
                        status.short_name()
                    ),
                )
            }
            Err(Refusal::NotCancellable { status }) => {
                return Err(Status::failed_precondition(format!(
                    "Job is not in a cancellable state. It is {}; only QUEUED or RUNNING jobs can be cancelled.",
                    status.short_name()
                )));
            }
            Err(other) => {
                return Err(Status::internal(format!(
                    "unexpected refusal of a cancel: {other}; please report this"
                )));
            }
        };
        Ok(Response::new(CancelJobResponse {
            outcome: outcome as i32,
            job: Some(job_to_wire(&applied.job)),
            message,
        }))
    }

    async fn get_job_log(
        &self,
        request: Request<GetJobLogRequest>,
    ) -> Result<Response<GetJobLogResponse>, Status> {
        caller(&request)?;
        let req = request.get_ref();
        let id = validate_job_id(&req.job_id)?;
        self.existing_job(id).await?;
        let limit = match req.page_size {
            0 => DEFAULT_LOG_PAGE,
            n => n.min(MAX_LOG_PAGE),
        };
        let mut entries = self
            .store()
            .log_page(id, req.after_id, limit + 1)
            .await
            .map_err(store_status)?;
        // A page also ends before it would outgrow one message a client accepts by default.
        let mut bytes = 0;
        let fits = entries
            .iter()
            .take(limit as usize)
            .take_while(|entry| {
                bytes += prost::Message::encoded_len(*entry) + 8;
                bytes <= MAX_LOG_PAGE_BYTES
            })
            .count()
            .max(1);
        let more = entries.len() > fits;
        entries.truncate(fits);
        let next_after_id = match (more, entries.last()) {
            (true, Some(last)) => last.id,
            _ => 0,
        };
        Ok(Response::new(GetJobLogResponse {
            entries,
            next_after_id,
        }))
    }

    type WatchJobLogStream = WatchStream<WatchJobLogResponse>;

    async fn watch_job_log(
        &self,
        request: Request<WatchJobLogRequest>,
    ) -> Result<Response<Self::WatchJobLogStream>, Status> {
        caller(&request)?;
        let id = validate_job_id(&request.get_ref().job_id)?.to_string();
        let after = request.get_ref().after_id;
        let store = self.store().clone();
        let place = self.limits.watcher()?;
        let log_rx = store.hub().subscribe_log();
        let jobs_rx = store.hub().subscribe_jobs();
        self.existing_job(&id).await?;
        Ok(Response::new(spawn_stream(
            self.shutdown.clone(),
            place,
            move |tx| async move { watch_log(store, id, after, log_rx, jobs_rx, &tx).await },
        )))
    }
}

/// Runs `feed` in a task writing to the returned stream, holding the stream's `place` until
/// it ends. The task ends when the client goes away or the server shuts down; an error from
/// `feed` ends the stream with that status.
fn spawn_stream<T, F, Fut>(
    shutdown: CancellationToken,
    place: OwnedSemaphorePermit,
    feed: F,
) -> WatchStream<T>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let work = feed(tx.clone());
    tokio::spawn(async move {
        let _place = place;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tx.closed() => {}
            result = work => {
                if let Err(status) = result {
                    let _ = tx.send(Err(status)).await;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Snapshot (when `after` is 0), then every change in sequence order with no gap: live
/// changes are used directly when they are the next in sequence, and anything else (a gap
/// from out-of-order publication, a lagging receiver) is read back from the store.
async fn watch_jobs(
    store: Store,
    after: u64,
    turn: Option<OwnedSemaphorePermit>,
    mut live: broadcast::Receiver<Arc<crate::store::JobChange>>,
    tx: &mpsc::Sender<Result<WatchJobsResponse, Status>>,
) -> Result<(), Status> {
    let mut last = after;
    if let Some(turn) = turn {
        last = tokio::time::timeout(SNAPSHOT_DEADLINE, snapshot(&store, tx))
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "the job list was not read within {} s, so this stream is closed: watch again from a client that reads its stream",
                    SNAPSHOT_DEADLINE.as_secs()
                ))
            })??;
        drop(turn);
    }
    last = catch_up(&store, last, tx).await?;
    loop {
        match live.recv().await {
            Ok(change) if change.sequence <= last => {}
            Ok(change) if change.sequence == last + 1 => {
                send(
                    tx,
                    WatchJobsResponse {
                        kind: Kind::Change as i32,
                        sequence: change.sequence,
                        job: Some(change.job.clone()),
                    },
                )
                .await?;
                last = change.sequence;
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                last = catch_up(&store, last, tx).await?
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

/// Sends every job, a page at a time, then SnapshotComplete; returns the snapshot's sequence.
/// The sequence is read first: a job on a later page may be newer than it, so changes after
/// it can repeat an older version of a job already sent, which watchers ignore (they keep the
/// higher version). Memory stays one page, whatever the history.
async fn snapshot(
    store: &Store,
    tx: &mpsc::Sender<Result<WatchJobsResponse, Status>>,
) -> Result<u64, Status> {
    let sequence = store.last_sequence().await.map_err(store_status)?;
    let mut after_num = 0;
    loop {
        let page = store
            .jobs_page(after_num, SNAPSHOT_PAGE)
            .await
            .map_err(store_status)?;
        let done = page.len() < SNAPSHOT_PAGE as usize;
        for job in &page {
            after_num = job.num;
            send(
                tx,
                WatchJobsResponse {
                    kind: Kind::Snapshot as i32,
                    sequence,
                    job: Some(job_to_wire(job)),
                },
            )
            .await?;
        }
        if done {
            break;
        }
    }
    send(
        tx,
        WatchJobsResponse {
            kind: Kind::SnapshotComplete as i32,
            sequence,
            job: None,
        },
    )
    .await?;
    Ok(sequence)
}

/// Sends every stored change after `last`; returns the new last sequence.
async fn catch_up(
    store: &Store,
    mut last: u64,
    tx: &mpsc::Sender<Result<WatchJobsResponse, Status>>,
) -> Result<u64, Status> {
    loop {
        let changes = store
            .changes_after(last, CATCH_UP_BATCH)
            .await
            .map_err(store_status)?;
        let done = changes.len() < CATCH_UP_BATCH as usize;
        for change in changes {
            last = change.sequence;
            send(
                tx,
                WatchJobsResponse {
                    kind: Kind::Change as i32,
                    sequence: change.sequence,
                    job: Some(change.job),
                },
            )
            .await?;
        }
        if done {
            return Ok(last);
        }
    }
}

/// The job's log after `after`, then new entries as they commit, until the job is terminal.
async fn watch_log(
    store: Store,
    job_id: String,
    after: u64,
    mut log_rx: broadcast::Receiver<Arc<presswork_proto::v1::LogEntry>>,
    mut jobs_rx: broadcast::Receiver<Arc<crate::store::JobChange>>,
    tx: &mpsc::Sender<Result<WatchJobLogResponse, Status>>,
) -> Result<(), Status> {
    let mut last = after;
    loop {
        // Read the job before the log: if it is terminal now, the log read below holds its
        // final entries (they commit with the terminal transition).
        let terminal = store
            .get(&job_id)
            .await
            .map_err(store_status)?
            .is_none_or(|j| j.status.is_terminal());
        // In pages, so a long log is never held whole in memory.
        loop {
            let page = store
                .log_page(&job_id, last, DEFAULT_LOG_PAGE)
                .await
                .map_err(store_status)?;
            let done = page.len() < DEFAULT_LOG_PAGE as usize;
            for entry in page {
                last = entry.id;
                send(tx, WatchJobLogResponse { entry: Some(entry) }).await?;
            }
            if done {
                break;
            }
        }
        if terminal {
            return Ok(());
        }
        // Wait for something about this job, then read again from the store (gap-free).
        loop {
            tokio::select! {
                entry = log_rx.recv() => match entry {
                    Ok(e) if e.job_id == job_id && e.id > last => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                change = jobs_rx.recv() => match change {
                    Ok(c) if c.job.id == job_id => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
            }
        }
    }
}

async fn send<T>(tx: &mpsc::Sender<Result<T, Status>>, message: T) -> Result<(), Status> {
    tx.send(Ok(message))
        .await
        .map_err(|_| Status::cancelled("the watcher went away"))
}

fn validate_job_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(
            "job_id is empty: pass the id SubmitJob returned (`presswork jobs list` shows them)",
        ));
    }
    uuid::Uuid::parse_str(id)
        .map(|_| id)
        .map_err(|_| Status::invalid_argument(format!("job_id {} is not a job id: job ids are UUIDs such as 0199a1b2-3c4d-7e5f-8a9b-0c1d2e3f4a5b", crate::echo::shown(id))))
}

fn validate_report(report: &str) -> Result<(), Status> {
    let valid = !report.is_empty()
        && report.len() <= 64
        && report
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "report {} is not a report name: use 1 to 64 lower-case letters, digits, '-' or '_' (e.g. demo-fast)",
            crate::echo::shown(report)
        )))
    }
}

fn validate_params(
    params: std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>, Status> {
    if params.len() > MAX_PARAMS {
        return Err(Status::invalid_argument(format!(
            "{} params given; at most {MAX_PARAMS} are allowed",
            params.len()
        )));
    }
    let mut total = 0;
    for (key, value) in &params {
        if key.is_empty() || key.len() > 64 {
            return Err(Status::invalid_argument(format!(
                "param name {} must be 1 to 64 characters",
                crate::echo::shown(key)
            )));
        }
        if value.len() > MAX_PARAM_VALUE {
            return Err(Status::invalid_argument(format!(
                "param {key} is longer than {MAX_PARAM_VALUE} bytes: shorten it"
            )));
        }
        total += key.len() + value.len();
    }
    if total > MAX_PARAMS_TOTAL {
        return Err(Status::invalid_argument(format!(
            "the params take {total} bytes together; at most {MAX_PARAMS_TOTAL} are allowed: pass large inputs as a file or a report configuration instead"
        )));
    }
    Ok(params.into_iter().collect())
}
