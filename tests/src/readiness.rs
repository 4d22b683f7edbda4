//! Knowing that every worker of a cluster takes jobs, from the jobs themselves: the control
//! plane has no call that lists workers, and a worker that connected but never runs anything
//! is not ready.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use presswork_proto::v1::watch_jobs_response::Kind;
use presswork_proto::v1::{Job, JobStatus, WatchJobsRequest};

use crate::cluster::Cluster;
use crate::execution_log::describe_job;
use crate::waiting::LONG_WAIT;

/// How long each probe runs: long enough for the dispatcher to fill every slot.
const PROBE_DURATION_MS: &str = "2000";

/// Submits one `demo-slow` probe per slot and follows `WatchJobs` until all of them run at
/// once on `workers` distinct workers; then waits for the probes to end so the slots are
/// free. Tries again with new probes when a round ends before that (a worker still
/// connecting), until [`LONG_WAIT`] has passed.
pub(crate) async fn wait_for_all_slots(cluster: &Cluster, workers: usize, slots: usize) {
    let deadline = Instant::now() + LONG_WAIT;
    let mut rounds = Vec::new();
    loop {
        let round = probe_round(cluster, workers, slots, deadline).await;
        match round {
            Ok(()) => return,
            Err(probes) => rounds.push(probes),
        }
        if Instant::now() >= deadline {
            let rounds: Vec<String> = rounds
                .iter()
                .enumerate()
                .map(|(i, probes)| {
                    let jobs: Vec<String> = probes.values().map(describe_job).collect();
                    format!("  round {}:\n    {}", i + 1, jobs.join("\n    "))
                })
                .collect();
            panic!(
                "the {workers} workers never ran {slots} jobs at once within {LONG_WAIT:?}; probe jobs:\n{}\ncluster directory: {}",
                rounds.join("\n"),
                cluster.dir().display()
            );
        }
    }
}

/// One round: `Ok` when every slot ran a probe at the same moment, otherwise the probes'
/// last states.
async fn probe_round(
    cluster: &Cluster,
    workers: usize,
    slots: usize,
    deadline: Instant,
) -> Result<(), HashMap<String, Job>> {
    let mut stream = cluster
        .client()
        .watch_jobs(WatchJobsRequest { after_sequence: 0 })
        .await
        .unwrap_or_else(|e| panic!("WatchJobs failed: {e:?}"))
        .into_inner();
    // Submit only once the snapshot is taken: every later change then reaches this stream.
    loop {
        let message = stream
            .message()
            .await
            .unwrap_or_else(|e| panic!("WatchJobs broke during its snapshot: {e:?}"))
            .expect("WatchJobs ended during its snapshot");
        if message.kind() == Kind::SnapshotComplete {
            break;
        }
    }
    let mut probes: HashMap<String, Job> = HashMap::new();
    for _ in 0..slots {
        let job = cluster
            .submit(
                "demo-slow",
                &[("slow_stage", "ingest"), ("duration_ms", PROBE_DURATION_MS)],
            )
            .await;
        probes.insert(job.id.clone(), job);
    }
    let mut all_ran_at_once = false;
    loop {
        let all_terminal = probes.values().all(|j| j.status().is_terminal());
        if all_terminal {
            return if all_ran_at_once { Ok(()) } else { Err(probes) };
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = match tokio::time::timeout(remaining, stream.message()).await {
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => panic!("WatchJobs ended while probing the workers"),
            Ok(Err(e)) => panic!("WatchJobs broke while probing the workers: {e:?}"),
            Err(_) => return Err(probes),
        };
        let Some(job) = message.job else { continue };
        let Some(probe) = probes.get_mut(&job.id) else {
            continue;
        };
        if job.version >= probe.version {
            *probe = job;
        }
        assert!(
            !matches!(probe.status(), JobStatus::Failed | JobStatus::Cancelled),
            "a probe job ended {}: {}\n{}",
            probe.status().short_name(),
            describe_job(probe),
            cluster.job_report(&probe.id).await
        );
        let running: Vec<&Job> = probes
            .values()
            .filter(|j| j.status() == JobStatus::Running)
            .collect();
        let distinct_workers: HashSet<&str> =
            running.iter().map(|j| j.worker_id.as_str()).collect();
        if running.len() == slots && distinct_workers.len() == workers {
            all_ran_at_once = true;
        }
    }
}
