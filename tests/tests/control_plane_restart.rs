//! The control plane crashes (SIGKILL) and restarts on the same database and port. Workers
//! reconnect by themselves, cancels in flight still end correctly, and nothing stays stuck.

use std::time::Duration;

use presswork_proto::v1::{CancelOutcome, CancelResolution, JobStatus, Stage};
use presswork_tests::verdict::check_stopped;
use presswork_tests::{Backend, Cluster, ExecutionLog, LONG_WAIT, describe_job};

/// After a restart: nothing unfinished, and a new job runs (so the workers reconnected).
async fn assert_cluster_recovered(cluster: &Cluster) {
    let unfinished = cluster.unfinished_jobs().await;
    assert!(
        unfinished.is_empty(),
        "jobs left unfinished: {unfinished:?}"
    );
    let next = cluster.submit("demo-fast", &[]).await;
    cluster
        .wait_for_status(&next.id, JobStatus::Succeeded)
        .await;
}

/// The cancel of a `demo-slow` job is CANCELLING when the control plane dies: the worker is
/// frozen (SIGSTOP) so it cannot stop the job first. After the restart the worker thaws,
/// reconnects and gets the cancel again from the restarted control plane: the job ends CANCELLED.
async fn a_cancel_in_flight_survives_a_restart(backend: Backend) {
    let mut cluster = Cluster::builder()
        .workers(1)
        .backend(backend)
        .cancel_timeout(Duration::from_secs(15))
        .start()
        .await;
    let job = cluster
        .submit(
            "demo-slow",
            &[("slow_stage", "ingest"), ("duration_ms", "60000")],
        )
        .await;
    cluster.wait_for_stage_started(&job.id, Stage::Ingest).await;

    cluster.pause_worker(0);
    cluster
        .cancel_expecting(
            &job.id,
            "test: cancel across a restart",
            CancelOutcome::Cancelling,
        )
        .await;
    let before = cluster.get_job(&job.id).await;
    assert_eq!(
        before.status(),
        JobStatus::Cancelling,
        "{}",
        describe_job(&before)
    );

    cluster.restart_control_plane().await;
    cluster.resume_worker(0);

    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    let report = cluster.job_report(&job.id).await;
    let log = cluster.job_log(&job.id).await;
    assert_eq!(log.terminal_entries().len(), 1, "{report}");
    assert_eq!(log.count("cancel.requested"), 1, "{report}");
    // The deadline (15 s) is far beyond a restart: the restarted control plane must hand the
    // cancel to the reconnected worker, which stops the job — a timeout here is a lost cancel.
    assert_eq!(done.status(), JobStatus::Cancelled, "{report}");
    check_stopped(&done, &log).unwrap_or_else(|why| panic!("{why}\n{report}"));
    assert_cluster_recovered(&cluster).await;
}

#[tokio::test]
async fn a_cancel_in_flight_survives_a_restart_on_sqlite() {
    a_cancel_in_flight_survives_a_restart(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_cancel_in_flight_survives_a_restart_on_postgres() {
    a_cancel_in_flight_survives_a_restart(Backend::Postgres).await;
}

/// `demo-stuck` ignores its cancel; the control plane restarts before the deadline. The
/// restarted control plane still fails the job at the deadline, with the timed-out entry,
/// and force-stops it: the worker's only slot is usable again.
#[tokio::test]
async fn a_cancel_deadline_is_kept_across_a_restart() {
    let mut cluster = Cluster::builder()
        .workers(1)
        .capacity(1)
        .test_reports()
        .cancel_timeout(Duration::from_secs(2))
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
            "test: stuck across a restart",
            CancelOutcome::Cancelling,
        )
        .await;

    cluster.restart_control_plane().await;

    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Failed, "{report}");
    assert_eq!(
        done.cancel.as_ref().map(|c| c.resolution()),
        Some(CancelResolution::TimedOut),
        "{report}"
    );
    let log = cluster.job_log(&job.id).await;
    let timed_out = log
        .entry("cancel.timed_out")
        .unwrap_or_else(|| panic!("no cancel.timed_out entry: {report}"));
    assert!(
        timed_out
            .message
            .contains("manual cancellation attempt timed out"),
        "{report}"
    );
    assert_eq!(log.terminal_entries().len(), 1, "{report}");
    assert_cluster_recovered(&cluster).await;
}

/// A job that runs through the restart finishes normally: its worker reports the outcome to
/// the new control plane, once.
#[tokio::test]
async fn a_running_job_finishes_across_a_restart() {
    let mut cluster = Cluster::builder().workers(1).start().await;
    let job = cluster
        .submit(
            "demo-slow",
            &[("slow_stage", "ingest"), ("duration_ms", "3000")],
        )
        .await;
    cluster.wait_for_stage_started(&job.id, Stage::Ingest).await;

    cluster.restart_control_plane().await;

    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{report}");
    let log = cluster.job_log(&job.id).await;
    assert_eq!(log.count("job.succeeded"), 1, "{report}");
    assert_eq!(log.terminal_entries().len(), 1, "{report}");
    assert_cluster_recovered(&cluster).await;
}
