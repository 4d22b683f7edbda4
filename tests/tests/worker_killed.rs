//! A worker that vanishes (SIGKILL) mid-job: once its lease runs out its jobs are FAILED with
//! "worker lost", nothing stays unfinished, and the restarted worker takes jobs again.

use std::time::Duration;

use presswork_proto::v1::{CancelOutcome, CancelResolution, JobStatus, Stage};
use presswork_tests::{Cluster, ExecutionLog, LONG_WAIT, describe_job};

const LEASE: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_killed_workers_running_job_fails_as_worker_lost() {
    let mut cluster = Cluster::builder()
        .workers(1)
        .worker_lease(LEASE)
        .start()
        .await;
    let job = cluster
        .submit(
            "demo-slow",
            &[("slow_stage", "transform"), ("duration_ms", "60000")],
        )
        .await;
    cluster
        .wait_for_stage_started(&job.id, Stage::Transform)
        .await;

    cluster.kill_worker(0);
    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Failed, "{report}");
    assert!(done.error.contains("worker lost"), "{report}");
    let log = cluster.job_log(&job.id).await;
    assert_eq!(log.terminal_entries().len(), 1, "{report}");
    assert!(log.has("job.failed"), "{report}");
    let unfinished = cluster.unfinished_jobs().await;
    assert!(
        unfinished.is_empty(),
        "jobs left unfinished: {unfinished:?}"
    );

    cluster.restart_worker(0);
    let next = cluster.submit("demo-fast", &[]).await;
    let next = cluster
        .wait_for_status(&next.id, JobStatus::Succeeded)
        .await;
    assert!(!next.worker_id.is_empty(), "{}", describe_job(&next));
    // The lost job stays failed after its worker came back.
    let still = cluster.get_job(&job.id).await;
    assert_eq!(
        (still.status(), still.version),
        (done.status(), done.version),
        "{}",
        describe_job(&still)
    );
}

/// A job whose cancel is in flight when its worker vanishes: FAILED as worker lost, with the
/// cancel's resolution saying so.
#[tokio::test]
async fn a_killed_workers_cancelling_job_fails_as_worker_lost() {
    let mut cluster = Cluster::builder()
        .workers(1)
        .worker_lease(LEASE)
        .test_reports()
        // Far beyond the lease: the loss of the worker must end the job, not the deadline.
        .cancel_timeout(Duration::from_secs(120))
        .start()
        .await;
    let job = cluster.submit("demo-stuck", &[]).await;
    // demo-stuck ingests cooperatively first; only its transform stage ignores the cancel.
    cluster
        .wait_for_stage_started(&job.id, Stage::Transform)
        .await;
    cluster
        .cancel_expecting(
            &job.id,
            "test: cancel then lose the worker",
            CancelOutcome::Cancelling,
        )
        .await;

    cluster.kill_worker(0);
    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Failed, "{report}");
    assert!(done.error.contains("worker lost"), "{report}");
    assert_eq!(
        done.cancel.as_ref().map(|c| c.resolution()),
        Some(CancelResolution::WorkerLost),
        "{report}"
    );
    let log = cluster.job_log(&job.id).await;
    assert_eq!(log.terminal_entries().len(), 1, "{report}");
    assert!(!log.has("cancel.timed_out"), "{report}");
    assert!(cluster.unfinished_jobs().await.is_empty(), "{report}");

    cluster.restart_worker(0);
    let next = cluster.submit("demo-fast", &[]).await;
    cluster
        .wait_for_status(&next.id, JobStatus::Succeeded)
        .await;
}
