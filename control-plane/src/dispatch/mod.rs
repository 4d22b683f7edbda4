//! Connected workers and what flows to them: assignments, cancels and force-stops. Also the
//! sweepers that expire overdue cancels and fail the jobs of workers whose lease lapsed.
//!
//! Nothing here is authoritative: the store is. The in-memory session map only says which
//! worker stream this control plane holds; a cancel for a worker that is not connected is
//! re-sent when it reconnects.

mod session;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presswork_proto::v1::{
    AssignJob, CancelCommand, CancelResolution, ConnectResponse, ForceStop, Job, JobAttempt,
    JobStatus, connect_response::Msg,
};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::job::{JobEvent, JobRecord, WorkerLostPolicy};
use crate::store::{JobChange, Store};
use crate::time::now_ms;

pub use session::{WorkerStream, serve_worker_stream};

/// Timing settings of the worker protocol and cancels, and what a lost worker's jobs become.
#[derive(Clone, Debug)]
pub struct Timing {
    /// How long a worker has to confirm a cancel before the job is failed (AC-007).
    pub cancel_timeout: Duration,
    /// A worker not heard from for this long is lost; its jobs fail, or are requeued by
    /// `on_worker_lost` once it has been silent for a second lease (see [`Dispatcher::sweep`]).
    pub worker_lease: Duration,
    /// How often workers send heartbeats.
    pub heartbeat_interval: Duration,
    /// What becomes of a running job whose worker is lost.
    pub on_worker_lost: WorkerLostPolicy,
}

/// One connected worker stream.
pub(crate) struct WorkerSession {
    pub id: String,
    pub capacity: u32,
    /// What it may claim: its built-in reports and, when it runs configurations, `config`
    /// and `config+connector:NAME` routes (see `store::worker_routes`).
    pub routes: Vec<String>,
    tx: mpsc::UnboundedSender<Result<ConnectResponse, tonic::Status>>,
    /// Attempts this worker holds a slot for, until their outcome arrives.
    pub assigned: Mutex<HashSet<(String, u32)>>,
    /// The worker is shutting down: assign it nothing more.
    pub draining: AtomicBool,
    /// When this replica last received a message on the stream (Unix ms).
    pub last_heard: AtomicI64,
}

impl WorkerSession {
    /// Queues a message on the worker's stream; false when the stream is gone.
    pub fn send(&self, msg: Msg) -> bool {
        self.tx.send(Ok(ConnectResponse { msg: Some(msg) })).is_ok()
    }

    /// Ends the stream with `status`: the worker sees the call fail and reconnects.
    fn close(&self, status: tonic::Status) {
        let _ = self.tx.send(Err(status));
    }

    fn free_slots(&self) -> usize {
        if self.draining.load(Ordering::Relaxed) {
            return 0;
        }
        let held = self.assigned.lock().map_or(usize::MAX, |a| a.len());
        (self.capacity as usize).saturating_sub(held)
    }
}

/// Hands jobs to workers and commands to their streams.
pub struct Dispatcher {
    store: Store,
    timing: Timing,
    sessions: Mutex<HashMap<String, Arc<WorkerSession>>>,
    /// Worker ids whose new stream is between Hello and registration.
    connecting: Mutex<HashSet<String>>,
    wake: Notify,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    started_at: i64,
}

impl Dispatcher {
    /// Starts the dispatch loop and the sweepers; they stop when `shutdown` fires.
    pub fn start(store: Store, timing: Timing, shutdown: CancellationToken) -> Arc<Self> {
        let dispatcher = Arc::new(Dispatcher {
            store,
            timing,
            sessions: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            tasks: TaskTracker::new(),
            shutdown,
            started_at: now_ms(),
        });
        dispatcher
            .tasks
            .spawn(Arc::clone(&dispatcher).dispatch_loop());
        dispatcher.tasks.spawn(Arc::clone(&dispatcher).sweep_loop());
        if dispatcher.store.backend_name() == "postgres" {
            // Scale-out: other replicas' changes reach this one's watchers and sessions.
            let changes = dispatcher.store.hub().subscribe_jobs();
            dispatcher
                .tasks
                .spawn(Arc::clone(&dispatcher).react_to_other_replicas(changes));
            dispatcher.tasks.spawn(
                dispatcher
                    .store
                    .clone()
                    .follow_other_replicas(dispatcher.shutdown.clone()),
            );
        }
        dispatcher
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The event for a job whose worker is lost, under the configured policy.
    pub(crate) fn worker_lost(&self, attempt: u32, detail: String) -> JobEvent {
        JobEvent::WorkerLost {
            attempt,
            detail,
            policy: self.timing.on_worker_lost,
        }
    }

    /// Asks the dispatch loop to look for queued jobs and free slots.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits for every background task (dispatch, sweepers, deadline timers) to end.
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// A cancel moved `job` to CANCELLING: send it to the job's worker now (the latency that
    /// matters), record the delivery, and arm the deadline.
    pub fn cancel_requested(self: &Arc<Self>, job: &JobRecord) {
        self.send_cancel(job, false);
        self.arm_cancel_deadline(job);
    }

    /// Sends the cancel on the worker's stream, then records the delivery (in the background:
    /// the worker's answer may be recorded first, and then fills the delivery in itself).
    fn send_cancel(self: &Arc<Self>, job: &JobRecord, redelivery: bool) {
        let Some(session) = self.session(&job.worker_id) else {
            info!(job_id = %job.id, worker_id = %job.worker_id, "worker not connected here; the replica holding its stream sends the cancel, or this one when it reconnects");
            return;
        };
        self.send_cancel_on(&session, job, redelivery);
    }

    /// Sends the cancel on `session` (also before the session is registered: a reconnect
    /// re-sends pending cancels first), then records the delivery in the background.
    fn send_cancel_on(
        self: &Arc<Self>,
        session: &WorkerSession,
        job: &JobRecord,
        redelivery: bool,
    ) {
        let cancel = job.cancel.as_ref();
        let delivered = session.send(Msg::Cancel(CancelCommand {
            job: Some(attempt_of(job)),
            requested_by: cancel.map(|c| c.requested_by.clone()).unwrap_or_default(),
            reason: cancel.map(|c| c.reason.clone()).unwrap_or_default(),
        }));
        if !delivered {
            return;
        }
        let this = Arc::clone(self);
        let event = JobEvent::CancelDelivered {
            attempt: job.attempt,
            worker_id: job.worker_id.clone(),
            redelivery,
        };
        let job_id = job.id.clone();
        self.tasks.spawn(async move {
            this.apply_logged(&job_id, &event).await;
        });
    }

    fn arm_cancel_deadline(self: &Arc<Self>, job: &JobRecord) {
        let Some(deadline) = job.cancel.as_ref().map(|c| c.deadline) else {
            return;
        };
        let wait = Duration::from_millis(u64::try_from(deadline - now_ms()).unwrap_or(0));
        let this = Arc::clone(self);
        let job_id = job.id.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = this.shutdown.cancelled() => {}
                _ = tokio::time::sleep(wait) => this.expire_cancel(&job_id).await,
            }
        });
    }

    /// Fails a CANCELLING job whose deadline passed and tells its worker to force-stop it.
    async fn expire_cancel(&self, job_id: &str) {
        let Some(applied) = self.apply_logged(job_id, &JobEvent::CancelTimedOut).await else {
            return;
        };
        if applied.decision.as_ref().is_ok_and(|d| d.force_stop) {
            warn!(job_id, worker_id = %applied.job.worker_id, "cancel timed out; job failed and force-stop sent");
            if let Some(session) = self.session(&applied.job.worker_id) {
                session.send(Msg::ForceStop(ForceStop {
                    job: Some(attempt_of(&applied.job)),
                }));
            }
        }
    }

    /// Applies an event `session`'s worker reported; refused when the job is not assigned to
    /// it. A refusal is expected and harmless (stale, already resolved) unless it says the
    /// sender is not the job's worker.
    async fn apply_reported(&self, session: &WorkerSession, job_id: &str, event: &JobEvent) {
        match self
            .store
            .apply_reported(&session.id, job_id, event, now_ms())
            .await
        {
            Ok(applied) => match &applied.decision {
                Err(refusal @ crate::job::Refusal::NotAssigned { .. }) => {
                    warn!(job_id, worker_id = %session.id, %refusal, ?event, "event from a worker the job is not assigned to refused")
                }
                Err(refusal) => debug!(job_id, %refusal, ?event, "event refused"),
                Ok(_) => {}
            },
            Err(crate::store::StoreError::NotFound(_)) => {
                warn!(job_id, worker_id = %session.id, ?event, "event about an unknown job refused")
            }
            Err(e) => error!(job_id, error = %e, ?event, "could not record a job event"),
        }
    }

    /// Reserves `worker_id` for a stream that said Hello, until the returned guard is dropped
    /// (after registration, or on failure). Refused while another stream of that id is
    /// connecting, or is registered and was heard from within two heartbeat intervals: a
    /// second process with the same id (or a forged Hello) must not take over a live worker's
    /// stream and fail its jobs. A registered stream silent for longer is closed and replaced
    /// (the worker reconnected after its old connection died without a word).
    pub(crate) fn claim_worker_id(
        self: &Arc<Self>,
        worker_id: &str,
    ) -> Result<WorkerIdClaim, tonic::Status> {
        let live_within =
            i64::try_from((self.timing.heartbeat_interval * 2).as_millis()).unwrap_or(i64::MAX);
        let mut connecting = self.connecting.lock().map_err(|_| {
            tonic::Status::internal("the worker registry is unusable: restart the control plane")
        })?;
        let existing = self.session(worker_id);
        let silent_ms = existing
            .as_ref()
            .map(|s| now_ms() - s.last_heard.load(Ordering::Relaxed));
        let live = silent_ms.is_some_and(|ms| ms <= live_within);
        if live || connecting.contains(worker_id) {
            return Err(tonic::Status::already_exists(format!(
                "worker id {} already has a live stream on this control plane: each worker process has an id of its own, so another process is using this one; if the old process is gone, retry: its stream is dropped after {live_within} ms of silence",
                crate::echo::shown(worker_id)
            )));
        }
        if let Some(stale) = existing {
            warn!(%worker_id, silent_ms = silent_ms.unwrap_or_default(), "a worker reconnected while its old stream was still open but silent; closing the old one");
            stale.close(tonic::Status::unavailable(
                "this worker opened a new stream; this one is closed",
            ));
            self.unregister(&stale);
        }
        connecting.insert(worker_id.to_string());
        Ok(WorkerIdClaim {
            dispatcher: Arc::clone(self),
            worker_id: worker_id.to_string(),
        })
    }

    /// Applies an event whose refusal is expected and harmless (stale or already resolved).
    async fn apply_logged(&self, job_id: &str, event: &JobEvent) -> Option<crate::store::Applied> {
        match self.store.apply(job_id, event, now_ms()).await {
            Ok(applied) => {
                if let Err(refusal) = &applied.decision {
                    debug!(job_id, %refusal, ?event, "event refused");
                }
                Some(applied)
            }
            Err(e) => {
                error!(job_id, error = %e, ?event, "could not record a job event");
                None
            }
        }
    }

    /// The report kinds the workers connected here say they run (not the configuration
    /// routes).
    pub fn advertised_reports(&self) -> HashSet<String> {
        let Ok(sessions) = self.sessions.lock() else {
            return HashSet::new();
        };
        sessions
            .values()
            .flat_map(|s| s.routes.iter())
            .filter(|route| !route.starts_with("config"))
            .cloned()
            .collect()
    }

    pub(crate) fn session(&self, worker_id: &str) -> Option<Arc<WorkerSession>> {
        self.sessions.lock().ok()?.get(worker_id).cloned()
    }

    pub(crate) fn register(&self, session: Arc<WorkerSession>) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(session.id.clone(), session);
        }
        self.wake();
    }

    /// Removes `session` unless a newer connection of the same worker replaced it.
    pub(crate) fn unregister(&self, session: &Arc<WorkerSession>) {
        if let Ok(mut sessions) = self.sessions.lock()
            && sessions
                .get(&session.id)
                .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.id);
        }
    }

    /// Drops every worker stream (on shutdown), so the server can finish.
    pub fn disconnect_all(&self) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.clear();
        }
    }

    async fn dispatch_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                // A safety net for a missed wake-up; normal dispatch is event-driven.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            self.dispatch_queued().await;
        }
    }

    /// Claims queued jobs for workers with free slots until either runs out: all the free
    /// slots of one worker in one transaction.
    async fn dispatch_queued(&self) {
        let mut exhausted: HashSet<String> = HashSet::new();
        loop {
            let candidate = {
                let Ok(sessions) = self.sessions.lock() else {
                    return;
                };
                sessions
                    .values()
                    .filter(|s| !exhausted.contains(&s.id))
                    .map(|s| (s.free_slots(), s))
                    .filter(|(free, _)| *free > 0)
                    .max_by_key(|(free, _)| *free)
                    .map(|(free, s)| (free, Arc::clone(s)))
            };
            let Some((free, session)) = candidate else {
                return;
            };
            let free = u32::try_from(free).unwrap_or(u32::MAX);
            let jobs = match self
                .store
                .claim_batch(&session.id, &session.routes, free, now_ms())
                .await
            {
                Ok(jobs) => jobs,
                Err(e) => {
                    error!(error = %e, "could not claim queued jobs; retrying shortly");
                    return;
                }
            };
            if jobs.len() < free as usize {
                exhausted.insert(session.id.clone());
            }
            for job in jobs {
                if let Ok(mut assigned) = session.assigned.lock() {
                    assigned.insert((job.id.clone(), job.attempt));
                }
                // A configured job carries its configuration; a built-in report does not.
                let config = if session.routes.contains(&job.report) {
                    None
                } else {
                    match self.store.job_config(&job.id).await {
                        Ok(config) => config,
                        Err(e) => {
                            error!(job_id = %job.id, error = %e, "could not read the job's configuration");
                            None
                        }
                    }
                };
                let sent = session.send(Msg::Assign(AssignJob {
                    job: Some(attempt_of(&job)),
                    report: job.report.clone(),
                    params: job.params.clone().into_iter().collect(),
                    config,
                }));
                if !sent {
                    let lost = self.worker_lost(
                        job.attempt,
                        format!(
                            "worker {} disconnected before the job reached it",
                            session.id
                        ),
                    );
                    self.apply_logged(&job.id, &lost).await;
                }
            }
        }
    }

    /// Acts on the changes other replicas commit (PostgreSQL scale-out) for what this replica
    /// holds: its dispatch loop and its workers' streams.
    async fn react_to_other_replicas(
        self: Arc<Self>,
        mut changes: broadcast::Receiver<Arc<JobChange>>,
    ) {
        loop {
            let change = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                change = changes.recv() => change,
            };
            match change {
                Ok(change) if change.remote => self.other_replica_changed(&change.job).await,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(
                        missed,
                        "fell behind the changes of other replicas; re-reading what this replica's workers need"
                    );
                    self.wake();
                    self.resend_undelivered_cancels().await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Another replica committed `job`'s change:
    /// - a queued job: look for a free slot here;
    /// - a cancel not yet delivered, for a worker whose stream is here: send it and arm the
    ///   deadline (the cancel's own replica cannot reach the worker);
    /// - a job ended elsewhere (cancel timed out, worker declared lost) while a worker here
    ///   still holds it: force-stop that attempt.
    async fn other_replica_changed(self: &Arc<Self>, job: &Job) {
        match job.status() {
            JobStatus::Queued => self.wake(),
            JobStatus::Cancelling => {
                let undelivered = job
                    .cancel
                    .as_ref()
                    .is_some_and(|c| c.delivered_at_unix_ms == 0);
                if !undelivered || self.session(&job.worker_id).is_none() {
                    return;
                }
                // The store is authoritative: the change may be stale by now.
                match self.store.get(&job.id).await {
                    Ok(Some(record))
                        if record.status == JobStatus::Cancelling
                            && record.attempt == job.attempt
                            && record.cancel.as_ref().is_some_and(|c| c.delivered_at == 0) =>
                    {
                        debug!(job_id = %job.id, worker_id = %job.worker_id, "cancel accepted by another replica; sending it to the worker connected here");
                        self.cancel_requested(&record);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        error!(job_id = %job.id, error = %e, "could not read a job cancelled on another replica; its cancel is re-sent when the worker reconnects, or times out")
                    }
                }
            }
            status if status.is_terminal() => {
                let Some(session) = self.session(&job.worker_id) else {
                    return;
                };
                let held = session
                    .assigned
                    .lock()
                    .is_ok_and(|a| a.contains(&(job.id.clone(), job.attempt)));
                if held {
                    let timed_out = job
                        .cancel
                        .as_ref()
                        .is_some_and(|c| c.resolution() == CancelResolution::TimedOut);
                    warn!(job_id = %job.id, worker_id = %job.worker_id, timed_out, "job ended on another replica while its worker still holds it; force-stop sent");
                    session.send(Msg::ForceStop(ForceStop {
                        job: Some(JobAttempt {
                            job_id: job.id.clone(),
                            attempt: job.attempt,
                        }),
                    }));
                }
            }
            _ => {}
        }
    }

    /// Sends every cancel not yet delivered to a worker whose stream this replica holds (after
    /// missing other replicas' changes).
    async fn resend_undelivered_cancels(self: &Arc<Self>) {
        let sessions: Vec<String> = match self.sessions.lock() {
            Ok(sessions) => sessions.keys().cloned().collect(),
            Err(_) => return,
        };
        for worker_id in sessions {
            let jobs = match self.store.live_jobs_of_worker(&worker_id).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    error!(%worker_id, error = %e, "could not read a worker's jobs to re-send cancels");
                    continue;
                }
            };
            for job in jobs {
                if job.status == JobStatus::Cancelling
                    && job.cancel.as_ref().is_some_and(|c| c.delivered_at == 0)
                {
                    self.cancel_requested(&job);
                }
            }
        }
    }

    async fn sweep_loop(self: Arc<Self>) {
        let period = (self.timing.worker_lease / 4)
            .min(self.timing.cancel_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            self.sweep().await;
        }
    }

    /// Expires overdue cancels, closes the streams of workers this replica no longer hears
    /// from, and settles the jobs of workers whose lease lapsed. Guarded updates: safe to run
    /// on every replica and after a restart.
    ///
    /// A worker silent for a lease is lost: its `CANCELLING` jobs fail at once, and so do its
    /// `RUNNING` ones under the `fail` policy. Under `requeue` a running job goes back to the
    /// queue only after a second lease of silence: the worker fences itself (cancels its jobs)
    /// after one lease without hearing from any control plane, but it may have heard from one
    /// a little after its last heartbeat arrived, and its job's code needs a moment to stop.
    /// Waiting a second lease keeps the old attempt from running beside the new one.
    async fn sweep(&self) {
        let now = now_ms();
        match self.store.overdue_cancels(now).await {
            Ok(ids) => {
                for id in ids {
                    self.expire_cancel(&id).await;
                }
            }
            Err(e) => error!(error = %e, "could not look for overdue cancels"),
        }
        let lease = i64::try_from(self.timing.worker_lease.as_millis()).unwrap_or(i64::MAX);
        self.close_silent_streams(now, lease);
        if now - self.started_at <= lease {
            // Just started: give workers a full lease to reconnect before calling them lost.
            return;
        }
        let requeue = matches!(self.timing.on_worker_lost, WorkerLostPolicy::Requeue { .. });
        match self.store.jobs_of_silent_workers(now - lease).await {
            Ok(jobs) => {
                for job in jobs {
                    let silent_ms = now - job.last_seen_at;
                    let event = if job.status == JobStatus::Running && requeue {
                        if silent_ms <= lease.saturating_mul(2) {
                            continue; // not yet surely fenced: see above
                        }
                        self.worker_lost(
                            job.attempt,
                            format!(
                                "no heartbeat from worker {} for more than {} ms (two leases)",
                                job.worker_id,
                                lease.saturating_mul(2)
                            ),
                        )
                    } else {
                        self.worker_lost(
                            job.attempt,
                            format!(
                                "no heartbeat from worker {} for more than {lease} ms",
                                job.worker_id
                            ),
                        )
                    };
                    if let Some(applied) = self.apply_logged(&job.job_id, &event).await
                        && applied.sequence.is_some()
                    {
                        let status = applied.job.status;
                        warn!(job_id = %job.job_id, worker_id = %job.worker_id, attempt = job.attempt, status = status.short_name(), "worker lost; job settled by policy");
                        if status == JobStatus::Queued {
                            self.wake();
                        }
                    }
                }
            }
            Err(e) => error!(error = %e, "could not look for jobs of lost workers"),
        }
    }

    /// Closes the streams of workers this replica has not heard from for a lease (a partition
    /// leaves the connection open until TCP gives up): they are assigned nothing more, and a
    /// worker that can still hear reconnects and is reconciled.
    fn close_silent_streams(&self, now: i64, lease: i64) {
        let silent: Vec<Arc<WorkerSession>> = match self.sessions.lock() {
            Ok(sessions) => sessions
                .values()
                .filter(|s| now - s.last_heard.load(Ordering::Relaxed) > lease)
                .cloned()
                .collect(),
            Err(_) => return,
        };
        for session in silent {
            warn!(worker_id = %session.id, lease_ms = lease, "nothing heard from the worker for a lease; closing its stream and assigning it nothing more");
            session.close(tonic::Status::unavailable(format!(
                "the control plane heard nothing from worker {} for more than {lease} ms and considers it lost; reconnect",
                session.id
            )));
            self.unregister(&session);
        }
    }
}

/// A worker id reserved by [`Dispatcher::claim_worker_id`], released on drop.
pub(crate) struct WorkerIdClaim {
    dispatcher: Arc<Dispatcher>,
    worker_id: String,
}

impl Drop for WorkerIdClaim {
    fn drop(&mut self) {
        if let Ok(mut connecting) = self.dispatcher.connecting.lock() {
            connecting.remove(&self.worker_id);
        }
    }
}

pub(crate) fn attempt_of(job: &JobRecord) -> JobAttempt {
    JobAttempt {
        job_id: job.id.clone(),
        attempt: job.attempt,
    }
}
