//! Footprint: the resident memory of an idle worker and of the control plane — empty, then
//! with `queued` jobs in the queue and `watchers` `WatchJobs` streams open (each on its own
//! connection, each having read the whole snapshot). The CPU time per 1,000 jobs is measured
//! in the throughput scenario.

use std::time::Duration;

use presswork_proto::v1::JobStatus;
use presswork_proto::v1::WatchJobsRequest;
use presswork_proto::v1::watch_jobs_response::Kind;

use super::{Settings, WAIT, submit_many};
use crate::cluster::{Cluster, ClusterSpec, Environment};
use crate::observer::{Observer, fill_slots, release};
use crate::procfs;
use crate::report::{Report, Row};

/// Time for memory to settle (allocator, buffers) before it is read.
const SETTLE: Duration = Duration::from_millis(500);

pub async fn run(env: &Environment, settings: &Settings) -> anyhow::Result<Report> {
    let spec = ClusterSpec {
        workers: 1,
        capacity: 1,
        cancel_timeout: None,
    };
    let cluster = Cluster::start(env, "footprint", &spec).await?;
    let result = measure(&cluster, settings).await;
    cluster.stop().await;
    result
}

async fn measure(cluster: &Cluster, settings: &Settings) -> anyhow::Result<Report> {
    let observer = Observer::start(cluster).await?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let control_plane = cluster
        .control_plane_pid()
        .ok_or_else(|| anyhow::anyhow!("the control plane is not running"))?;
    let worker = *cluster
        .worker_pids()
        .first()
        .ok_or_else(|| anyhow::anyhow!("the worker is not running"))?;

    // One job through the worker: then it is connected, has run something, and is idle.
    let warm = fill_slots(cluster, &observer, 1, 1).await?;
    release(cluster, &observer, &warm).await?;
    tokio::time::sleep(SETTLE).await;
    let (worker_idle, _) = read(worker)?;
    let (empty, _) = read(control_plane)?;

    // Hold the slot so that the submitted jobs stay queued.
    let blockers = fill_slots(cluster, &observer, 1, 1).await?;
    let queued = settings.queued;
    submit_many(cluster, "noop", &[], queued, 32).await?;
    observer
        .wait(WAIT, "every submitted job to be seen queued", |s| {
            (s.count(JobStatus::Queued) >= queued).then_some(())
        })
        .await?;
    let mut streams = Vec::with_capacity(settings.watchers);
    for _ in 0..settings.watchers {
        let mut client = cluster.new_client().await?;
        let mut stream = client
            .watch_jobs(WatchJobsRequest { after_sequence: 0 })
            .await?
            .into_inner();
        loop {
            let message = tokio::time::timeout(WAIT, stream.message())
                .await
                .map_err(|_| anyhow::anyhow!("a watcher's snapshot took over {WAIT:?}"))??;
            if message.is_none_or(|m| m.kind() == Kind::SnapshotComplete) {
                break;
            }
        }
        streams.push((client, stream));
    }
    tokio::time::sleep(SETTLE).await;
    let (loaded, peak) = read(control_plane)?;
    drop(streams);
    drop(blockers);

    let mut report = Report::new(
        "footprint",
        "",
        format!(
            "resident memory (VmRSS) of the control plane, empty and then with {queued} jobs queued and {} WatchJobs streams open (each read the whole snapshot), and of one idle worker; CPU per 1,000 jobs is in the throughput table.",
            settings.watchers
        ),
    );
    report.push(Row::figure(
        "control plane RSS, empty",
        mib(empty),
        " MiB",
        None,
    ));
    report.push(Row::figure(
        &format!(
            "control plane RSS, {queued} queued + {} watchers",
            settings.watchers
        ),
        mib(loaded),
        " MiB",
        None,
    ));
    report.push(Row::figure(
        "control plane peak RSS (VmHWM, snapshots)",
        mib(peak),
        " MiB",
        None,
    ));
    report.push(Row::figure(
        "worker RSS, idle",
        mib(worker_idle),
        " MiB",
        None,
    ));
    Ok(report)
}

fn read(pid: u32) -> anyhow::Result<(u64, u64)> {
    procfs::memory(pid).ok_or_else(|| anyhow::anyhow!("cannot read /proc/{pid}/status"))
}
