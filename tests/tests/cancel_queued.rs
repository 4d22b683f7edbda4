//! AC-001: cancelling a queued job makes it CANCELLED at once, and it never runs.

use presswork_proto::v1::{CancelOutcome, CancelResolution, Job, JobStatus};
use presswork_tests::{Cluster, ExecutionLog, describe_job};

/// Cancels `job` while it is queued and checks the answer, the state and the log entry that
/// says who cancelled it, when and why.
async fn cancel_while_queued(cluster: &Cluster, job: &Job) {
    let before = cluster.get_job(&job.id).await;
    assert_eq!(
        before.status(),
        JobStatus::Queued,
        "the job must still be queued before the cancel: {}",
        describe_job(&before)
    );
    let reason = "test: no longer needed";
    let answer = cluster
        .cancel(&job.id, reason)
        .await
        .unwrap_or_else(|e| panic!("CancelJob of a queued job failed: {e:?}"));
    assert_eq!(answer.outcome(), CancelOutcome::CancelledWhileQueued);
    let answered = answer.job.expect("CancelJobResponse carries the job");
    assert_eq!(
        answered.status(),
        JobStatus::Cancelled,
        "{}",
        describe_job(&answered)
    );

    let now = cluster.get_job(&job.id).await;
    assert_eq!(now.status(), JobStatus::Cancelled, "{}", describe_job(&now));
    let cancel = now
        .cancel
        .as_ref()
        .expect("a cancelled job records its cancel");
    assert_eq!(cancel.resolution(), CancelResolution::CancelledWhileQueued);
    assert!(
        !cancel.requested_by.is_empty(),
        "who cancelled: {}",
        describe_job(&now)
    );
    assert!(cancel.requested_at_unix_ms > 0, "{}", describe_job(&now));
    assert!(now.finished_at_unix_ms > 0, "{}", describe_job(&now));

    let log = cluster.job_log(&job.id).await;
    let requested = log
        .entry("cancel.requested")
        .unwrap_or_else(|| panic!("no cancel.requested entry:\n{}", log.describe()));
    assert!(!requested.actor.is_empty(), "{}", log.describe());
    assert!(requested.at_unix_ms > 0, "{}", log.describe());
    assert!(
        requested.message.contains(reason),
        "the cancel.requested entry must carry the reason:\n{}",
        log.describe()
    );
    assert_eq!(log.count("job.cancelled"), 1, "{}", log.describe());
}

/// After other jobs ran, the cancelled job is still CANCELLED and nothing of it ever ran.
async fn assert_never_ran(cluster: &Cluster, job_id: &str) {
    let job = cluster.get_job(job_id).await;
    let log = cluster.job_log(job_id).await;
    assert_eq!(job.status(), JobStatus::Cancelled, "{}", describe_job(&job));
    assert_eq!(
        job.attempt,
        0,
        "a cancelled queued job has no attempt: {}",
        describe_job(&job)
    );
    assert!(job.worker_id.is_empty(), "{}", describe_job(&job));
    assert!(job.started_at_unix_ms == 0, "{}", describe_job(&job));
    for event in [
        "job.started",
        "stage.started",
        "cancel.delivered",
        "job.succeeded",
    ] {
        assert!(
            !log.has(event),
            "{event} in the log of a job cancelled while queued:\n{}",
            log.describe()
        );
    }
}

#[tokio::test]
async fn a_job_cancelled_before_any_worker_connects_never_runs() {
    let mut cluster = Cluster::builder().workers(0).start().await;
    let cancelled = cluster
        .submit(
            "demo-slow",
            &[("slow_stage", "ingest"), ("duration_ms", "200")],
        )
        .await;
    cancel_while_queued(&cluster, &cancelled).await;

    cluster.add_worker();
    // A job queued after the cancelled one runs: the worker takes jobs, and passed it over.
    let other = cluster.submit("demo-fast", &[]).await;
    cluster
        .wait_for_status(&other.id, JobStatus::Succeeded)
        .await;
    assert_never_ran(&cluster, &cancelled.id).await;
}

#[tokio::test]
async fn a_job_cancelled_while_every_slot_is_busy_never_runs() {
    let cluster = Cluster::builder().workers(1).capacity(1).start().await;
    // Holds the only slot for a while; it ends by itself so the slot frees without a cancel.
    let blocker = cluster
        .submit(
            "demo-slow",
            &[("slow_stage", "ingest"), ("duration_ms", "6000")],
        )
        .await;
    cluster.wait_until_running(&blocker.id).await;
    let cancelled = cluster.submit("demo-fast", &[]).await;
    let behind = cluster.submit("demo-fast", &[]).await;
    cancel_while_queued(&cluster, &cancelled).await;

    cluster
        .wait_for_status(&blocker.id, JobStatus::Succeeded)
        .await;
    cluster
        .wait_for_status(&behind.id, JobStatus::Succeeded)
        .await;
    assert_never_ran(&cluster, &cancelled.id).await;
}
