//! Many dashboards: `watchers` `WatchJobs` streams, each on a connection of its own, while the
//! bench submits jobs (no worker runs them) and cancels each at once, at a steady rate. For
//! every change and every watcher: the time from the call that caused the change (SubmitJob
//! for QUEUED, CancelJob for CANCELLED) to that watcher receiving it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use presswork_proto::v1::watch_jobs_response::Kind;
use presswork_proto::v1::{JobStatus, WatchJobsRequest};
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

use super::Settings;
use crate::clock::{between, now_ns};
use crate::cluster::{Cluster, ClusterSpec, Environment, cancel, submit};
use crate::report::{Report, Row, Target};

/// How long watchers may take to receive the last change once the driver is done.
const SETTLE: Duration = Duration::from_secs(30);

type Received = Vec<(String, JobStatus, u64)>;

pub async fn run(env: &Environment, settings: &Settings) -> anyhow::Result<Report> {
    let spec = ClusterSpec {
        workers: 0,
        capacity: 1,
        cancel_timeout: None,
    };
    let cluster = Cluster::start(env, "watchers", &spec).await?;
    let result = measure(&cluster, settings).await;
    cluster.stop().await;
    result
}

async fn measure(cluster: &Cluster, settings: &Settings) -> anyhow::Result<Report> {
    let n = settings.watched_jobs;
    let expected = 2 * n;
    let ready = Arc::new(Barrier::new(settings.watchers + 1));
    let stop = CancellationToken::new();
    let mut watchers = Vec::with_capacity(settings.watchers);
    for _ in 0..settings.watchers {
        let mut client = cluster.new_client().await?;
        let ready = Arc::clone(&ready);
        let stop = stop.clone();
        watchers.push(tokio::spawn(async move {
            let mut stream = client
                .watch_jobs(WatchJobsRequest { after_sequence: 0 })
                .await?
                .into_inner();
            loop {
                let message = stream.message().await?;
                if message
                    .as_ref()
                    .is_none_or(|m| m.kind() == Kind::SnapshotComplete)
                {
                    break;
                }
            }
            ready.wait().await;
            let mut received: Received = Vec::with_capacity(expected);
            while received.len() < expected {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    message = stream.message() => message?,
                };
                let Some(message) = message else { break };
                let at = now_ns();
                if let Some(job) = message.job {
                    let status = job.status();
                    received.push((job.id, status, at));
                }
            }
            anyhow::Ok(received)
        }));
    }
    ready.wait().await;

    let mut client = cluster.client();
    let mut caused: HashMap<(String, JobStatus), u64> = HashMap::with_capacity(expected);
    let period = Duration::from_secs_f64(2.0 / settings.watch_rate);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let began = now_ns();
    for _ in 0..n {
        ticks.tick().await;
        let t0 = now_ns();
        let job = submit(&mut client, "noop", &[]).await?;
        caused.insert((job.id.clone(), JobStatus::Queued), t0);
        let t1 = now_ns();
        cancel(&mut client, &job.id).await?;
        caused.insert((job.id, JobStatus::Cancelled), t1);
    }
    let drove_s = between(began, now_ns()) as f64 / 1e9;
    let settle = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::time::sleep(SETTLE).await;
            stop.cancel();
        }
    });

    let mut latencies = Vec::with_capacity(expected * settings.watchers);
    let mut missed = 0;
    let mut unexpected = 0;
    let mut broken = Vec::new();
    for watcher in watchers {
        match watcher.await? {
            Ok(received) => {
                missed += expected.saturating_sub(received.len());
                for (id, status, at) in received {
                    match caused.get(&(id, status)) {
                        Some(t0) => latencies.push(between(*t0, at)),
                        None => unexpected += 1,
                    }
                }
            }
            Err(e) => broken.push(e.to_string()),
        }
    }
    settle.abort();

    let mut report = Report::new(
        "watchers",
        "",
        format!(
            "{} WatchJobs streams (one connection each); {n} jobs submitted and cancelled at {:.0} changes/s ({expected} changes in {drove_s:.1} s); no workers.",
            settings.watchers,
            expected as f64 / drove_s,
        ),
    );
    report.push(Row::latency(
        "call → change received, per watcher",
        latencies,
        Some(Target::p99_ms(50.0, "50 ms")),
    ));
    report.push(Row::count(
        "changes missed or unexpected",
        missed + unexpected,
        Some(Target::Zero),
    ));
    for e in broken.iter().take(3) {
        report.note(format!("a watcher broke: {e}"));
    }
    Ok(report)
}
