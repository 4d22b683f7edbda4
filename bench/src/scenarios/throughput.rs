//! End-to-end throughput: `jobs` no-op jobs submitted (64 calls in flight) to two workers while
//! they run; the clock runs from the first `SubmitJob` to the moment `WatchJobs` shows the last
//! job SUCCEEDED. Also the CPU time the control plane, the workers and (on PostgreSQL) the
//! database server spent per 1,000 jobs over that time.

use std::time::Duration;

use presswork_proto::v1::JobStatus;

use super::{Settings, submit_many};
use crate::clock::{between, now_ns};
use crate::cluster::{Backend, Cluster, ClusterSpec, Environment};
use crate::observer::{Observer, fill_slots, release};
use crate::procfs;
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
    let result = measure(&cluster, env, settings).await;
    cluster.stop().await;
    result
}

async fn measure(
    cluster: &Cluster,
    env: &Environment,
    settings: &Settings,
) -> anyhow::Result<Report> {
    let observer = Observer::start(cluster).await?;
    let slots = WORKERS * settings.capacity as usize;
    let blockers = fill_slots(cluster, &observer, WORKERS, slots).await?;
    release(cluster, &observer, &blockers).await?;

    let n = settings.jobs;
    let cpu_before = CpuTime::of(cluster, env.backend);
    let began = now_ns();
    let submitting = submit_many(cluster, "noop", &[], n, IN_FLIGHT);
    let finishing = observer.wait(LIMIT, "every no-op job to succeed", |s| {
        (s.count(JobStatus::Succeeded) >= n).then_some(())
    });
    let (submitted, finished) = tokio::join!(submitting, finishing);
    let cpu_used = CpuTime::of(cluster, env.backend).since(&cpu_before);
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
    let per_thousand = |ticks: u64| {
        ticks as f64 * 1000.0 / procfs::ticks_per_second() as f64 * 1000.0 / n.max(1) as f64
    };
    report.push(Row::figure(
        "CPU time per 1,000 jobs: control plane",
        per_thousand(cpu_used.control_plane),
        " ms",
        None,
    ));
    report.push(Row::figure(
        "CPU time per 1,000 jobs: workers (both)",
        per_thousand(cpu_used.workers),
        " ms",
        None,
    ));
    if env.backend == Backend::Postgres {
        report.push(Row::figure(
            "CPU time per 1,000 jobs: PostgreSQL server",
            per_thousand(cpu_used.database),
            " ms",
            None,
        ));
    }
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

/// CPU time used so far, in clock ticks, by the processes of the system under test.
struct CpuTime {
    control_plane: u64,
    workers: u64,
    database: u64,
}

impl CpuTime {
    fn of(cluster: &Cluster, backend: Backend) -> Self {
        let ticks = |pid: Option<u32>| pid.and_then(procfs::cpu_ticks).unwrap_or(0);
        CpuTime {
            control_plane: ticks(cluster.control_plane_pid()),
            workers: cluster
                .worker_pids()
                .into_iter()
                .map(|p| ticks(Some(p)))
                .sum(),
            database: if backend == Backend::Postgres {
                procfs::postgres_ticks()
            } else {
                0
            },
        }
    }

    fn since(&self, before: &Self) -> Self {
        CpuTime {
            control_plane: self.control_plane.saturating_sub(before.control_plane),
            workers: self.workers.saturating_sub(before.workers),
            database: self.database.saturating_sub(before.database),
        }
    }
}
