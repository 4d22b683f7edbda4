//! One worker's stream: the Hello handshake, reconciling what the worker and the store each
//! know after a reconnect, and applying the worker's reports in the order it sent them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use presswork_proto::v1::{
    ConnectRequest, ConnectResponse, ForceStop, HeartbeatAck, Hello, JobAttempt, JobFinished,
    LogLevel, OutcomeAck, Stage, Welcome, connect_request, connect_response::Msg, job_finished,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, Streaming};
use tracing::{debug, error, info, warn};

use super::{Dispatcher, WorkerSession};
use crate::job::{JobEvent, Origin, Outcome, Refusal, WorkerLostPolicy};
use crate::store::NewLogLine;
use crate::time::now_ms;

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CAPACITY: u32 = 1024;
/// Bounds on what a worker says about itself and its jobs.
const MAX_WORKER_NAME: usize = 128;
const MAX_REPORT_KINDS: usize = 256;
const MAX_REPORT_KIND: usize = 64;
const MAX_CONNECTORS: usize = 256;
const MAX_KNOWN: usize = 4 * MAX_CAPACITY as usize;
const MAX_JOB_ID: usize = 64;
/// Longer log lines, errors, outputs and reasons are cut to this many bytes, with a note.
const MAX_LOG_LINE: usize = 16 * 1024;
const MAX_ERROR: usize = 8 * 1024;
const MAX_OUTPUT: usize = 4 * 1024;
const MAX_REASON: usize = 1024;
/// Messages of one worker taken together, at most.
const MAX_BATCH: usize = 64;

pub type WorkerStream = UnboundedReceiverStream<Result<ConnectResponse, Status>>;

/// Accepts a worker stream: waits for Hello, registers the session, reconciles, and spawns the
/// task that applies the worker's messages. Returns the stream of commands to the worker.
pub async fn serve_worker_stream(
    dispatcher: Arc<Dispatcher>,
    mut inbound: Streaming<ConnectRequest>,
) -> Result<WorkerStream, Status> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(
                "no Hello within 10 s of opening WorkerService.Connect: send Hello first",
            )
        })?
        .map_err(caller_error)?;
    let Some(ConnectRequest {
        msg: Some(connect_request::Msg::Hello(hello)),
    }) = first
    else {
        return Err(Status::invalid_argument(
            "the first message on WorkerService.Connect must be Hello (worker id, name, capacity)",
        ));
    };
    validate_hello(&hello)?;
    // Held until the session is registered: no second stream with this id gets past here
    // meanwhile, and none while this one lives.
    let _claim = dispatcher.claim_worker_id(&hello.worker_id)?;

    let (tx, rx) = mpsc::unbounded_channel();
    let timing = dispatcher.timing();
    let welcome = Msg::Welcome(Welcome {
        heartbeat_interval_ms: millis(timing.heartbeat_interval),
        lease_ms: millis(timing.worker_lease),
    });
    let known: HashSet<(String, u32)> = hello
        .known
        .iter()
        .map(|a| (a.job_id.clone(), a.attempt))
        .collect();
    let session = Arc::new(WorkerSession {
        id: hello.worker_id.clone(),
        capacity: hello.capacity,
        routes: crate::store::worker_routes(
            &hello.reports,
            hello.runs_configurations,
            &hello.connectors,
        ),
        tx,
        // Every attempt the worker still holds keeps its slot until its outcome arrives.
        assigned: Mutex::new(known.clone()),
        draining: AtomicBool::new(false),
        last_heard: AtomicI64::new(now_ms()),
    });
    session.send(welcome);

    let store = dispatcher.store();
    let now = now_ms();
    store
        .worker_connected(&hello.worker_id, &hello.name, hello.capacity, now)
        .await
        .map_err(|e| internal("record the worker", &e))?;
    reconcile(&dispatcher, &session, &known).await?;
    info!(worker_id = %hello.worker_id, name = %hello.name, capacity = hello.capacity, known = known.len(), "worker connected");
    dispatcher.register(Arc::clone(&session));

    let task_dispatcher = Arc::clone(&dispatcher);
    dispatcher.tasks.spawn(async move {
        let worker_id = session.id.clone();
        let result = receive(&task_dispatcher, &session, &mut inbound).await;
        task_dispatcher.unregister(&session);
        match result {
            Ok(()) => info!(%worker_id, "worker stream closed"),
            Err(e) => {
                warn!(%worker_id, error = %e, "worker stream ended with an error");
                // The worker sees why its stream ended, not a clean end.
                session.close(e);
            }
        }
    });
    Ok(UnboundedReceiverStream::new(rx))
}

fn validate_hello(hello: &Hello) -> Result<(), Status> {
    if hello.worker_id.is_empty() || hello.worker_id.len() > 128 {
        return Err(Status::invalid_argument(
            "Hello.worker_id must be 1 to 128 characters: give each worker process a stable id",
        ));
    }
    if hello.name.len() > MAX_WORKER_NAME {
        return Err(Status::invalid_argument(format!(
            "Hello.name is {} bytes; at most {MAX_WORKER_NAME} are allowed: give the worker a shorter name",
            hello.name.len()
        )));
    }
    if hello.reports.len() > MAX_REPORT_KINDS || hello.connectors.len() > MAX_CONNECTORS {
        return Err(Status::invalid_argument(format!(
            "Hello names {} report kinds and {} connectors; at most {MAX_REPORT_KINDS} and {MAX_CONNECTORS} are allowed",
            hello.reports.len(),
            hello.connectors.len()
        )));
    }
    if let Some(bad) = hello
        .reports
        .iter()
        .chain(&hello.connectors)
        .find(|name| !is_kind_name(name))
    {
        return Err(Status::invalid_argument(format!(
            "Hello names the report kind or connector {}, which is not a name: use 1 to {MAX_REPORT_KIND} letters, digits, '-', '_' or '.'",
            crate::echo::shown(bad)
        )));
    }
    if hello.known.len() > MAX_KNOWN {
        return Err(Status::invalid_argument(format!(
            "Hello.known lists {} attempts; a worker holds at most {MAX_KNOWN}",
            hello.known.len()
        )));
    }
    for attempt in &hello.known {
        check_job_id(&attempt.job_id)?;
    }
    if hello.capacity == 0 || hello.capacity > MAX_CAPACITY {
        return Err(Status::invalid_argument(format!(
            "Hello.capacity must be between 1 and {MAX_CAPACITY}, got {}",
            hello.capacity
        )));
    }
    if hello.reports.is_empty() {
        return Err(Status::invalid_argument(
            "Hello.reports must name at least one report kind the worker can run",
        ));
    }
    Ok(())
}

/// After a (re)connect: re-send pending cancels, fail jobs the worker no longer has, and stop
/// attempts the worker still runs that the store has already ended.
async fn reconcile(
    dispatcher: &Arc<Dispatcher>,
    session: &Arc<WorkerSession>,
    known: &HashSet<(String, u32)>,
) -> Result<(), Status> {
    let store = dispatcher.store();
    let live = store
        .live_jobs_of_worker(&session.id)
        .await
        .map_err(|e| internal("read the worker's jobs", &e))?;
    let mut live_attempts = HashSet::new();
    for job in &live {
        live_attempts.insert((job.id.clone(), job.attempt));
        if !known.contains(&(job.id.clone(), job.attempt)) {
            let lost = dispatcher.worker_lost(
                job.attempt,
                format!(
                    "worker {} reconnected without this job (it restarted, or the assignment was lost)",
                    session.id
                ),
            );
            dispatcher.apply_logged(&job.id, &lost).await;
        } else if job.status == presswork_proto::v1::JobStatus::Cancelling {
            // On this session: it is registered only after reconciling.
            dispatcher.send_cancel_on(session, job, true);
        }
    }
    for (job_id, attempt) in known {
        if !live_attempts.contains(&(job_id.clone(), *attempt)) {
            // Ended here (timed out, worker lost) or finished and awaiting its ack: a stop
            // request is harmless for the latter and fences the former.
            session.send(Msg::ForceStop(ForceStop {
                job: Some(JobAttempt {
                    job_id: job_id.clone(),
                    attempt: *attempt,
                }),
            }));
        }
    }
    Ok(())
}

/// Applies the worker's messages in order until the stream ends. Messages the worker has
/// already sent are taken together (up to [`MAX_BATCH`]): their outcomes are applied in one
/// store transaction at the end of the batch. Only a job's outcome is deferred, and it is the
/// last message about its attempt, so each job's messages still apply in the order sent.
async fn receive(
    dispatcher: &Arc<Dispatcher>,
    session: &Arc<WorkerSession>,
    inbound: &mut Streaming<ConnectRequest>,
) -> Result<(), Status> {
    loop {
        let next = tokio::select! {
            _ = dispatcher.shutdown.cancelled() => return Ok(()),
            next = inbound.next() => next,
        };
        let Some(message) = next else { return Ok(()) };
        let mut batch = vec![message.map_err(caller_error)?];
        session.last_heard.store(now_ms(), Ordering::Relaxed);
        // How the stream went on after the batch: open, ended, or broken. Messages received
        // before an end or an error are still applied (log lines, stage starts and cancel
        // acknowledgements are not re-sent).
        let mut after: Option<Result<(), Status>> = None;
        while batch.len() < MAX_BATCH {
            match inbound.next().now_or_never() {
                Some(Some(Ok(message))) => batch.push(message),
                Some(Some(Err(status))) => {
                    after = Some(Err(caller_error(status)));
                    break;
                }
                Some(None) => {
                    after = Some(Ok(()));
                    break;
                }
                None => break,
            }
        }
        let mut outcomes = Vec::new();
        for message in batch {
            match message.msg {
                Some(connect_request::Msg::Finished(m)) => outcomes.push(m),
                Some(msg) => handle(dispatcher, session, msg).await?,
                None => {}
            }
        }
        if !outcomes.is_empty() {
            finished(dispatcher, session, outcomes).await?;
        }
        if let Some(end) = after {
            return end;
        }
    }
}

fn is_kind_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_REPORT_KIND
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Applies one message of the worker other than an outcome.
async fn handle(
    dispatcher: &Arc<Dispatcher>,
    session: &Arc<WorkerSession>,
    msg: connect_request::Msg,
) -> Result<(), Status> {
    let store = dispatcher.store();
    let now = now_ms();
    match msg {
        connect_request::Msg::Hello(_) => {
            return Err(Status::invalid_argument(
                "Hello may only be the first message of a stream",
            ));
        }
        connect_request::Msg::Heartbeat(_) => {
            store
                .worker_seen(&session.id, now)
                .await
                .map_err(|e| internal("record the heartbeat", &e))?;
            session.send(Msg::HeartbeatAck(HeartbeatAck {}));
        }
        connect_request::Msg::StageStarted(m) => {
            let (job_id, attempt) = parts(m.job)?;
            let event = JobEvent::StageStarted {
                attempt,
                stage: stage(m.stage),
            };
            dispatcher.apply_reported(session, &job_id, &event).await;
        }
        connect_request::Msg::Progress(m) => {
            let (job_id, attempt) = parts(m.job)?;
            if !(0.0..=1.0).contains(&m.fraction) {
                return Err(Status::invalid_argument(format!(
                    "Progress.fraction of job {job_id} is {}: send a number from 0 to 1",
                    m.fraction
                )));
            }
            let event = JobEvent::Progress {
                attempt,
                stage: stage(m.stage),
                fraction: m.fraction,
            };
            dispatcher.apply_reported(session, &job_id, &event).await;
        }
        connect_request::Msg::Log(m) => {
            let (job_id, attempt) = parts(m.job)?;
            let line = NewLogLine {
                job_id: &job_id,
                attempt,
                worker_id: &session.id,
                stage: stage(m.stage),
                level: LogLevel::try_from(m.level).unwrap_or(LogLevel::Info),
                message: &bounded(m.message, MAX_LOG_LINE),
            };
            let kept = store
                .append_worker_log(line, now)
                .await
                .map_err(|e| internal("append the log line", &e))?;
            if !kept {
                debug!(%job_id, attempt, "log line for an ended or earlier attempt refused");
            }
        }
        connect_request::Msg::CancelAck(m) => {
            let (job_id, attempt) = parts(m.job)?;
            let event = JobEvent::CancelAcknowledged {
                attempt,
                stage: stage(m.stage),
                past_point_of_no_return: m.past_point_of_no_return,
            };
            dispatcher.apply_reported(session, &job_id, &event).await;
        }
        connect_request::Msg::Finished(m) => finished(dispatcher, session, vec![m]).await?,
        connect_request::Msg::Draining(_) => {
            info!(worker_id = %session.id, "worker draining: no more assignments");
            session.draining.store(true, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Applies outcomes (idempotently: a duplicate or stale one is refused by the state machine)
/// in one transaction, acknowledges each, and frees their slots. A malformed or unrecorded
/// outcome does not hold back the others: they are applied and acknowledged first, then the
/// stream ends with the first error (the worker re-sends what was not acknowledged).
async fn finished(
    dispatcher: &Arc<Dispatcher>,
    session: &Arc<WorkerSession>,
    messages: Vec<JobFinished>,
) -> Result<(), Status> {
    let mut first_error = None;
    let mut events = Vec::with_capacity(messages.len());
    let policy = dispatcher.timing().on_worker_lost;
    for m in messages {
        match outcome_event(m, policy) {
            Ok(event) => events.push(event),
            Err(status) => {
                first_error.get_or_insert(status);
            }
        }
    }
    let results = dispatcher
        .store()
        .apply_batch(&events, Origin::Worker(&session.id), now_ms())
        .await
        .map_err(|e| {
            // Not acknowledged: the worker re-sends them after reconnecting.
            internal("record the outcomes", &e)
        })?;
    for ((job_id, event), result) in events.into_iter().zip(results) {
        let (JobEvent::Finished { attempt, .. } | JobEvent::Fenced { attempt, .. }) = event else {
            continue;
        };
        match result {
            Ok(applied) => match &applied.decision {
                Err(refusal @ Refusal::NotAssigned { .. }) => {
                    warn!(%job_id, attempt, %refusal, "outcome from a worker the job is not assigned to refused; acknowledging so the worker drops it");
                }
                Err(refusal) => {
                    debug!(%job_id, attempt, %refusal, "outcome refused (stale or duplicate)");
                }
                Ok(_) => {}
            },
            Err(crate::store::StoreError::NotFound(_)) => {
                warn!(%job_id, "outcome for an unknown job; acknowledging so the worker drops it");
            }
            Err(e) => {
                // Not acknowledged: the worker re-sends it after reconnecting.
                error!(%job_id, error = %e, "could not record the outcome");
                first_error.get_or_insert_with(|| internal("record the outcome", &e));
                continue;
            }
        }
        if let Ok(mut assigned) = session.assigned.lock() {
            assigned.remove(&(job_id.clone(), attempt));
        }
        session.send(Msg::OutcomeAck(OutcomeAck {
            job: Some(JobAttempt { job_id, attempt }),
        }));
    }
    dispatcher.wake();
    match first_error {
        Some(status) => Err(status),
        None => Ok(()),
    }
}

/// The state-machine event of a worker's `JobFinished`: a stop the worker made on its own
/// after losing contact (fencing) is judged by the worker-loss `policy`.
fn outcome_event(m: JobFinished, policy: WorkerLostPolicy) -> Result<(String, JobEvent), Status> {
    let (job_id, attempt) = parts(m.job)?;
    let outcome = match m.result {
        Some(job_finished::Result::Cancelled(c)) if c.fenced => {
            let event = JobEvent::Fenced {
                attempt,
                stage: stage(c.stage),
                stop_duration_us: c.stop_duration_us,
                forced: c.forced,
                reason: bounded(c.reason, MAX_REASON),
                policy,
            };
            return Ok((job_id, event));
        }
        Some(job_finished::Result::Succeeded(s)) => Outcome::Succeeded {
            output: bounded(s.output, MAX_OUTPUT),
        },
        Some(job_finished::Result::Failed(f)) => Outcome::Failed {
            stage: stage(f.stage),
            error: bounded(f.error, MAX_ERROR),
        },
        Some(job_finished::Result::Cancelled(c)) => Outcome::Cancelled {
            stage: stage(c.stage),
            stop_duration_us: c.stop_duration_us,
            forced: c.forced,
            reason: bounded(c.reason, MAX_REASON),
        },
        None => {
            return Err(Status::invalid_argument(
                "JobFinished.result is missing: send succeeded, failed or cancelled",
            ));
        }
    };
    Ok((job_id, JobEvent::Finished { attempt, outcome }))
}

fn parts(job: Option<JobAttempt>) -> Result<(String, u32), Status> {
    let job = job.ok_or_else(|| {
        Status::invalid_argument("message without its job attempt: set job { job_id, attempt }")
    })?;
    check_job_id(&job.job_id)?;
    Ok((job.job_id, job.attempt))
}

fn check_job_id(id: &str) -> Result<(), Status> {
    if id.is_empty() || id.len() > MAX_JOB_ID {
        return Err(Status::invalid_argument(format!(
            "job id {} is not one the control plane assigned: send the job_id of the AssignJob",
            crate::echo::shown(id)
        )));
    }
    Ok(())
}

/// `text`, cut to at most `max` bytes (on a character boundary) with a note of how long it
/// was: what a worker sends is stored, so it is bounded, and a cut is never silent.
fn bounded(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [cut: {} bytes in all, at most {max} are kept]",
        &text[..end],
        text.len()
    )
}

/// tonic's refusal of a message the worker sent (undecodable, too large), as the worker's
/// mistake; any other status as it is.
fn caller_error(status: Status) -> Status {
    crate::grpc::wire::caller_error("/presswork.v1.WorkerService/Connect", &status)
        .unwrap_or(status)
}

fn stage(value: i32) -> Stage {
    Stage::try_from(value).unwrap_or(Stage::Unspecified)
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn internal(what: &str, e: &crate::store::StoreError) -> Status {
    error!(error = %e, "could not {what}");
    Status::internal(format!(
        "the control plane could not {what}; it is logged on the server. Reconnect and try again."
    ))
}
