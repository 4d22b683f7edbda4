//! AC-006: a cancel that races the dispatcher's claim. Exactly one of them wins: either the job
//! is CANCELLED_WHILE_QUEUED and never starts, or it was claimed and the cancel goes the
//! CANCELLING path and ends consistently (CANCELLED with `cancel.stopped`, or its own final
//! status with `cancel.ignored`). Never two terminal entries, never `job.succeeded` after
//! `job.cancelled`.

use std::time::{Duration, Instant};

use presswork_tests::races::{assert_consistent, cancel_and_observe, run_in_batches};
use presswork_tests::{Backend, CancelObservation, Cluster, Verdict};
use rand::Rng;

const ITERATIONS: usize = 240;
/// Jobs raced at once: three times the cluster's slots, so claims contend.
const BATCH: usize = 24;

/// Submits a job and cancels it at once or after a tiny jittered pause, while two workers
/// with four slots each claim jobs.
async fn race_once(cluster: &Cluster, iteration: usize) -> CancelObservation {
    let job = cluster.submit("demo-fast", &[]).await;
    match iteration % 4 {
        0 => {}
        1 => tokio::task::yield_now().await,
        2 => tokio::time::sleep(Duration::from_millis(1)).await,
        _ => {
            // Deliberate jitter, not synchronisation.
            let micros = rand::rng().random_range(0..5_000);
            tokio::time::sleep(Duration::from_micros(micros)).await;
        }
    }
    cancel_and_observe(cluster, &job.id, "test: claim race").await
}

async fn claim_races_end_consistently(backend: Backend) {
    let cluster = Cluster::builder()
        .workers(2)
        .capacity(4)
        .backend(backend)
        .start()
        .await;
    let began = Instant::now();
    let tally = run_in_batches(&cluster, ITERATIONS, BATCH, |i| race_once(&cluster, i)).await;
    let unfinished = cluster.unfinished_jobs().await;
    eprintln!(
        "claim vs cancel on {backend:?}: {} in {:.1?}; unfinished jobs: {}",
        tally.summary(),
        began.elapsed(),
        unfinished.len()
    );
    assert_consistent(&tally, ITERATIONS, &cluster);
    assert!(
        unfinished.is_empty(),
        "jobs left unfinished: {unfinished:?}"
    );
    assert!(
        tally.count(Verdict::CancelledWhileQueued) > 0,
        "no cancel won against the claim: the race was not exercised ({})",
        tally.summary()
    );
}

#[tokio::test]
async fn claim_vs_cancel_on_sqlite() {
    claim_races_end_consistently(Backend::Sqlite).await;
}

#[tokio::test]
async fn claim_vs_cancel_on_postgres() {
    claim_races_end_consistently(Backend::Postgres).await;
}
