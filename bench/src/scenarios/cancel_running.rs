//! Stopping running work: `coop` jobs spin 10 ms of CPU between two looks at their token
//! (`--check-ms`; 0 runs `blocker` jobs instead, which await their token without CPU work). Once
//! a job's stage has started (as `WatchJobs` shows) and after a random pause (so the cancel
//! lands at a random phase of the 10 ms), the bench takes the time and calls `CancelJob`. The
//! job writes down, on the same clock, when its code saw the token and stopped: the bench
//! reports cancel call → code stopped, the worker's own stop duration, and when the
//! CANCELLED state was shown.

use std::time::Duration;

use futures::StreamExt;
use presswork_proto::v1::{CancelJobResponse, CancelOutcome, CancelResolution, Job, JobStatus};

use super::{Settings, WAIT, jitter};
use crate::clock::{between, now_ns};
use crate::cluster::{Cluster, ClusterSpec, Environment};
use crate::observer::Observer;
use crate::report::{Report, Row, Target};
use crate::timeline::Timeline;

const WORKERS: usize = 2;
const CAPACITY: u32 = 2;

#[derive(Default)]
struct Sample {
    round_trip: i64,
    stopped: Option<i64>,
    fired: Option<i64>,
    stop_duration_us: u64,
    shown: Option<i64>,
    /// What was wrong, if anything.
    inconsistent: Option<String>,
}

pub async fn run(
    env: &Environment,
    settings: &Settings,
    concurrency: usize,
) -> anyhow::Result<Report> {
    let spec = ClusterSpec {
        workers: WORKERS,
        capacity: CAPACITY,
        cancel_timeout: None,
    };
    let cluster = Cluster::start(env, "cancel-running", &spec).await?;
    let result = measure(&cluster, settings, concurrency).await;
    cluster.stop().await;
    result
}

async fn measure(
    cluster: &Cluster,
    settings: &Settings,
    concurrency: usize,
) -> anyhow::Result<Report> {
    let observer = Observer::start(cluster).await?;
    let slots = WORKERS * CAPACITY as usize;
    let blockers = crate::observer::fill_slots(cluster, &observer, WORKERS, slots).await?;
    crate::observer::release(cluster, &observer, &blockers).await?;

    let concurrency = concurrency.clamp(1, slots);
    let check_ms = settings.check_ms;
    let samples: Vec<anyhow::Result<Sample>> = futures::stream::iter(0..settings.stops)
        .map(|_| sample(cluster, &observer, check_ms))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let samples: Vec<Sample> = samples.into_iter().collect::<anyhow::Result<_>>()?;

    let workload = if check_ms == 0 {
        "`blocker` jobs (an await on the token, no CPU work)".to_string()
    } else {
        format!("`coop` jobs (spin {check_ms} ms of CPU, then check the token)")
    };
    let mut report = Report::new(
        "cancel-running",
        "",
        format!(
            "{} {workload}, cancelled once their stage started plus a random 0–20 ms; {concurrency} at a time; {WORKERS} workers × {CAPACITY} slots.",
            samples.len()
        ),
    );
    let stop_target = 2.0 + check_ms as f64;
    let column = |f: fn(&Sample) -> Option<i64>| samples.iter().filter_map(f).collect::<Vec<_>>();
    report.push(Row::latency(
        "cancel call → job's code stopped (timeline)",
        column(|s| s.stopped),
        Some(Target::p99_ms(stop_target, &format!("{stop_target} ms"))),
    ));
    report.push(Row::latency(
        "cancel call → token fired on the worker",
        column(|s| s.fired),
        Some(Target::p99_ms(2.0, "2 ms (delivery)")),
    ));
    report.push(Row::latency(
        "token fired → outcome (stop_duration_us)",
        column(|s| Some(s.stop_duration_us as i64 * 1000)),
        None,
    ));
    report.push(Row::latency(
        "CancelJob round trip (running job)",
        column(|s| Some(s.round_trip)),
        Some(Target::p99_ms(200.0, "200 ms (story)")),
    ));
    report.push(Row::latency(
        "cancel call → CANCELLED shown on WatchJobs",
        column(|s| s.shown),
        Some(Target::p99_ms(1000.0, "1 s (story)")),
    ));
    report.inconsistent(
        samples.iter().filter_map(|s| s.inconsistent.as_ref()),
        observer.with(|s| s.after_terminal),
    );
    Ok(report)
}

async fn sample(cluster: &Cluster, observer: &Observer, check_ms: u64) -> anyhow::Result<Sample> {
    let check = check_ms.to_string();
    let job = if check_ms == 0 {
        cluster.submit("blocker", &[("hold_ms", "3000")]).await?
    } else {
        cluster
            .submit("coop", &[("check_ms", &check), ("max_ms", "3000")])
            .await?
    };
    observer.stage_started(&job.id, WAIT).await?;
    jitter(Duration::from_millis(20)).await;
    let t0 = now_ns();
    let answer = cluster.cancel(&job.id).await;
    let t1 = now_ns();
    let seen = observer.terminal(&job.id, WAIT).await?;
    let timeline = Timeline::read(&cluster.output_dir, &job.id, seen.job.attempt);
    let mut sample = Sample {
        round_trip: between(t0, t1),
        ..Sample::default()
    };
    let stop_duration_us = seen.job.cancel.as_ref().map_or(0, |c| c.stop_duration_us);
    sample.stop_duration_us = stop_duration_us;
    let stopped = timeline.as_ref().and_then(|t| t.at("stopped"));
    if let Some(stopped) = stopped {
        sample.stopped = Some(between(t0, stopped));
        sample.fired = timeline
            .as_ref()
            .and_then(|t| t.fired(stop_duration_us))
            .map(|at| between(t0, at));
    }
    let terminal_at = seen.terminal_at();
    sample.shown = terminal_at.map(|at| between(t0, at));
    sample.inconsistent = wrong_cancel(&job.id, &answer, &seen.job, stopped, terminal_at)
        .or_else(|| {
            seen.job
                .cancel
                .as_ref()
                .is_none_or(|c| c.delivered_at_unix_ms == 0 || c.acknowledged_at_unix_ms == 0)
                .then(|| {
                    format!(
                        "job {}: stopped, but its cancel was never recorded as delivered and acknowledged",
                        job.id
                    )
                })
        });
    Ok(sample)
}

/// What is wrong with the cooperative cancel of running job `job_id`, if anything: the call's
/// answer, the final state and resolution, and that the job's code stopped (`stopped`) before
/// its terminal state was first shown (`shown`), both on this host's monotonic clock.
pub(super) fn wrong_cancel(
    job_id: &str,
    answer: &Result<CancelJobResponse, tonic::Status>,
    job: &Job,
    stopped: Option<u64>,
    shown: Option<u64>,
) -> Option<String> {
    let resolution = job
        .cancel
        .as_ref()
        .and_then(|c| CancelResolution::try_from(c.resolution).ok());
    match (answer, job.status(), stopped, shown) {
        (Err(status), ..) => Some(format!("job {job_id}: CancelJob failed: {status}")),
        (Ok(a), ..) if a.outcome() != CancelOutcome::Cancelling => Some(format!(
            "job {job_id}: a running job's cancel answered {:?}",
            a.outcome()
        )),
        (_, status, _, _) if status != JobStatus::Cancelled => Some(format!(
            "job {job_id}: ended {} instead of CANCELLED",
            status.short_name()
        )),
        (_, _, None, _) => Some(format!(
            "job {job_id}: CANCELLED but its timeline has no `stopped`"
        )),
        (_, _, Some(stopped), Some(shown)) if shown < stopped => Some(format!(
            "job {job_id}: CANCELLED shown {:.3} ms before the job's code stopped",
            (stopped - shown) as f64 / 1e6
        )),
        _ if resolution != Some(CancelResolution::Stopped) => Some(format!(
            "job {job_id}: CANCELLED with resolution {resolution:?}"
        )),
        _ => None,
    }
}
