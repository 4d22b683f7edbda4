//! End-to-end throughput: `jobs` no-op jobs submitted (64 calls in flight) to two workers while
//! they run; the clock runs from the first `SubmitJob` to the moment `WatchJobs` shows the last
//! job SUCCEEDED. Every job costs three store transactions (submit, claim, finish).

use std::time::Duration;

use presswork_proto::v1::JobStatus;

use super::{Settings, submit_many};
use crate::clock::{between, now_ns};
use crate::cluster::{Cluster, ClusterSpec, Environment};
use crate::observer::{Observer, fill_slots, release};
use crate::report::{Report, Row, Target};

const WORKERS: usize = 2;
const IN_FLIGHT: usize = 64;
/// Beyond this the run is reported as incomplete rather than waited for.
const LIMIT: Duration = Duration::from_secs(90);

pub async fn run(env: &Environment, settings: &Settings) -> anyhow::Result<Report> {
    let spec = ClusterSpec {
        workers: WORKERS,
        capacity: settings.capacity,
        cancel_timeout: None,
    };
    let cluster = Cluster::start(env, "throughput", &spec).await?;
    let result = measure(&cluster, settings).await;
    cluster.stop().await;
    result
}

async fn measure(cluster: &Cluster, settings: &Settings) -> anyhow::Result<Report> {
    let observer = Observer::start(cluster).await?;
    let slots = WORKERS * settings.capacity as usize;
    let blockers = fill_slots(cluster, &observer, WORKERS, slots).await?;
    release(cluster, &observer, &blockers).await?;

    let n = settings.jobs;
    let began = now_ns();
    let submitting = submit_many(cluster, "noop", &[], n, IN_FLIGHT);
    let finishing = observer.wait(LIMIT, "every no-op job to succeed", |s| {
        (s.count(JobStatus::Succeeded) >= n).then_some(())
    });
    let (submitted, finished) = tokio::join!(submitting, finishing);
    let submitted = submitted?;
    let submit_done = submitted.iter().map(|s| s.answered).max().unwrap_or(began);

    let (latencies, last_done, failed, succeeded) = observer.with(|s| {
        let mut latencies = Vec::with_capacity(n);
        let mut last = began;
        for sub in &submitted {
            if let Some(done) = s
                .jobs
                .get(&sub.job.id)
                .and_then(|seen| seen.first_in(JobStatus::Succeeded))
            {
                latencies.push(between(sub.sent, done));
                last = last.max(done);
            }
        }
        (
            latencies,
            last,
            s.count(JobStatus::Failed),
            s.count(JobStatus::Succeeded),
        )
    });
    let elapsed_s = between(began, last_done) as f64 / 1e9;
    let rate = succeeded as f64 / elapsed_s;
    let mut report = Report::new(
        "throughput",
        "",
        format!(
            "{n} no-op jobs submitted {IN_FLIGHT} calls at a time while {WORKERS} workers × {} slots run them; first SubmitJob → last SUCCEEDED shown on WatchJobs: {elapsed_s:.2} s.",
            settings.capacity
        ),
    );
    report.push(Row::figure(
        "no-op jobs per second, end to end",
        rate,
        " jobs/s",
        Some(Target::AtLeast {
            value: 1500.0,
            label: "1500 jobs/s".into(),
        }),
    ));
    report.push(Row::figure(
        "SubmitJob calls per second (while running)",
        n as f64 / (between(began, submit_done) as f64 / 1e9),
        " /s",
        None,
    ));
    report.push(Row::latency(
        "SubmitJob call → SUCCEEDED shown, per job",
        latencies,
        None,
    ));
    report.push(Row::latency(
        "SubmitJob round trip",
        submitted.iter().map(|s| s.round_trip()).collect(),
        None,
    ));
    report.push(Row::count(
        "jobs not SUCCEEDED",
        n.saturating_sub(succeeded) + failed,
        Some(Target::Zero),
    ));
    if let Err(e) = finished {
        report.note(format!(
            "incomplete: {e}; {succeeded} of {n} succeeded, the rate is over those"
        ));
    }
    Ok(report)
}
