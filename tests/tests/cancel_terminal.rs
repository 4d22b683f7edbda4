//! BR-002: only QUEUED and RUNNING jobs can be cancelled. A terminal job's cancel is refused
//! with FAILED_PRECONDITION and changes nothing; unknown and malformed ids are told apart.

use presswork_proto::v1::{CancelOutcome, Job, JobStatus};
use presswork_tests::verdict::says_not_cancellable;
use presswork_tests::{Cluster, ExecutionLog, NOT_CANCELLABLE, describe_job};

/// Cancels a terminal job and checks it is refused and left exactly as it was.
async fn assert_cancel_refused(cluster: &Cluster, job: &Job) {
    let before = cluster.get_job(&job.id).await;
    let log_before = cluster.job_log(&job.id).await;
    assert!(before.status().is_terminal(), "{}", describe_job(&before));

    let refused = cluster
        .cancel(&job.id, "test: too late")
        .await
        .expect_err("cancelling a terminal job must fail");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        says_not_cancellable(refused.message()),
        "the message must say {NOT_CANCELLABLE:?}: {refused:?}"
    );

    let after = cluster.get_job(&job.id).await;
    assert_eq!(after.status(), before.status(), "{}", describe_job(&after));
    assert_eq!(
        after.version, before.version,
        "a refused cancel must not change the job"
    );
    assert_eq!(after.cancel, before.cancel, "{}", describe_job(&after));
    let log_after = cluster.job_log(&job.id).await;
    assert_eq!(
        log_after.count("cancel.requested"),
        log_before.count("cancel.requested"),
        "a refused cancel is not a cancel request:\n{}",
        log_after.describe()
    );
}

#[tokio::test]
async fn cancelling_a_finished_job_is_refused() {
    let mut cluster = Cluster::builder().workers(0).start().await;
    // CANCELLED (while queued: no worker yet).
    let cancelled = cluster.submit("demo-fast", &[]).await;
    let answer = cluster
        .cancel(&cancelled.id, "test")
        .await
        .expect("cancel a queued job");
    assert_eq!(answer.outcome(), CancelOutcome::CancelledWhileQueued);
    assert_cancel_refused(&cluster, &cancelled).await;

    cluster.add_worker();
    let succeeded = cluster.submit("demo-fast", &[]).await;
    cluster
        .wait_for_status(&succeeded.id, JobStatus::Succeeded)
        .await;
    assert_cancel_refused(&cluster, &succeeded).await;

    let failed = cluster
        .submit("demo-fast", &[("fail_stage", "transform")])
        .await;
    let failed_now = cluster.wait_for_status(&failed.id, JobStatus::Failed).await;
    assert!(
        !failed_now.error.is_empty(),
        "{}",
        describe_job(&failed_now)
    );
    assert_cancel_refused(&cluster, &failed).await;
}

#[tokio::test]
async fn cancelling_an_unknown_or_malformed_id_is_an_error() {
    let cluster = Cluster::builder().workers(0).start().await;
    let real = cluster.submit("demo-fast", &[]).await;

    // Same shape as a real id, one character different: well formed but unknown.
    let mut unknown = real.id.clone();
    let last = unknown.pop().expect("job ids are not empty");
    unknown.push(if last == '0' { '1' } else { '0' });
    let missing = cluster.cancel(&unknown, "").await.expect_err("unknown id");
    assert_eq!(
        missing.code(),
        tonic::Code::NotFound,
        "{unknown}: {missing:?}"
    );

    for malformed in ["not a job id!", "", "../../etc/passwd"] {
        let invalid = cluster
            .cancel(malformed, "")
            .await
            .expect_err("malformed id");
        assert_eq!(
            invalid.code(),
            tonic::Code::InvalidArgument,
            "{malformed:?}: {invalid:?}"
        );
    }
    // None of that touched the real job.
    let still = cluster.get_job(&real.id).await;
    assert_eq!(
        still.status(),
        JobStatus::Queued,
        "{}",
        describe_job(&still)
    );
}
