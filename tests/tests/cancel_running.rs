//! AC-002: cancelling a running job answers CANCELLING at once, and the worker stops it in the
//! stage it was in — each of the four — leaving no work directory and no partial output; the
//! cancel's milestones are recorded in order. A repeated cancel is idempotent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use presswork_proto::v1::{CancelOutcome, CancelResolution, JobStatus, Stage};
use presswork_tests::verdict::check_stopped;
use presswork_tests::{Cluster, ExecutionLog, LONG_WAIT, WAIT, describe_job};

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

async fn cancel_in_stage(stage: Stage) {
    let cluster = Cluster::builder().workers(1).start().await;
    let job = cluster
        .submit(
            "demo-slow",
            &[("slow_stage", stage.short_name()), ("duration_ms", "60000")],
        )
        .await;
    cluster.wait_for_stage_started(&job.id, stage).await;

    let reason = format!("test: stop during {}", stage.short_name());
    let answer = cluster
        .cancel(&job.id, &reason)
        .await
        .unwrap_or_else(|e| panic!("CancelJob of a running job failed: {e:?}"));
    assert_eq!(
        answer.outcome(),
        CancelOutcome::Cancelling,
        "{}",
        answer.message
    );
    let answered = answer.job.expect("CancelJobResponse carries the job");
    assert_eq!(
        answered.status(),
        JobStatus::Cancelling,
        "{}",
        describe_job(&answered)
    );
    let first_request = answered
        .cancel
        .as_ref()
        .expect("a cancelling job records its cancel");
    assert!(
        !first_request.requested_by.is_empty(),
        "{}",
        describe_job(&answered)
    );

    // A second cancel changes nothing: ALREADY_CANCELLING while the stop is in flight, or
    // the job's own answer if the worker was faster than this call.
    match cluster.cancel(&job.id, "test: again").await {
        Ok(again) => {
            assert_eq!(
                again.outcome(),
                CancelOutcome::AlreadyCancelling,
                "{}",
                again.message
            );
            let again = again.job.expect("CancelJobResponse carries the job");
            let cancel = again.cancel.expect("the cancel is kept");
            assert_eq!(
                cancel.requested_at_unix_ms,
                first_request.requested_at_unix_ms
            );
            assert_eq!(cancel.reason, first_request.reason);
        }
        Err(refused) => {
            assert_eq!(
                refused.code(),
                tonic::Code::FailedPrecondition,
                "{refused:?}"
            );
            let now = cluster.get_job(&job.id).await;
            assert_eq!(now.status(), JobStatus::Cancelled, "{}", describe_job(&now));
        }
    }

    let done = cluster.wait_for_terminal(&job.id, WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Cancelled, "{report}");
    let log = cluster.job_log(&job.id).await;
    check_stopped(&done, &log).unwrap_or_else(|why| panic!("{why}\n{report}"));
    let cancel = done
        .cancel
        .as_ref()
        .expect("a cancelled job records its cancel");
    assert_eq!(cancel.stopped_stage(), stage, "{}", describe_job(&done));
    assert!(
        cancel.stop_duration_us > 0 && cancel.stop_duration_us < 1_000_000,
        "the stage must stop within 1 s of the cancel reaching it: {}",
        describe_job(&done)
    );
    assert_eq!(cancel.reason, reason);
    let stopped = log.entry("cancel.stopped").expect("checked above");
    assert_eq!(stopped.stage(), stage, "{}", log.describe());
    assert_eq!(log.count("cancel.requested"), 1, "{}", log.describe());
    let requested = log.entry("cancel.requested").expect("checked above");
    assert!(requested.message.contains(&reason), "{}", log.describe());
    assert!(!requested.actor.is_empty(), "{}", log.describe());
    // Nothing ran after the stage that was stopped.
    let later_stages = log
        .iter()
        .filter(|e| e.event == "stage.started" && e.stage() as i32 > stage as i32)
        .count();
    assert_eq!(later_stages, 0, "{}", log.describe());
    assert!(done.output.is_empty(), "{}", describe_job(&done));

    // Nothing of the cancelled job was delivered, and its private work directory is gone.
    let output_dir = cluster.output_dir(0);
    let delivered: Vec<PathBuf> = files_under(&output_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&job.id))
        .collect();
    assert!(
        delivered.is_empty(),
        "a cancelled job delivered {delivered:?}"
    );
    let work_dir = cluster.work_dir(0);
    let leftovers: Vec<PathBuf> = std::fs::read_dir(&work_dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "work directories left behind: {leftovers:?}"
    );
    // The same directory does receive the output of a job that runs to the end.
    let fast = cluster.submit("demo-fast", &[]).await;
    let fast = cluster
        .wait_for_status(&fast.id, JobStatus::Succeeded)
        .await;
    assert!(
        Path::new(&fast.output).starts_with(&output_dir) && Path::new(&fast.output).is_file(),
        "a succeeded job's output should be a file in {}: {}",
        output_dir.display(),
        describe_job(&fast)
    );
}

#[tokio::test]
async fn cancel_during_ingest_stops_in_ingest() {
    cancel_in_stage(Stage::Ingest).await;
}

#[tokio::test]
async fn cancel_during_transform_stops_in_transform() {
    cancel_in_stage(Stage::Transform).await;
}

#[tokio::test]
async fn cancel_during_generate_stops_in_generate() {
    cancel_in_stage(Stage::Generate).await;
}

/// Before the report is published: nothing partial is left in the output directory (the
/// stage's own test, `deliver::a_cancel_during_the_copy_leaves_no_file_behind`, cancels in the
/// middle of the copy).
#[tokio::test]
async fn cancel_during_deliver_stops_in_deliver() {
    cancel_in_stage(Stage::Deliver).await;
}

/// `demo-stuck` ignores its cancel, so the job stays CANCELLING until the deadline: every
/// cancel but the first, sent all at once, is ALREADY_CANCELLING and records nothing new.
#[tokio::test]
async fn concurrent_cancels_of_a_cancelling_job_are_idempotent() {
    let cluster = Cluster::builder()
        .workers(1)
        .test_reports()
        .cancel_timeout(Duration::from_secs(5))
        .start()
        .await;
    let job = cluster.submit("demo-stuck", &[]).await;
    // demo-stuck ingests cooperatively first; only its transform stage ignores the cancel.
    cluster
        .wait_for_stage_started(&job.id, Stage::Transform)
        .await;

    let answers = futures::future::join_all(
        (0..10).map(|i| cluster.cancel(&job.id, if i == 0 { "first" } else { "again" })),
    )
    .await;
    let outcomes: Vec<CancelOutcome> = answers
        .iter()
        .map(|a| {
            a.as_ref()
                .unwrap_or_else(|e| panic!("CancelJob failed: {e:?}"))
                .outcome()
        })
        .collect();
    let cancelling = outcomes
        .iter()
        .filter(|o| **o == CancelOutcome::Cancelling)
        .count();
    let already = outcomes
        .iter()
        .filter(|o| **o == CancelOutcome::AlreadyCancelling)
        .count();
    assert_eq!((cancelling, already), (1, 9), "outcomes: {outcomes:?}");
    let requested_at: Vec<i64> = answers
        .iter()
        .flatten()
        .map(|a| {
            a.job
                .as_ref()
                .and_then(|j| j.cancel.as_ref())
                .map_or(0, |c| c.requested_at_unix_ms)
        })
        .collect();
    assert!(
        requested_at.iter().all(|t| *t > 0 && *t == requested_at[0]),
        "every answer shows the one cancel: {requested_at:?}"
    );

    let log = cluster.job_log(&job.id).await;
    assert_eq!(log.count("cancel.requested"), 1, "{}", log.describe());
    let now = cluster.get_job(&job.id).await;
    assert_eq!(
        now.status(),
        JobStatus::Cancelling,
        "{}",
        describe_job(&now)
    );
    assert_eq!(
        now.cancel.as_ref().map(|c| c.resolution()),
        Some(CancelResolution::Pending),
        "{}",
        describe_job(&now)
    );
    // It ends by the deadline (see cancel_timeout.rs for what that means in full).
    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    assert_eq!(done.status(), JobStatus::Failed, "{}", describe_job(&done));
}
