//! AC-005: a cancel that races the job's own completion. When the job finished first, its real
//! final status is kept and the cancel is logged as ignored; when the cancel won, the job is
//! CANCELLED with `cancel.stopped`. The answer, the state and the log always agree.

use std::time::{Duration, Instant};

use futures::future::join_all;
use presswork_proto::v1::JobStatus;
use presswork_tests::races::{assert_consistent, cancel_and_observe, run_in_batches};
use presswork_tests::{Backend, CancelObservation, Cluster, Verdict, WAIT};
use rand::Rng;

const ITERATIONS: usize = 240;
/// One job per slot of the cluster, so each starts at once.
const BATCH: usize = 8;
/// The job's only slow stage; the cancel delays below straddle it.
const DURATION_MS: u64 = 30;

/// Submits the short job and waits until it runs; returns its id.
async fn start_job(cluster: &Cluster) -> String {
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
    job.id
}

/// How long the job runs here, from when it is seen running to when it is seen finished: the
/// median of one batch run to the end. All four stages count, on this build and under this
/// machine's load (debug binaries, other tests' clusters), so it is longer than DURATION_MS.
async fn measured_length(cluster: &Cluster) -> Duration {
    let mut lengths = join_all((0..BATCH).map(|_| async {
        let id = start_job(cluster).await;
        let started = Instant::now();
        cluster
            .wait_for_job(&id, "finished", WAIT, |j| {
                j.status() == JobStatus::Succeeded
            })
            .await;
        started.elapsed()
    }))
    .await;
    lengths.sort();
    lengths[lengths.len() / 2]
}

/// Starts a short job, waits until it runs, and cancels it after a delay between 0 and about
/// twice the job's `length`: early cancels stop it, late ones find it finished.
async fn race_once(cluster: &Cluster, iteration: usize, length: Duration) -> CancelObservation {
    let id = start_job(cluster).await;
    // Deliberate jitter across the job's end, not synchronisation.
    let step = length * (iteration % 12) as u32 / 6;
    let jitter = rand::rng().random_range(0..2_000);
    tokio::time::sleep(step + Duration::from_micros(jitter)).await;
    cancel_and_observe(cluster, &id, "test: finish race").await
}

async fn finish_races_end_consistently(backend: Backend) {
    let cluster = Cluster::builder()
        .workers(2)
        .capacity(4)
        .backend(backend)
        .start()
        .await;
    let length = measured_length(&cluster).await;
    let began = Instant::now();
    let tally = run_in_batches(&cluster, ITERATIONS, BATCH, |i| {
        race_once(&cluster, i, length)
    })
    .await;
    eprintln!(
        "finish vs cancel on {backend:?}: the job runs {length:.1?}; {} in {:.1?}",
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
