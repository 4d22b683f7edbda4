//! Stopping running work across control-plane replicas (PostgreSQL only): two replicas, A and
//! B, on one database; one worker, connected to B. Each `coop` job (spin 10 ms of CPU, then
//! check the token) is submitted to A, so B hears of it through PostgreSQL's NOTIFY before it
//! assigns it. Once the stage has started, plus a random 0–20 ms, the bench cancels it —
//! alternately on A (which commits CANCELLING and has no stream to the worker: B sees the
//! commit through NOTIFY and sends the cancel) and on B (which holds the worker's stream:
//! the single-replica path, as a control on the same cluster). The difference between the two
//! is the cost of the cross-replica forward. Watchers on both replicas note when each saw
//! CANCELLING and the terminal state.
//!
//! Then the cost of following each other's commits (a NOTIFY per transaction, and each
//! replica reading what the other committed): the same burst of no-op jobs (32 `SubmitJob`
//! calls in flight) on this cluster, the calls alternating between A and B, and on a cluster
//! of one replica with the same worker; jobs per second from the first call until the watcher
//! on A (the only replica of the second cluster) shows the last one SUCCEEDED.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use presswork_proto::v1::JobStatus;

use super::cancel_running::wrong_cancel;
use super::{Settings, WAIT, jitter};
use crate::clock::{between, now_ns};
use crate::cluster::{Backend, Cluster, ClusterSpec, Environment, cancel, submit};
use crate::observer::Observer;
use crate::procfs;
use crate::report::{Report, Row, Target};
use crate::timeline::Timeline;

const A: usize = 0;
const B: usize = 1;
/// Slots of the worker: the cancels run one at a time; the bursts use them all (as many as
/// each worker of the throughput scenario has).
const CAPACITY: u32 = 16;
/// `SubmitJob` calls in flight in the burst.
const IN_FLIGHT: usize = 32;
/// Beyond this a burst is reported as failed rather than waited for.
const LIMIT: Duration = Duration::from_secs(90);

#[derive(Default)]
struct Sample {
    /// Cancelled on A (the replica without the worker's stream), not on B.
    cross: bool,
    submitted_to_started: Option<i64>,
    round_trip: i64,
    cancelling_on_a: Option<i64>,
    cancelling_on_b: Option<i64>,
    fired: Option<i64>,
    stopped: Option<i64>,
    terminal_on_a: Option<i64>,
    terminal_on_b: Option<i64>,
    inconsistent: Option<String>,
}

/// Runs on PostgreSQL; on SQLite (one replica only) there is nothing to measure.
pub async fn run(env: &Environment, settings: &Settings) -> anyhow::Result<Vec<Report>> {
    if env.backend != Backend::Postgres {
        eprintln!("  (skipped: control-plane replicas need PostgreSQL)");
        return Ok(Vec::new());
    }
    let spec = ClusterSpec {
        workers: 1,
        capacity: CAPACITY,
        cancel_timeout: None,
    };
    // The one worker is placed on B.
    let cluster = Cluster::start_replicated(env, "cancel-running-replicas", &spec, 2, B).await?;
    let result = measure(&cluster, settings).await;
    cluster.stop().await;
    let (mut report, two) = result?;
    let single = Cluster::start(env, "cancel-running-one-replica", &spec).await?;
    let one = async {
        let observer = Observer::start(&single).await?;
        let blockers =
            crate::observer::fill_slots(&single, &observer, 1, CAPACITY as usize).await?;
        crate::observer::release(&single, &observer, &blockers).await?;
        burst(&single, &observer, 1, burst_size(settings)).await
    }
    .await;
    single.stop().await;
    let one = one?;
    let n = burst_size(settings);
    for (replicas, load) in [(1, &one), (2, &two)] {
        let name = format!(
            "{n} no-op jobs, {replicas} replica{}",
            if replicas == 1 { "" } else { "s" }
        );
        report.push(Row::figure(
            &format!("{name}: jobs per second"),
            load.rate,
            " jobs/s",
            None,
        ));
        report.push(Row::latency(
            &format!("{name}: SubmitJob round trip"),
            load.round_trips.clone(),
            None,
        ));
        report.push(Row::figure(
            &format!("{name}: CPU per 1,000 jobs, control plane(s)"),
            load.control_plane_cpu,
            " ms",
            None,
        ));
        report.push(Row::figure(
            &format!("{name}: CPU per 1,000 jobs, PostgreSQL"),
            load.database_cpu,
            " ms",
            None,
        ));
    }
    report.push(Row::count(
        "burst jobs not SUCCEEDED",
        one.not_succeeded + two.not_succeeded,
        Some(Target::Zero),
    ));
    Ok(vec![report])
}

/// No-op jobs per burst: a fifth of the throughput scenario's.
fn burst_size(settings: &Settings) -> usize {
    (settings.jobs / 5).max(1)
}

/// What a burst of no-op jobs measured.
struct Burst {
    rate: f64,
    /// CPU time per 1,000 jobs of the control-plane replicas together, and of PostgreSQL, ms.
    control_plane_cpu: f64,
    database_cpu: f64,
    round_trips: Vec<i64>,
    not_succeeded: usize,
}

/// Submits `n` no-op jobs, `IN_FLIGHT` calls at once, call `i` to replica `i % replicas`, and
/// waits until `observer` shows every one of them ended.
async fn burst(
    cluster: &Cluster,
    observer: &Observer,
    replicas: usize,
    n: usize,
) -> anyhow::Result<Burst> {
    let cpu = || {
        let control_plane: u64 = cluster
            .control_plane_pids()
            .into_iter()
            .filter_map(procfs::cpu_ticks)
            .sum();
        (control_plane, procfs::postgres_ticks())
    };
    let cpu_before = cpu();
    let began = now_ns();
    let submitted: Vec<anyhow::Result<(String, i64)>> = futures::stream::iter(0..n)
        .map(|i| {
            let mut client = cluster.client_on(i % replicas);
            async move {
                let sent = now_ns();
                let job = submit(&mut client, "noop", &[]).await?;
                Ok((job.id, between(sent, now_ns())))
            }
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    let submitted: Vec<(String, i64)> = submitted.into_iter().collect::<anyhow::Result<_>>()?;
    let ids: HashSet<&str> = submitted.iter().map(|(id, _)| id.as_str()).collect();
    let (last, not_succeeded) = observer
        .wait(LIMIT, &format!("{n} no-op jobs to end"), |s| {
            let mut last = began;
            let mut not_succeeded = 0;
            for id in &ids {
                let seen = s.jobs.get(*id).filter(|j| j.is_terminal())?;
                last = last.max(seen.terminal_at().unwrap_or(began));
                if seen.job.status() != JobStatus::Succeeded {
                    not_succeeded += 1;
                }
            }
            Some((last, not_succeeded))
        })
        .await?;
    let cpu_after = cpu();
    let per_1000_jobs =
        |ticks: u64| ticks as f64 * 1000.0 / procfs::ticks_per_second() as f64 * 1000.0 / n as f64;
    Ok(Burst {
        rate: n as f64 / (between(began, last) as f64 / 1e9),
        control_plane_cpu: per_1000_jobs(cpu_after.0.saturating_sub(cpu_before.0)),
        database_cpu: per_1000_jobs(cpu_after.1.saturating_sub(cpu_before.1)),
        round_trips: submitted.into_iter().map(|(_, rt)| rt).collect(),
        not_succeeded,
    })
}

async fn measure(cluster: &Cluster, settings: &Settings) -> anyhow::Result<(Report, Burst)> {
    let on_a = Observer::start_on(cluster, A).await?;
    let on_b = Observer::start_on(cluster, B).await?;
    let blockers = crate::observer::fill_slots(cluster, &on_a, 1, CAPACITY as usize).await?;
    crate::observer::release(cluster, &on_a, &blockers).await?;

    let check_ms = settings.check_ms.max(1);
    let observers = (&on_a, &on_b);
    let samples: Vec<anyhow::Result<Sample>> = futures::stream::iter(0..settings.stops)
        .map(|i| sample(cluster, observers, check_ms, i % 2 == 0))
        .buffered(1)
        .collect()
        .await;
    let samples: Vec<Sample> = samples.into_iter().collect::<anyhow::Result<_>>()?;

    let mut report = Report::new(
        "cancel-running-replicas",
        "",
        format!(
            "2 control-plane replicas (A, B) on one database; 1 worker × {CAPACITY} slots connected to B. {} `coop` jobs (spin {check_ms} ms of CPU, then check the token) submitted to A, cancelled once their stage started plus a random 0–20 ms, one at a time, alternately on A (cross-replica: B learns of the cancel through NOTIFY and sends it) and on B (the replica holding the worker's stream). Then {} no-op jobs ({IN_FLIGHT} calls in flight) on this cluster, the calls alternating between A and B, and on a cluster of one replica with the same worker.",
            samples.len(),
            burst_size(settings)
        ),
    );
    for cross in [true, false] {
        let of = |f: fn(&Sample) -> Option<i64>| {
            samples
                .iter()
                .filter(|s| s.cross == cross)
                .filter_map(f)
                .collect::<Vec<_>>()
        };
        let on = if cross { "cancel on A" } else { "cancel on B" };
        report.push(Row::latency(
            &format!("{on}: CancelJob round trip"),
            of(|s| Some(s.round_trip)),
            Some(Target::p99_ms(200.0, "200 ms (story)")),
        ));
        report.push(Row::latency(
            &format!("{on}: call → CANCELLING shown on A"),
            of(|s| s.cancelling_on_a),
            None,
        ));
        report.push(Row::latency(
            &format!("{on}: call → CANCELLING shown on B"),
            of(|s| s.cancelling_on_b),
            None,
        ));
        report.push(Row::latency(
            &format!("{on}: call → token fired on the worker"),
            of(|s| s.fired),
            None,
        ));
        report.push(Row::latency(
            &format!("{on}: call → job's code stopped"),
            of(|s| s.stopped),
            Some(Target::p99_ms(1000.0, "1 s (story)")),
        ));
        report.push(Row::latency(
            &format!("{on}: call → CANCELLED shown on A"),
            of(|s| s.terminal_on_a),
            Some(Target::p99_ms(1000.0, "1 s (story)")),
        ));
        report.push(Row::latency(
            &format!("{on}: call → CANCELLED shown on B"),
            of(|s| s.terminal_on_b),
            None,
        ));
    }
    report.push(Row::latency(
        "SubmitJob on A → stage started on B's worker (shown on A)",
        samples
            .iter()
            .filter_map(|s| s.submitted_to_started)
            .collect(),
        None,
    ));
    report.inconsistent(
        samples.iter().filter_map(|s| s.inconsistent.as_ref()),
        on_a.with(|s| s.after_terminal) + on_b.with(|s| s.after_terminal),
    );
    let load = burst(cluster, &on_a, 2, burst_size(settings)).await?;
    Ok((report, load))
}

async fn sample(
    cluster: &Cluster,
    (on_a, on_b): (&Observer, &Observer),
    check_ms: u64,
    cross: bool,
) -> anyhow::Result<Sample> {
    let check = check_ms.to_string();
    let submitted = now_ns();
    let job = submit(
        &mut cluster.client_on(A),
        "coop",
        &[("check_ms", &check), ("max_ms", "3000")],
    )
    .await?;
    let started = on_a.stage_started(&job.id, WAIT).await?;
    jitter(Duration::from_millis(20)).await;
    let t0 = now_ns();
    let mut client = cluster.client_on(if cross { A } else { B });
    let answer = cancel(&mut client, &job.id).await;
    let t1 = now_ns();
    let seen_a = on_a.terminal(&job.id, WAIT).await?;
    let seen_b = on_b.terminal(&job.id, WAIT).await?;
    let cancelling_on_b = on_b.first_in(&job.id, JobStatus::Cancelling, WAIT).await?;
    let timeline = Timeline::read(&cluster.output_dir, &job.id, seen_a.job.attempt);
    let stop_duration_us = seen_a.job.cancel.as_ref().map_or(0, |c| c.stop_duration_us);
    let stopped = timeline.as_ref().and_then(|t| t.at("stopped"));
    let since = |at: Option<u64>| at.map(|at| between(t0, at));
    let mut sample = Sample {
        cross,
        submitted_to_started: started.stage_started.map(|at| between(submitted, at)),
        round_trip: between(t0, t1),
        cancelling_on_a: since(seen_a.first_in(JobStatus::Cancelling)),
        cancelling_on_b: since(cancelling_on_b),
        fired: since(timeline.as_ref().and_then(|t| t.fired(stop_duration_us))),
        stopped: since(stopped),
        terminal_on_a: since(seen_a.terminal_at()),
        terminal_on_b: since(seen_b.terminal_at()),
        inconsistent: None,
    };
    let shown_first = [seen_a.terminal_at(), seen_b.terminal_at()]
        .into_iter()
        .flatten()
        .min();
    sample.inconsistent = wrong_cancel(&job.id, &answer, &seen_a.job, stopped, shown_first)
        .or_else(|| {
            (seen_b.job.status() != JobStatus::Cancelled).then(|| {
                format!(
                    "job {}: replica B shows it {}, replica A CANCELLED",
                    job.id,
                    seen_b.job.status().short_name()
                )
            })
        });
    Ok(sample)
}
