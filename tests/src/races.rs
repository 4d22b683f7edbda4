//! Running many cancel races in concurrent batches and judging them all.

use std::future::Future;
use std::time::Instant;

use futures::future::join_all;

use crate::cluster::Cluster;
use crate::execution_log::describe_job;
use crate::verdict::{CancelObservation, Tally};
use crate::waiting::WAIT;

/// Cancels the job now, then waits until it ends and reads its log.
pub async fn cancel_and_observe(
    cluster: &Cluster,
    job_id: &str,
    reason: &str,
) -> CancelObservation {
    let asked = Instant::now();
    let response = cluster.cancel(job_id, reason).await;
    let cancel_latency = asked.elapsed();
    let job = cluster.wait_for_terminal(job_id, WAIT).await;
    let log = cluster.job_log(job_id).await;
    CancelObservation {
        job_id: job_id.to_owned(),
        response,
        cancel_latency,
        job,
        log,
    }
}

/// Runs `race(i)` for `i` in `0..iterations`, `batch` at a time, judges every observation,
/// then checks that no job changed after it ended (terminal states never change).
pub async fn run_in_batches<F, Fut>(
    cluster: &Cluster,
    iterations: usize,
    batch: usize,
    race: F,
) -> Tally
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = CancelObservation>,
{
    let mut tally = Tally::default();
    let mut finals = Vec::with_capacity(iterations);
    for start in (0..iterations).step_by(batch) {
        let end = (start + batch).min(iterations);
        for observation in join_all((start..end).map(&race)).await {
            tally.record(&observation);
            finals.push(observation.job);
        }
    }
    for job in &finals {
        let now = cluster.get_job(&job.id).await;
        if (now.status(), now.version) != (job.status(), job.version) {
            tally.add_inconsistency(
                "changed after it ended".to_owned(),
                format!(
                    "job {} changed after it ended:\n  then {}\n  now  {}",
                    job.id,
                    describe_job(job),
                    describe_job(&now)
                ),
            );
        }
    }
    tally
}

/// Fails with the first inconsistencies when there is any.
pub fn assert_consistent(tally: &Tally, iterations: usize, cluster: &Cluster) {
    assert_eq!(tally.total(), iterations, "{}", tally.summary());
    assert!(
        tally.inconsistencies.is_empty(),
        "{} of {iterations} races ended inconsistently ({}); by reason: {:#?}\nthe first ones:\n{}\ncluster directory: {}",
        tally.inconsistencies.len(),
        tally.summary(),
        tally.reasons,
        tally.inconsistencies[..tally.inconsistencies.len().min(5)].join("\n"),
        cluster.dir().display()
    );
}
