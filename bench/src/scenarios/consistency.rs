//! Races, judged by three witnesses that must agree: the `CancelJob` answer, the job's final
//! state and execution log, and what the job itself recorded (its timeline, outside the system
//! under test).
//! - *claim vs cancel*: a `short` job is cancelled right after it is submitted, while two
//!   workers with free slots race to claim it.
//! - *finish vs cancel*: a `short` job (20 ms) is cancelled 0–40 ms after its stage started,
//!   so the cancel straddles its end.
//!
//! Inconsistent: a cancelled-while-queued job that ran; CANCELLED while the job says it
//! finished (or the reverse); a terminal state shown before the job's code had stopped; a log
//! that tells another story; any change after a terminal state.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use presswork_proto::v1::{
    CancelJobResponse, CancelOutcome, CancelResolution, GetJobLogRequest, JobStatus, LogEntry,
};

use super::{Settings, WAIT, jitter};
use crate::clock::{between, now_ns};
use crate::cluster::{Cluster, ClusterSpec, Environment};
use crate::observer::{Observer, Seen, fill_slots, release};
use crate::report::{Report, Row, Target};
use crate::timeline::Timeline;

const WORKERS: usize = 2;
const CAPACITY: u32 = 4;
const WORK_MS: u64 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Race {
    ClaimVsCancel,
    FinishVsCancel,
}

/// One raced job, as the three witnesses saw it.
struct Observation {
    job_id: String,
    answer: Result<CancelJobResponse, tonic::Status>,
    round_trip: i64,
    seen: Seen,
    log: Vec<LogEntry>,
    timeline: Option<Timeline>,
    ran: bool,
}

pub async fn run(env: &Environment, settings: &Settings) -> anyhow::Result<Report> {
    let spec = ClusterSpec {
        workers: WORKERS,
        capacity: CAPACITY,
        cancel_timeout: None,
    };
    let cluster = Cluster::start(env, "consistency", &spec).await?;
    let result = measure(&cluster, settings).await;
    cluster.stop().await;
    result
}

async fn measure(cluster: &Cluster, settings: &Settings) -> anyhow::Result<Report> {
    let observer = Observer::start(cluster).await?;
    let slots = WORKERS * CAPACITY as usize;
    let blockers = fill_slots(cluster, &observer, WORKERS, slots).await?;
    release(cluster, &observer, &blockers).await?;

    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    let mut inconsistent = Vec::new();
    let mut round_trips = Vec::new();
    let mut margins = Vec::new();
    for (race, batch) in [
        (Race::ClaimVsCancel, 3 * slots),
        (Race::FinishVsCancel, slots),
    ] {
        let observations: Vec<anyhow::Result<Observation>> =
            futures::stream::iter(0..settings.races)
                .map(|i| race_once(cluster, &observer, race, i))
                .buffer_unordered(batch)
                .collect()
                .await;
        for observation in observations {
            let observation = observation?;
            round_trips.push(observation.round_trip);
            if let (Some(shown), Some(ended)) = (
                observation.seen.terminal_at(),
                observation.timeline.as_ref().and_then(Timeline::ended),
            ) {
                margins.push(between(ended, shown));
            }
            match judge(&observation) {
                Ok(verdict) => {
                    *verdicts.entry(format!("{race:?}: {verdict}")).or_default() += 1;
                }
                Err(why) => {
                    inconsistent.push(format!("{race:?}, job {}: {why}", observation.job_id))
                }
            }
        }
    }
    let after_terminal = observer.with(|s| s.after_terminal);

    let mut report = Report::new(
        "consistency",
        "",
        format!(
            "{} claim-vs-cancel races ({} at once) and {} finish-vs-cancel races ({slots} at once) of `short` ({WORK_MS} ms) jobs; {WORKERS} workers × {CAPACITY} slots.",
            settings.races,
            3 * slots,
            settings.races
        ),
    );
    report.push(Row::count(
        "inconsistent outcomes",
        inconsistent.len() + after_terminal,
        Some(Target::Zero),
    ));
    report.push(Row::latency(
        "terminal shown − job's code ended (≥ 0)",
        margins,
        None,
    ));
    report.push(Row::latency(
        "CancelJob round trip (during the races)",
        round_trips,
        None,
    ));
    report.note(format!(
        "outcomes: {}",
        verdicts
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if after_terminal > 0 {
        report.note(format!("{after_terminal} changes of jobs already terminal"));
    }
    for why in inconsistent.iter().take(5) {
        report.note(why.clone());
    }
    Ok(report)
}

async fn race_once(
    cluster: &Cluster,
    observer: &Observer,
    race: Race,
    iteration: usize,
) -> anyhow::Result<Observation> {
    let work = WORK_MS.to_string();
    let job = cluster.submit("short", &[("work_ms", &work)]).await?;
    match race {
        Race::ClaimVsCancel => match iteration % 3 {
            0 => {}
            1 => tokio::task::yield_now().await,
            _ => jitter(Duration::from_millis(3)).await,
        },
        Race::FinishVsCancel => {
            observer.stage_started(&job.id, WAIT).await?;
            jitter(Duration::from_millis(2 * WORK_MS)).await;
        }
    }
    let t0 = now_ns();
    let answer = cluster.cancel(&job.id).await;
    let round_trip = between(t0, now_ns());
    let seen = observer.terminal(&job.id, WAIT).await?;
    let log = cluster
        .client()
        .get_job_log(GetJobLogRequest {
            job_id: job.id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .entries;
    let timeline = Timeline::read(&cluster.output_dir, &job.id, seen.job.attempt.max(1));
    let ran = Timeline::exists(&cluster.output_dir, &job.id);
    Ok(Observation {
        job_id: job.id,
        answer,
        round_trip,
        seen,
        log,
        timeline,
        ran,
    })
}

/// The story the three witnesses agree on, or what contradicts.
fn judge(o: &Observation) -> Result<&'static str, String> {
    let job = &o.seen.job;
    let status = job.status();
    let resolution = job
        .cancel
        .as_ref()
        .and_then(|c| CancelResolution::try_from(c.resolution).ok());
    let has = |event: &str| o.log.iter().any(|e| e.event == event);
    let terminal: Vec<&LogEntry> = o
        .log
        .iter()
        .filter(|e| {
            matches!(
                e.event.as_str(),
                "job.succeeded" | "job.failed" | "job.cancelled"
            )
        })
        .collect();

    // The log.
    ensure(o.seen.after_terminal == 0, || {
        "changed after it was terminal".into()
    })?;
    ensure(terminal.len() == 1, || {
        format!("{} terminal log entries", terminal.len())
    })?;
    let expected_entry = match status {
        JobStatus::Succeeded => "job.succeeded",
        JobStatus::Failed => "job.failed",
        _ => "job.cancelled",
    };
    ensure(terminal[0].event == expected_entry, || {
        format!(
            "status {} but the log ends with {}",
            status.short_name(),
            terminal[0].event
        )
    })?;
    ensure(
        !o.log.iter().any(|e| {
            e.id > terminal[0].id && matches!(e.event.as_str(), "job.started" | "stage.started")
        }),
        || "started something after it ended".into(),
    )?;

    // The job's own word.
    if let Some(timeline) = &o.timeline {
        let ended = timeline.ended().ok_or_else(|| {
            format!(
                "{} while the job's code had not stopped",
                status.short_name()
            )
        })?;
        let shown = o.seen.terminal_at().unwrap_or(u64::MAX);
        ensure(shown >= ended, || {
            format!(
                "{} shown {:.3} ms before the job's code stopped",
                status.short_name(),
                (ended - shown) as f64 / 1e6
            )
        })?;
        match status {
            JobStatus::Cancelled => ensure(timeline.at("stopped").is_some(), || {
                "CANCELLED but the job says it finished".into()
            })?,
            JobStatus::Succeeded => ensure(timeline.at("finished").is_some(), || {
                "SUCCEEDED but the job says it was stopped".into()
            })?,
            other => return Err(format!("{} (the job never fails)", other.short_name())),
        }
    } else {
        ensure(status == JobStatus::Cancelled, || {
            format!("{} but the job never ran", status.short_name())
        })?;
    }

    // The answer.
    match &o.answer {
        Ok(answer) => match answer.outcome() {
            CancelOutcome::CancelledWhileQueued => {
                ensure(status == JobStatus::Cancelled, || {
                    "CANCELLED_WHILE_QUEUED but not CANCELLED".into()
                })?;
                ensure(!o.ran && job.attempt == 0, || {
                    "CANCELLED_WHILE_QUEUED but it ran".into()
                })?;
                ensure(
                    resolution == Some(CancelResolution::CancelledWhileQueued),
                    || format!("CANCELLED_WHILE_QUEUED with resolution {resolution:?}"),
                )?;
                Ok("cancelled while queued")
            }
            CancelOutcome::Cancelling if status == JobStatus::Cancelled => {
                ensure(resolution == Some(CancelResolution::Stopped), || {
                    format!("stopped with resolution {resolution:?}")
                })?;
                ensure(has("cancel.stopped") && !has("cancel.ignored"), || {
                    "CANCELLED without cancel.stopped (or with cancel.ignored)".into()
                })?;
                ensure(
                    has("cancel.delivered") && has("cancel.acknowledged"),
                    || {
                        "stopped, but its cancel was never recorded as delivered and acknowledged"
                            .into()
                    },
                )?;
                Ok(if o.timeline.is_some() {
                    "stopped while running"
                } else {
                    "stopped before its stage began"
                })
            }
            CancelOutcome::Cancelling | CancelOutcome::AlreadyFinished => {
                ensure(status == JobStatus::Succeeded, || {
                    format!("{:?} but {}", answer.outcome(), status.short_name())
                })?;
                ensure(has("cancel.ignored") && !has("cancel.stopped"), || {
                    "finished first without cancel.ignored (or with cancel.stopped)".into()
                })?;
                Ok(if answer.outcome() == CancelOutcome::Cancelling {
                    "finished while cancelling (cancel ignored)"
                } else {
                    "finished during the cancel call (cancel ignored)"
                })
            }
            other => Err(format!("a single cancel answered {other:?}")),
        },
        Err(e) if e.code() == tonic::Code::FailedPrecondition => {
            ensure(
                status != JobStatus::Cancelled && job.cancel.is_none(),
                || "cancel refused as terminal, yet the job records a cancel".into(),
            )?;
            ensure(
                !o.log.iter().any(|e| e.event.starts_with("cancel.")),
                || "cancel refused, yet the log has cancel entries".into(),
            )?;
            Ok("already terminal (FAILED_PRECONDITION)")
        }
        Err(e) => Err(format!("CancelJob failed: {e}")),
    }
}

fn ensure(holds: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if holds { Ok(()) } else { Err(why()) }
}
