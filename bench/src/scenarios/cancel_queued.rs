//! Cancel call latency with a deep queue: every worker slot is held by a `blocker`, `queued +
//! cancels` no-op jobs wait in the queue, and `cancels` of them (picked at random) are
//! cancelled one after another. Times the `CancelJob` round trip, and the time until a
//! `WatchJobs` stream shows the job CANCELLED (the story's "queued cancel shown").

use std::collections::HashMap;

use presswork_proto::v1::{CancelOutcome, JobStatus};
use rand::seq::SliceRandom;

use super::{Settings, WAIT, submit_many};
use crate::clock::{between, now_ns};
use crate::cluster::{Cluster, ClusterSpec, Environment};
use crate::observer::{Observer, fill_slots};
use crate::report::{Report, Row, Target};

const WORKERS: usize = 2;
const CAPACITY: u32 = 2;

pub async fn run(env: &Environment, settings: &Settings) -> anyhow::Result<Report> {
    let spec = ClusterSpec {
        workers: WORKERS,
        capacity: CAPACITY,
        cancel_timeout: None,
    };
    let cluster = Cluster::start(env, "cancel-queued", &spec).await?;
    let result = measure(&cluster, settings).await;
    cluster.stop().await;
    result
}

async fn measure(cluster: &Cluster, settings: &Settings) -> anyhow::Result<Report> {
    let observer = Observer::start(cluster).await?;
    let slots = WORKERS * CAPACITY as usize;
    let blockers = fill_slots(cluster, &observer, WORKERS, slots).await?;

    let total = settings.queued + settings.cancels;
    let submitted = submit_many(cluster, "noop", &[], total, 32).await?;
    let submit_latency: Vec<i64> = submitted.iter().map(|s| s.round_trip()).collect();
    observer
        .wait(WAIT, "every submitted job to be seen queued", |s| {
            (s.count(JobStatus::Queued) >= total).then_some(())
        })
        .await?;

    let mut picks: Vec<String> = submitted.iter().map(|s| s.job.id.clone()).collect();
    picks.shuffle(&mut rand::rng());
    picks.truncate(settings.cancels);

    let mut client = cluster.client();
    let mut round_trips = Vec::with_capacity(picks.len());
    let mut asked_at: HashMap<&str, u64> = HashMap::new();
    let mut wrong_answers = Vec::new();
    let queued_at_start = observer.with(|s| s.count(JobStatus::Queued));
    for id in &picks {
        let t0 = now_ns();
        let answer = crate::cluster::cancel(&mut client, id).await;
        let t1 = now_ns();
        round_trips.push(between(t0, t1));
        asked_at.insert(id, t0);
        match answer {
            Ok(answer) if answer.outcome() == CancelOutcome::CancelledWhileQueued => {}
            other => wrong_answers.push(format!("job {id}: {other:?}")),
        }
    }
    let shown = observer
        .wait(WAIT, "every cancelled job to be shown CANCELLED", |s| {
            picks
                .iter()
                .map(|id| {
                    let seen = s.jobs.get(id)?;
                    Some(between(
                        asked_at[id.as_str()],
                        seen.first_in(JobStatus::Cancelled)?,
                    ))
                })
                .collect::<Option<Vec<i64>>>()
        })
        .await?;
    let queued_at_end = observer.with(|s| s.count(JobStatus::Queued));
    let changed_after_terminal = observer.with(|s| s.after_terminal);
    // A job cancelled while queued never runs: never seen RUNNING, no attempt.
    let ran_anyway = observer.with(|s| {
        picks
            .iter()
            .filter(|id| {
                s.jobs.get(id.as_str()).is_none_or(|seen| {
                    seen.first_in(JobStatus::Running).is_some() || seen.job.attempt != 0
                })
            })
            .count()
    });
    // The blockers are left to the shutdown: releasing them would start the queue.
    drop(blockers);

    let mut report = Report::new(
        "cancel-queued",
        "",
        format!(
            "{} cancels, one at a time, of random queued no-op jobs; {queued_at_start} jobs queued when the cancels began ({queued_at_end} at the end); {WORKERS} workers × {CAPACITY} slots, all held by blockers.",
            picks.len()
        ),
    );
    report.push(Row::latency(
        "CancelJob round trip (queued job)",
        round_trips,
        Some(Target::p99_ms(3.0, "3 ms")),
    ));
    report.push(Row::latency(
        "cancel call → CANCELLED shown on WatchJobs",
        shown,
        Some(Target::p99_ms(500.0, "500 ms (story)")),
    ));
    report.push(Row::latency(
        "SubmitJob round trip (32 in flight)",
        submit_latency,
        None,
    ));
    let inconsistent = wrong_answers.len() + ran_anyway + changed_after_terminal;
    report.push(Row::count(
        "inconsistent outcomes",
        inconsistent,
        Some(Target::Zero),
    ));
    for wrong in wrong_answers.iter().take(5) {
        report.note(format!("not CANCELLED_WHILE_QUEUED: {wrong}"));
    }
    if ran_anyway > 0 {
        report.note(format!(
            "{ran_anyway} jobs cancelled while queued were seen running or with an attempt"
        ));
    }
    if changed_after_terminal > 0 {
        report.note(format!(
            "{changed_after_terminal} changes of jobs that were already terminal"
        ));
    }
    Ok(report)
}
