//! The job state machine: pure types and transitions, no I/O.
//!
//! [`apply`] takes a job as it is in the store and an event, and decides the job's next state,
//! the execution-log entries that go with it, and what the caller must do next. The store
//! writes the result with a compare-and-set on the job's version, in one transaction with the
//! log entries, so this module is the single place where the rules of DESIGN.md live.

use std::collections::BTreeMap;

use presswork_proto::v1::{CancelOutcome, CancelResolution, JobStatus, LogLevel, Stage};

/// A job as the store holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    /// Insertion order; used for paging and claiming the oldest queued job first.
    pub num: i64,
    pub id: String,
    pub report: String,
    pub params: BTreeMap<String, String>,
    pub status: JobStatus,
    pub stage: Stage,
    pub progress: f64,
    pub attempt: u32,
    pub worker_id: String,
    pub version: i64,
    pub submitted_by: String,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub error: String,
    pub output: String,
    pub cancel: Option<CancelRecord>,
}

/// Who asked for a cancel, and its milestones. Times are Unix epoch milliseconds, 0 = not yet.
#[derive(Clone, Debug, PartialEq)]
pub struct CancelRecord {
    pub requested_by: String,
    pub reason: String,
    pub requested_at: i64,
    pub deadline: i64,
    pub delivered_at: i64,
    pub acknowledged_at: i64,
    pub stopped_at: i64,
    pub stopped_stage: Stage,
    pub stop_duration_us: u64,
    pub resolution: CancelResolution,
    pub past_point_of_no_return: bool,
}

/// How an attempt ended, as its worker reported it.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded {
        output: String,
    },
    Failed {
        stage: Stage,
        error: String,
    },
    /// The job's code stopped because its token fired (or it was aborted: `forced`).
    Cancelled {
        stage: Stage,
        stop_duration_us: u64,
        forced: bool,
        reason: String,
    },
}

/// Everything that can happen to a job.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    /// The dispatcher hands the queued job to a worker.
    Claim {
        worker_id: String,
    },
    /// A user asks to cancel. `deadline` is when an unconfirmed cancel times out.
    Cancel {
        actor: String,
        reason: String,
        deadline: i64,
    },
    /// The cancel command was handed to the worker's stream (`redelivery`: again, after the
    /// worker reconnected).
    CancelDelivered {
        attempt: u32,
        worker_id: String,
        redelivery: bool,
    },
    /// The worker fired the job's token.
    CancelAcknowledged {
        attempt: u32,
        stage: Stage,
        past_point_of_no_return: bool,
    },
    StageStarted {
        attempt: u32,
        stage: Stage,
    },
    Progress {
        attempt: u32,
        stage: Stage,
        fraction: f64,
    },
    Finished {
        attempt: u32,
        outcome: Outcome,
    },
    /// The cancel deadline passed without the worker confirming the stop.
    CancelTimedOut,
    /// The worker stopped this attempt on its own after a lease without contact with the
    /// control plane (fencing), and says so once it is back. Not the job's fault: a running
    /// job is treated as its worker lost (`policy`); a cancelling one counts as cancelled,
    /// since it did stop.
    Fenced {
        attempt: u32,
        stage: Stage,
        stop_duration_us: u64,
        forced: bool,
        reason: String,
        policy: WorkerLostPolicy,
    },
    /// The worker running this attempt is gone (lease expired, or it lost the job). `policy`
    /// says what becomes of a running job: failed, or queued again while attempts remain.
    WorkerLost {
        attempt: u32,
        detail: String,
        policy: WorkerLostPolicy,
    },
}

/// What becomes of a `RUNNING` job whose worker is lost (`--on-worker-lost`). A `CANCELLING`
/// job always fails: someone asked for it to stop, so it never runs again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerLostPolicy {
    /// The job fails with "worker lost: …".
    Fail,
    /// The job goes back to `QUEUED` while its attempt is below `max_attempts` (the next claim
    /// starts the next attempt), and fails like [`WorkerLostPolicy::Fail`] after the last one.
    Requeue { max_attempts: u32 },
}

/// A log entry to append with a transition.
#[derive(Clone, Debug, PartialEq)]
pub struct LogDraft {
    pub level: LogLevel,
    pub event: &'static str,
    pub actor: String,
    pub stage: Stage,
    pub message: String,
}

/// What [`apply`] decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The job's next state (version not yet bumped), or `None` when nothing changes.
    pub next: Option<JobRecord>,
    pub log: Vec<LogDraft>,
    /// For [`JobEvent::Cancel`]: what the caller is told.
    pub cancel_outcome: Option<CancelOutcome>,
    /// The job's worker must be told to stop it by force.
    pub force_stop: bool,
    /// The job's worker must be sent the cancel command.
    pub send_cancel: bool,
}

/// Why an event was refused. The job is left as it was.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// BR-002: only queued and running jobs can be cancelled.
    #[error("Job is not in a cancellable state.")]
    NotCancellable { status: JobStatus },
    /// A message about an attempt that is not the job's current one (late or duplicate).
    #[error("attempt {got} is not the job's current attempt {current}")]
    StaleAttempt { current: u32, got: u32 },
    /// Terminal states are final.
    #[error("the job is already {} and can no longer change", .status.short_name())]
    Terminal { status: JobStatus },
    /// The event does not apply to the job's current state (e.g. a claim of a running job).
    #[error("event does not apply to a {} job", .status.short_name())]
    NotApplicable { status: JobStatus },
    /// A worker reported on a job that is not assigned to it (a forged or misrouted message).
    #[error("worker {sender} reported on a job assigned to {}", if .assigned.is_empty() { "no worker" } else { .assigned.as_str() })]
    NotAssigned { sender: String, assigned: String },
}

/// The status an event moves a job to, or why it cannot. The whole transition table of
/// DESIGN.md is here; [`apply`] adds the fields and log entries.
pub fn transition(from: JobStatus, event: &JobEvent) -> Result<JobStatus, Refusal> {
    use JobStatus::*;
    if from.is_terminal() {
        return Err(match event {
            JobEvent::Cancel { .. } => Refusal::NotCancellable { status: from },
            _ => Refusal::Terminal { status: from },
        });
    }
    let to = match (from, event) {
        (Queued, JobEvent::Claim { .. }) => Running,
        (Queued, JobEvent::Cancel { .. }) => Cancelled,
        (Running, JobEvent::Cancel { .. }) => Cancelling,
        (Cancelling, JobEvent::Cancel { .. }) => Cancelling,
        (Running | Cancelling, JobEvent::StageStarted { .. } | JobEvent::Progress { .. }) => from,
        (Cancelling, JobEvent::CancelDelivered { .. } | JobEvent::CancelAcknowledged { .. }) => {
            from
        }
        (Running, JobEvent::Finished { outcome, .. }) => match outcome {
            Outcome::Succeeded { .. } => Succeeded,
            // Stopped without a user's cancel (worker shutdown, lease lost): a failure.
            Outcome::Failed { .. } | Outcome::Cancelled { .. } => Failed,
        },
        (Cancelling, JobEvent::Finished { outcome, .. }) => match outcome {
            Outcome::Succeeded { .. } => Succeeded,
            Outcome::Failed { .. } => Failed,
            Outcome::Cancelled { .. } => Cancelled,
        },
        (Cancelling, JobEvent::CancelTimedOut) => Failed,
        (
            Running,
            JobEvent::WorkerLost {
                attempt,
                policy: WorkerLostPolicy::Requeue { max_attempts },
                ..
            },
        ) if attempt < max_attempts => Queued,
        (Running | Cancelling, JobEvent::WorkerLost { .. }) => Failed,
        (
            Running,
            JobEvent::Fenced {
                attempt,
                policy: WorkerLostPolicy::Requeue { max_attempts },
                ..
            },
        ) if attempt < max_attempts => Queued,
        (Running, JobEvent::Fenced { .. }) => Failed,
        (Cancelling, JobEvent::Fenced { .. }) => Cancelled,
        _ => return Err(Refusal::NotApplicable { status: from }),
    };
    Ok(to)
}

/// Who sent an event: the control plane itself (users' requests, timers, sweepers), or the
/// worker whose stream carried it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin<'a> {
    ControlPlane,
    Worker(&'a str),
}

/// Decides what `event`, sent by the control plane itself, does to `job` at time `now` (Unix
/// ms).
pub fn apply(job: &JobRecord, event: &JobEvent, now: i64) -> Result<Decision, Refusal> {
    apply_from(job, Origin::ControlPlane, event, now)
}

/// Decides what `event`, sent by `origin`, does to `job` at time `now` (Unix ms). A worker may
/// only report on the attempt it holds: an event from any other worker is refused before
/// anything else is looked at.
pub fn apply_from(
    job: &JobRecord,
    origin: Origin<'_>,
    event: &JobEvent,
    now: i64,
) -> Result<Decision, Refusal> {
    if let Origin::Worker(sender) = origin
        && sender != job.worker_id
    {
        return Err(Refusal::NotAssigned {
            sender: sender.to_string(),
            assigned: job.worker_id.clone(),
        });
    }
    if let Some(attempt) = event_attempt(event)
        && attempt != job.attempt
    {
        // Checked first: a late message from an earlier attempt is stale even if the job has
        // since become terminal.
        return Err(Refusal::StaleAttempt {
            current: job.attempt,
            got: attempt,
        });
    }
    let to = transition(job.status, event)?;
    let mut next = job.clone();
    next.status = to;
    let mut decision = Decision {
        next: None,
        log: Vec::new(),
        cancel_outcome: None,
        force_stop: false,
        send_cancel: false,
    };
    let worker_actor = format!("worker:{}", job.worker_id);
    match event {
        JobEvent::Claim { worker_id } => {
            next.attempt += 1;
            next.worker_id.clone_from(worker_id);
            next.started_at = now;
            next.stage = Stage::Unspecified;
            next.progress = 0.0;
            decision.log.push(info(
                "job.started",
                "system",
                Stage::Unspecified,
                format!("assigned to worker {worker_id} (attempt {})", next.attempt),
            ));
        }
        JobEvent::Cancel {
            actor,
            reason,
            deadline,
        } => {
            let requested = format!(
                "manual cancellation requested by {actor}{}",
                reason_suffix(reason)
            );
            match job.status {
                JobStatus::Queued => {
                    next.finished_at = now;
                    next.cancel = Some(CancelRecord {
                        stopped_at: now,
                        resolution: CancelResolution::CancelledWhileQueued,
                        ..CancelRecord::requested(actor, reason, now, 0)
                    });
                    decision.log.push(info(
                        "cancel.requested",
                        actor,
                        Stage::Unspecified,
                        requested,
                    ));
                    decision.log.push(info(
                        "job.cancelled",
                        actor,
                        Stage::Unspecified,
                        format!("cancelled while queued by {actor}; the job never ran"),
                    ));
                    decision.cancel_outcome = Some(CancelOutcome::CancelledWhileQueued);
                }
                JobStatus::Running => {
                    next.cancel = Some(CancelRecord::requested(actor, reason, now, *deadline));
                    decision
                        .log
                        .push(info("cancel.requested", actor, job.stage, requested));
                    decision.cancel_outcome = Some(CancelOutcome::Cancelling);
                    decision.send_cancel = true;
                }
                _ => {
                    // Already cancelling: idempotent, nothing changes.
                    decision.cancel_outcome = Some(CancelOutcome::AlreadyCancelling);
                    return Ok(decision);
                }
            }
        }
        JobEvent::CancelDelivered {
            worker_id,
            redelivery,
            ..
        } => {
            let cancel = next.cancel.get_or_insert_with(CancelRecord::unknown);
            let message = match (cancel.delivered_at == 0, *redelivery) {
                (true, false) => format!("cancel delivered to worker {worker_id}"),
                (_, true) => {
                    format!("cancel delivered again to worker {worker_id} after it reconnected")
                }
                // The worker's acknowledgement was recorded first and filled this in.
                (false, false) => return Ok(decision),
            };
            if cancel.delivered_at == 0 {
                cancel.delivered_at = now;
            }
            decision
                .log
                .push(info("cancel.delivered", "system", job.stage, message));
        }
        JobEvent::CancelAcknowledged {
            stage,
            past_point_of_no_return,
            ..
        } => {
            let cancel = next.cancel.get_or_insert_with(CancelRecord::unknown);
            if cancel.acknowledged_at != 0 {
                return Ok(decision); // a duplicate acknowledgement changes nothing
            }
            fill_delivery(cancel, &mut decision, job, now);
            cancel.acknowledged_at = now;
            cancel.past_point_of_no_return = *past_point_of_no_return;
            let message = if *past_point_of_no_return {
                format!(
                    "worker received the cancel, but the job is past its point of no return in {} and will finish",
                    stage.short_name()
                )
            } else {
                format!(
                    "worker received the cancel and is stopping the {} stage",
                    stage_name(*stage)
                )
            };
            decision
                .log
                .push(info("cancel.acknowledged", &worker_actor, *stage, message));
        }
        JobEvent::StageStarted { stage, .. } => {
            next.stage = *stage;
            next.progress = 0.0;
            decision.log.push(info(
                "stage.started",
                &worker_actor,
                *stage,
                format!("{} stage started", stage.short_name()),
            ));
        }
        JobEvent::Progress {
            stage, fraction, ..
        } => {
            next.stage = *stage;
            next.progress = fraction.clamp(0.0, 1.0);
        }
        JobEvent::Finished { outcome, .. } => {
            next.finished_at = now;
            finish(&mut next, &mut decision, job, outcome, &worker_actor, now);
        }
        JobEvent::CancelTimedOut => {
            let Some(cancel) = next.cancel.as_mut() else {
                return Err(Refusal::NotApplicable { status: job.status });
            };
            if cancel.deadline > now {
                return Err(Refusal::NotApplicable { status: job.status });
            }
            let waited_ms = now - cancel.requested_at;
            cancel.resolution = CancelResolution::TimedOut;
            next.finished_at = now;
            next.error = "manual cancellation attempt timed out".to_string();
            decision.force_stop = true;
            decision.log.push(LogDraft {
                level: LogLevel::Error,
                event: "cancel.timed_out",
                actor: "system".into(),
                stage: job.stage,
                message: format!(
                    "manual cancellation attempt timed out: the job did not stop within {} ms; it is failed and its worker was told to force-stop it",
                    waited_ms
                ),
            });
            decision.log.push(failed_entry(job.stage, &next.error));
        }
        JobEvent::Fenced {
            attempt,
            stage,
            stop_duration_us,
            forced,
            reason,
            policy,
        } => {
            if to == JobStatus::Queued {
                let detail = format!("worker {} stopped the job itself ({reason})", job.worker_id);
                requeue(&mut next, &mut decision, job, &detail, *attempt, *policy);
            } else {
                // Failed or cancelled exactly as the plain outcome would have it.
                next.finished_at = now;
                let outcome = Outcome::Cancelled {
                    stage: *stage,
                    stop_duration_us: *stop_duration_us,
                    forced: *forced,
                    reason: reason.clone(),
                };
                finish(&mut next, &mut decision, job, &outcome, &worker_actor, now);
            }
        }
        JobEvent::WorkerLost {
            detail,
            policy,
            attempt,
        } => {
            if to == JobStatus::Queued {
                requeue(&mut next, &mut decision, job, detail, *attempt, *policy);
            } else {
                next.finished_at = now;
                next.error = match policy {
                    WorkerLostPolicy::Requeue { max_attempts }
                        if job.status == JobStatus::Running =>
                    {
                        format!(
                            "worker lost: {detail} (attempt {attempt} of {max_attempts}: no attempts left)"
                        )
                    }
                    _ => format!("worker lost: {detail}"),
                };
                if let Some(cancel) = next.cancel.as_mut() {
                    cancel.resolution = CancelResolution::WorkerLost;
                }
                decision.log.push(failed_entry(job.stage, &next.error));
            }
        }
    }
    decision.next = Some(next);
    Ok(decision)
}

/// Puts a running job whose worker is lost back in the queue, as if never claimed. The attempt
/// number stays until the next claim bumps it, so anything the lost attempt still sends is
/// refused: by the status now, by the attempt once it runs again.
fn requeue(
    next: &mut JobRecord,
    decision: &mut Decision,
    job: &JobRecord,
    detail: &str,
    attempt: u32,
    policy: WorkerLostPolicy,
) {
    next.worker_id.clear();
    next.stage = Stage::Unspecified;
    next.progress = 0.0;
    next.started_at = 0;
    let max = match policy {
        WorkerLostPolicy::Requeue { max_attempts } => max_attempts,
        WorkerLostPolicy::Fail => attempt,
    };
    decision.log.push(LogDraft {
        level: LogLevel::Warn,
        event: "job.requeued",
        actor: "system".into(),
        stage: job.stage,
        message: format!("worker lost: {detail}; requeued after attempt {attempt} of {max}"),
    });
}

fn finish(
    next: &mut JobRecord,
    decision: &mut Decision,
    job: &JobRecord,
    outcome: &Outcome,
    worker_actor: &str,
    now: i64,
) {
    let cancelling = job.status == JobStatus::Cancelling;
    if cancelling && !matches!(outcome, Outcome::Cancelled { .. }) {
        let cancel = next.cancel.get_or_insert_with(CancelRecord::unknown);
        cancel.resolution = CancelResolution::FinishedFirst;
        decision.log.push(LogDraft {
            level: LogLevel::Warn,
            event: "cancel.ignored",
            actor: "system".into(),
            stage: job.stage,
            message: format!(
                "cancel ignored: the job finished before the cancel took effect; its real status {} is kept",
                next.status.short_name()
            ),
        });
    }
    match outcome {
        Outcome::Succeeded { output } => {
            next.output.clone_from(output);
            next.progress = 1.0;
            decision.log.push(info(
                "job.succeeded",
                worker_actor,
                job.stage,
                format!("report delivered to {output}"),
            ));
        }
        Outcome::Failed { stage, error } => {
            next.error.clone_from(error);
            decision.log.push(failed_entry(*stage, error));
        }
        Outcome::Cancelled {
            stage,
            stop_duration_us,
            forced,
            reason,
        } if cancelling => {
            let cancel = next.cancel.get_or_insert_with(CancelRecord::unknown);
            fill_delivery(cancel, decision, job, now);
            // The worker stopped the job for the cancel, so it received it: its separate
            // acknowledgement can be lost with a connection that broke meanwhile (it is not
            // re-sent; the outcome is), and is then recorded from the outcome.
            if cancel.acknowledged_at == 0 {
                cancel.acknowledged_at = now;
                decision.log.push(info(
                    "cancel.acknowledged",
                    worker_actor,
                    *stage,
                    format!(
                        "worker received the cancel and stopped the {} stage (recorded from its outcome: the acknowledgement itself did not arrive)",
                        stage_name(*stage)
                    ),
                ));
            }
            cancel.stopped_at = now;
            cancel.stopped_stage = *stage;
            cancel.stop_duration_us = *stop_duration_us;
            cancel.resolution = CancelResolution::Stopped;
            let how = if *forced { "force-stopped" } else { "stopped" };
            decision.log.push(info(
                "cancel.stopped",
                worker_actor,
                *stage,
                format!(
                    "job {how} in the {} stage {:.3} ms after the cancel reached it",
                    stage_name(*stage),
                    *stop_duration_us as f64 / 1000.0
                ),
            ));
            let by = next.cancel.as_ref().map_or("", |c| c.requested_by.as_str());
            decision.log.push(info(
                "job.cancelled",
                by,
                *stage,
                format!("manually cancelled by {by}{}", reason_suffix(reason)),
            ));
        }
        Outcome::Cancelled { stage, reason, .. } => {
            // The worker stopped a job nobody asked to cancel (shutdown, lease lost).
            next.error = format!("stopped by the worker: {reason}");
            decision.log.push(failed_entry(*stage, &next.error));
        }
    }
}

/// A worker answered a cancel whose delivery was not recorded yet (the record is written after
/// the send, and can lose the race to the answer): the delivery happened no later than now.
fn fill_delivery(cancel: &mut CancelRecord, decision: &mut Decision, job: &JobRecord, now: i64) {
    if cancel.delivered_at == 0 {
        cancel.delivered_at = now;
        decision.log.push(info(
            "cancel.delivered",
            "system",
            job.stage,
            format!("cancel delivered to worker {}", job.worker_id),
        ));
    }
}

fn event_attempt(event: &JobEvent) -> Option<u32> {
    match event {
        JobEvent::CancelDelivered { attempt, .. }
        | JobEvent::CancelAcknowledged { attempt, .. }
        | JobEvent::StageStarted { attempt, .. }
        | JobEvent::Progress { attempt, .. }
        | JobEvent::Finished { attempt, .. }
        | JobEvent::Fenced { attempt, .. }
        | JobEvent::WorkerLost { attempt, .. } => Some(*attempt),
        JobEvent::Claim { .. } | JobEvent::Cancel { .. } | JobEvent::CancelTimedOut => None,
    }
}

impl CancelRecord {
    fn requested(actor: &str, reason: &str, now: i64, deadline: i64) -> Self {
        CancelRecord {
            requested_by: actor.to_string(),
            reason: reason.to_string(),
            requested_at: now,
            deadline,
            delivered_at: 0,
            acknowledged_at: 0,
            stopped_at: 0,
            stopped_stage: Stage::Unspecified,
            stop_duration_us: 0,
            resolution: CancelResolution::Pending,
            past_point_of_no_return: false,
        }
    }

    /// Only reached if a cancel milestone arrives for a job whose cancel record is missing,
    /// which the transition table rules out; kept total rather than panicking.
    fn unknown() -> Self {
        CancelRecord::requested("", "", 0, 0)
    }
}

fn info(event: &'static str, actor: &str, stage: Stage, message: String) -> LogDraft {
    LogDraft {
        level: LogLevel::Info,
        event,
        actor: actor.to_string(),
        stage,
        message,
    }
}

fn failed_entry(stage: Stage, error: &str) -> LogDraft {
    LogDraft {
        level: LogLevel::Error,
        event: "job.failed",
        actor: "system".into(),
        stage,
        message: format!("job failed: {error}"),
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" (reason: {reason})")
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Unspecified => "not-yet-started",
        other => other.short_name(),
    }
}

#[cfg(test)]
mod tests;
