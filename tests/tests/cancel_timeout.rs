//! AC-007: a job that ignores its cancel is FAILED once the cancel deadline passes, with a log
//! entry saying the manual cancellation attempt timed out; the worker force-stops it and its
//! slot becomes usable again.

use std::time::Duration;

use presswork_proto::v1::{CancelOutcome, CancelResolution, JobStatus, Stage};
use presswork_tests::{Cluster, ExecutionLog, LONG_WAIT, describe_job};

const TIMED_OUT: &str = "manual cancellation attempt timed out";

#[tokio::test]
async fn an_unresponsive_job_fails_when_its_cancel_times_out() {
    // One slot: the job after the stuck one can only run once the force-stop freed it.
    let cluster = Cluster::builder()
        .workers(1)
        .capacity(1)
        .test_reports()
        .cancel_timeout(Duration::from_secs(1))
        .start()
        .await;
    let job = cluster.submit("demo-stuck", &[]).await;
    // demo-stuck ingests cooperatively first; only its transform stage ignores the cancel.
    cluster
        .wait_for_stage_started(&job.id, Stage::Transform)
        .await;

    cluster
        .cancel_expecting(&job.id, "test: stuck", CancelOutcome::Cancelling)
        .await;

    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Failed, "{report}");
    assert!(!done.error.is_empty(), "a failed job says why: {report}");
    let cancel = done.cancel.as_ref().expect("the cancel is recorded");
    assert_eq!(cancel.resolution(), CancelResolution::TimedOut, "{report}");
    let timeout_ms = cancel.deadline_unix_ms - cancel.requested_at_unix_ms;
    assert!(
        (900..=1100).contains(&timeout_ms),
        "the deadline is --cancel-timeout after the request, got {timeout_ms} ms: {report}"
    );
    // Failed by the deadline, not before it (a few ms for clock rounding).
    assert!(
        done.finished_at_unix_ms + 5 >= cancel.deadline_unix_ms,
        "failed before the deadline: {report}"
    );

    let log = cluster.job_log(&job.id).await;
    let timed_out = log
        .entry("cancel.timed_out")
        .unwrap_or_else(|| panic!("no cancel.timed_out entry: {report}"));
    assert!(timed_out.message.contains(TIMED_OUT), "{report}");
    assert_eq!(log.count("cancel.timed_out"), 1, "{report}");
    assert_eq!(log.terminal_entries().len(), 1, "{report}");
    assert!(log.has("job.failed"), "{report}");
    assert!(
        !log.has("cancel.stopped"),
        "a timed-out cancel did not stop the job: {report}"
    );

    // The worker is still usable: the force-stop freed its only slot.
    let next = cluster.submit("demo-fast", &[]).await;
    let next = cluster
        .wait_for_status(&next.id, JobStatus::Succeeded)
        .await;
    assert_eq!(next.worker_id, done.worker_id, "{}", describe_job(&next));
    // And the failed job stays failed.
    let still = cluster.get_job(&job.id).await;
    assert_eq!(
        still.status(),
        JobStatus::Failed,
        "{}",
        describe_job(&still)
    );
    assert_eq!(still.version, done.version, "{}", describe_job(&still));
}
