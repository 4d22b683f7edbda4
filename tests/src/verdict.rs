//! Judging what a cancel did: the `CancelJob` answer, the job's final state and its execution
//! log must tell one consistent story (AC-005, AC-006, DESIGN "Job states").

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use presswork_proto::v1::{
    CancelJobResponse, CancelOutcome, CancelResolution, Job, JobStatus, LogEntry,
};

use crate::execution_log::{ExecutionLog, describe_job, resolution};

/// The message of BR-002. The control plane may follow it with details (the job's status).
pub const NOT_CANCELLABLE: &str = "Job is not in a cancellable state.";

/// Whether a refused cancel says what BR-002 says.
pub fn says_not_cancellable(message: &str) -> bool {
    message.starts_with(NOT_CANCELLABLE)
}

/// One cancel and what came of it.
pub struct CancelObservation {
    pub job_id: String,
    pub response: Result<CancelJobResponse, tonic::Status>,
    /// How long the `CancelJob` call took, as the client saw it.
    pub cancel_latency: Duration,
    /// The job once terminal.
    pub job: Job,
    pub log: Vec<LogEntry>,
}

/// The consistent stories a cancel can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// CANCELLED_WHILE_QUEUED: the job never started.
    CancelledWhileQueued,
    /// CANCELLING, then the worker stopped the job: CANCELLED with `cancel.stopped`.
    StoppedWhileRunning,
    /// CANCELLING, but the job finished first: its own status, with `cancel.ignored`.
    FinishedWhileCancelling,
    /// ALREADY_FINISHED: the job finished while the cancel was processed.
    AlreadyFinished,
    /// FAILED_PRECONDITION: the job was terminal when the cancel arrived.
    RejectedAsTerminal,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Checks that the answer, the state and the log agree, and says which story they tell.
pub fn judge(observation: &CancelObservation) -> Result<Verdict, String> {
    let CancelObservation {
        job_id,
        response,
        job,
        log,
        ..
    } = observation;
    let log = log.as_slice();
    let status = job.status();
    check(job.id == *job_id, || {
        format!("GetJob answered job {}", job.id)
    })?;
    check(status.is_terminal(), || {
        "the job is not terminal".to_owned()
    })?;
    check(log.iter().all(|e| e.job_id == *job_id), || {
        "the log holds another job's entries".to_owned()
    })?;
    check(log.windows(2).all(|w| w[0].id < w[1].id), || {
        "log entry ids do not increase".to_owned()
    })?;
    let terminal = log.terminal_entries();
    check(terminal.len() == 1, || {
        format!("{} terminal entries in the log", terminal.len())
    })?;
    let terminal_event = terminal[0].event.as_str();
    check(terminal_event == terminal_event_of(status), || {
        format!(
            "status {} but the log ends with {terminal_event}",
            status.short_name()
        )
    })?;
    let terminal_id = terminal[0].id;
    check(
        !log.iter().any(|e| {
            e.id > terminal_id && matches!(e.event.as_str(), "job.started" | "stage.started")
        }),
        || "the job started something after it ended".to_owned(),
    )?;
    let started = log.has("job.started");
    check(started || job.attempt == 0, || {
        format!("attempt {} but no job.started in the log", job.attempt)
    })?;
    check(started || !log.has("stage.started"), || {
        "stage.started without job.started".to_owned()
    })?;

    match response {
        Ok(answer) => {
            let answered = answer.job.as_ref().ok_or("CancelJob answered no job")?;
            check(answered.id == *job_id, || {
                format!("CancelJob answered job {}", answered.id)
            })?;
            judge_answer(answer.outcome(), answered.status(), job, log, started)
        }
        Err(status_error) => {
            check(
                status_error.code() == tonic::Code::FailedPrecondition,
                || format!("CancelJob failed: {status_error:?}"),
            )?;
            check(says_not_cancellable(status_error.message()), || {
                format!(
                    "FAILED_PRECONDITION with message {:?}",
                    status_error.message()
                )
            })?;
            check(status != JobStatus::Cancelled, || {
                "the cancel was refused yet the job is CANCELLED".to_owned()
            })?;
            check(job.cancel.is_none(), || {
                "the cancel was refused yet the job records a cancel".to_owned()
            })?;
            check(!log.iter().any(|e| e.event.starts_with("cancel.")), || {
                "the cancel was refused yet the log has cancel entries".to_owned()
            })?;
            Ok(Verdict::RejectedAsTerminal)
        }
    }
}

fn judge_answer(
    outcome: CancelOutcome,
    answered: JobStatus,
    job: &Job,
    log: &[LogEntry],
    started: bool,
) -> Result<Verdict, String> {
    let status = job.status();
    // The job ran (or ended) before this cancel took effect: only ALREADY_FINISHED may leave
    // no cancel.requested entry, since nothing was requested of the worker.
    check(
        outcome == CancelOutcome::AlreadyFinished || log.has("cancel.requested"),
        || format!("{outcome:?} but no cancel.requested entry"),
    )?;
    match outcome {
        CancelOutcome::CancelledWhileQueued => {
            check(answered == JobStatus::Cancelled, || {
                format!(
                    "CANCELLED_WHILE_QUEUED answered status {}",
                    answered.short_name()
                )
            })?;
            check(status == JobStatus::Cancelled, || {
                "CANCELLED_WHILE_QUEUED but the job is not CANCELLED".to_owned()
            })?;
            check(!started && job.attempt == 0, || {
                "CANCELLED_WHILE_QUEUED but the job started".to_owned()
            })?;
            check(
                resolution(job) == CancelResolution::CancelledWhileQueued,
                || format!("resolution {:?}", resolution(job)),
            )?;
            Ok(Verdict::CancelledWhileQueued)
        }
        CancelOutcome::Cancelling => {
            check(answered == JobStatus::Cancelling, || {
                format!("CANCELLING answered status {}", answered.short_name())
            })?;
            check(started, || {
                "CANCELLING but the job never started".to_owned()
            })?;
            match status {
                JobStatus::Cancelled => {
                    check_stopped(job, log)?;
                    Ok(Verdict::StoppedWhileRunning)
                }
                _ => {
                    check_finished_first(job, log)?;
                    check_resolved_finished_first(job)?;
                    Ok(Verdict::FinishedWhileCancelling)
                }
            }
        }
        CancelOutcome::AlreadyFinished => {
            check(
                answered.is_terminal() && answered != JobStatus::Cancelled,
                || format!("ALREADY_FINISHED answered status {}", answered.short_name()),
            )?;
            check(status == answered, || {
                format!(
                    "ALREADY_FINISHED answered {} but the job ended {}",
                    answered.short_name(),
                    status.short_name()
                )
            })?;
            check_finished_first(job, log)?;
            // The job was terminal before the cancel applied, and terminal jobs never change:
            // no cancel is recorded on it (the log's cancel.ignored tells the story).
            check(job.cancel.is_none(), || {
                format!(
                    "ALREADY_FINISHED yet the terminal job records a cancel: {:?}",
                    resolution(job)
                )
            })?;
            Ok(Verdict::AlreadyFinished)
        }
        CancelOutcome::AlreadyCancelling | CancelOutcome::Unspecified => {
            Err(format!("a single cancel was answered {outcome:?}"))
        }
    }
}

/// Reasons about the cancel's milestones (DESIGN: requested, delivered, acknowledged, stopped,
/// each in the log and on the job) start with this, to tell them from wrong outcomes.
pub const MILESTONE: &str = "milestone: ";

/// CANCELLED by the worker: `cancel.stopped`, and the milestones in order.
pub fn check_stopped(job: &Job, log: &[LogEntry]) -> Result<(), String> {
    check(resolution(job) == CancelResolution::Stopped, || {
        format!("CANCELLED with resolution {:?}", resolution(job))
    })?;
    check(log.count("cancel.stopped") == 1, || {
        format!("{} cancel.stopped entries", log.count("cancel.stopped"))
    })?;
    check(!log.has("cancel.ignored"), || {
        "CANCELLED yet cancel.ignored".to_owned()
    })?;
    let milestones = [
        "cancel.requested",
        "cancel.delivered",
        "cancel.acknowledged",
        "cancel.stopped",
    ];
    let mut previous_id = 0;
    for event in milestones {
        let entry = log
            .entry(event)
            .ok_or_else(|| format!("{MILESTONE}CANCELLED without a {event} entry"))?;
        check(entry.id > previous_id, || {
            format!("{MILESTONE}{event} is out of order in the log")
        })?;
        previous_id = entry.id;
    }
    let cancel = job
        .cancel
        .as_ref()
        .ok_or("CANCELLED without cancel state")?;
    let times = [
        ("requested", cancel.requested_at_unix_ms),
        ("delivered", cancel.delivered_at_unix_ms),
        ("acknowledged", cancel.acknowledged_at_unix_ms),
        ("stopped", cancel.stopped_at_unix_ms),
    ];
    for pair in times.windows(2) {
        let ((a, at), (b, bt)) = (pair[0], pair[1]);
        check(at > 0 && bt >= at, || {
            format!("{MILESTONE}times out of order on the job: {a}={at} {b}={bt}")
        })?;
    }
    Ok(())
}

/// The job finished before the cancel took effect: its real status is kept, the cancel is
/// logged as ignored, and nothing says it stopped.
fn check_finished_first(job: &Job, log: &[LogEntry]) -> Result<(), String> {
    let status = job.status();
    check(
        matches!(status, JobStatus::Succeeded | JobStatus::Failed),
        || format!("finished first but status {}", status.short_name()),
    )?;
    check(log.has("cancel.ignored"), || {
        format!(
            "{} after the cancel without cancel.ignored",
            status.short_name()
        )
    })?;
    check(!log.has("cancel.stopped"), || {
        format!("{} yet cancel.stopped", status.short_name())
    })?;
    Ok(())
}

/// A cancel recorded on the job (it was CANCELLING) that the job's end overtook.
fn check_resolved_finished_first(job: &Job) -> Result<(), String> {
    check(resolution(job) == CancelResolution::FinishedFirst, || {
        format!(
            "CANCELLING, then finished first with resolution {:?}",
            resolution(job)
        )
    })
}

fn terminal_event_of(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Succeeded => "job.succeeded",
        JobStatus::Failed => "job.failed",
        JobStatus::Cancelled => "job.cancelled",
        JobStatus::Unspecified | JobStatus::Queued | JobStatus::Running | JobStatus::Cancelling => {
            "(none: not terminal)"
        }
    }
}

fn check(holds: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if holds { Ok(()) } else { Err(why()) }
}

/// Verdicts and inconsistencies over many cancels.
#[derive(Default)]
pub struct Tally {
    pub verdicts: BTreeMap<Verdict, usize>,
    pub final_statuses: BTreeMap<&'static str, usize>,
    /// One entry per inconsistent cancel: why, then the details.
    pub inconsistencies: Vec<String>,
    /// How many inconsistencies had each reason.
    pub reasons: BTreeMap<String, usize>,
    pub cancel_latencies: Vec<Duration>,
}

impl Tally {
    pub fn record(&mut self, observation: &CancelObservation) {
        self.cancel_latencies.push(observation.cancel_latency);
        *self
            .final_statuses
            .entry(observation.job.status().short_name())
            .or_default() += 1;
        match judge(observation) {
            Ok(verdict) => *self.verdicts.entry(verdict).or_default() += 1,
            Err(why) => {
                let answer = match &observation.response {
                    Ok(answer) => format!(
                        "{:?} ({})",
                        answer.outcome(),
                        answer
                            .job
                            .as_ref()
                            .map_or("no job".to_owned(), describe_job)
                    ),
                    Err(e) => format!("{e:?}"),
                };
                let detail = format!(
                    "job {}: {why}\n  cancel answer: {answer}\n  final: {}\n  log:\n{}",
                    observation.job_id,
                    describe_job(&observation.job),
                    observation.log.describe()
                );
                self.add_inconsistency(why, detail);
            }
        }
    }

    pub fn add_inconsistency(&mut self, reason: String, detail: String) {
        *self.reasons.entry(reason).or_default() += 1;
        self.inconsistencies.push(detail);
    }

    pub fn count(&self, verdict: Verdict) -> usize {
        self.verdicts.get(&verdict).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.verdicts.values().sum::<usize>() + self.inconsistencies.len()
    }

    /// One line of figures for the test output.
    pub fn summary(&self) -> String {
        let mut latencies = self.cancel_latencies.clone();
        latencies.sort();
        let at = |q: f64| {
            let index = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
            latencies.get(index).copied().unwrap_or_default()
        };
        let milestones: usize = self
            .reasons
            .iter()
            .filter(|(reason, _)| reason.starts_with(MILESTONE))
            .map(|(_, n)| n)
            .sum();
        format!(
            "{} cancels: verdicts {:?}, final statuses {:?}, {} inconsistent ({milestones} of them only in milestones); CancelJob latency p50 {:.1?} p99 {:.1?} max {:.1?}",
            self.total(),
            self.verdicts,
            self.final_statuses,
            self.inconsistencies.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        )
    }
}
