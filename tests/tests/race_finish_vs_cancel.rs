//! AC-005: a cancel that races the job's own completion. When the job finished first, its real
//! final status is kept and the cancel is logged as ignored; when the cancel won, the job is
//! CANCELLED with `cancel.stopped`. The answer, the state and the log always agree.

use std::time::{Duration, Instant};

use presswork_proto::v1::JobStatus;
use presswork_tests::races::{assert_consistent, cancel_and_observe, run_in_batches};
use presswork_tests::{Backend, CancelObservation, Cluster, Verdict, WAIT};
use rand::Rng;

const ITERATIONS: usize = 240;
/// One job per slot of the cluster, so each starts at once.
const BATCH: usize = 8;
/// The job's only slow stage; the cancel delays below straddle it.
const DURATION_MS: u64 = 30;

/// Starts a short job, waits until it runs, and cancels it after a delay between 0 and about
/// twice the job's length: early cancels stop it, late ones find it finished.
async fn race_once(cluster: &Cluster, iteration: usize) -> CancelObservation {
    let duration = DURATION_MS.to_string();
    let job = cluster
        .submit(
            "demo-slow",
            &[("slow_stage", "transform"), ("duration_ms", &duration)],
        )
        .await;
    cluster
        .wait_for_job(&job.id, "started", WAIT, |j| {
            j.status() != JobStatus::Queued
        })
        .await;
    // Deliberate jitter across the job's end, not synchronisation.
    let step = (iteration % 12) as u64 * DURATION_MS / 6;
    let jitter = rand::rng().random_range(0..2_000);
    tokio::time::sleep(Duration::from_millis(step) + Duration::from_micros(jitter)).await;
    cancel_and_observe(cluster, &job.id, "test: finish race").await
}

async fn finish_races_end_consistently(backend: Backend) {
    let cluster = Cluster::builder()
        .workers(2)
        .capacity(4)
        .backend(backend)
        .start()
        .await;
    let began = Instant::now();
    let tally = run_in_batches(&cluster, ITERATIONS, BATCH, |i| race_once(&cluster, i)).await;
    eprintln!(
        "finish vs cancel on {backend:?}: {} in {:.1?}",
        tally.summary(),
        began.elapsed()
    );
    assert_consistent(&tally, ITERATIONS, &cluster);
    assert_eq!(
        tally.count(Verdict::CancelledWhileQueued),
        0,
        "every job had started before its cancel"
    );
    let finished_first = tally.count(Verdict::FinishedWhileCancelling)
        + tally.count(Verdict::AlreadyFinished)
        + tally.count(Verdict::RejectedAsTerminal);
    assert!(
        tally.count(Verdict::StoppedWhileRunning) > 0 && finished_first > 0,
        "the cancels must straddle the jobs' end, some stopping them and some too late: {}",
        tally.summary()
    );
}

#[tokio::test]
async fn finish_vs_cancel_on_sqlite() {
    finish_races_end_consistently(Backend::Sqlite).await;
}

#[tokio::test]
async fn finish_vs_cancel_on_postgres() {
    finish_races_end_consistently(Backend::Postgres).await;
}
