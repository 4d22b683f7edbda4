//! The worker against a scripted control plane (see `support`): reconnects, cancels, fencing
//! and shutdown.

mod support;

use std::path::Path;
use std::time::Duration;

use presswork_proto::v1::Stage;
use presswork_proto::v1::connect_request::Msg;
use presswork_proto::v1::job_finished::Result as Outcome;

use support::*;

#[tokio::test]
async fn outcomes_are_resent_after_a_reconnect_until_acknowledged() {
    let mut h = start(false).await;
    let (stream, hello) = h.next_stream().await;
    assert_eq!(hello.capacity, 2);
    assert_eq!(hello.reports, vec!["demo-fast", "demo-slow"]);
    assert!(hello.known.is_empty());
    assert!(!hello.worker_id.is_empty());
    let mut stream = stream;
    stream.send(welcome(10_000));
    stream.send(assign("job-1", "demo-fast", &[]));

    let finished = stream.outcome().await;
    let Some(Outcome::Succeeded(done)) = finished.result else {
        panic!("expected success, got {finished:?}");
    };
    assert_eq!(Path::new(&done.output), h.output.path().join("job-1.pdf"));
    assert!(
        std::fs::read(&done.output)
            .expect("the report")
            .starts_with(b"%PDF")
    );

    // The control plane goes away before acknowledging: the worker reconnects, says it still
    // knows job-1, and sends its outcome again.
    drop(stream);
    let (mut stream, hello) = h.next_stream().await;
    assert_eq!(hello.known, vec![attempt("job-1")]);
    let Msg::Finished(again) = stream.next().await else {
        panic!("the unacknowledged outcome comes right after Hello");
    };
    assert_eq!(again.job, Some(attempt("job-1")));
    stream.send(welcome(10_000));
    stream.send(outcome_ack("job-1"));
    // Heartbeats flow at the welcomed interval (and are answered by `next`).
    let heartbeat = tokio::time::timeout(PATIENCE, stream.inbound.message())
        .await
        .expect("a heartbeat")
        .expect("healthy")
        .expect("open");
    assert!(matches!(heartbeat.msg, Some(Msg::Heartbeat(_))));

    drop(stream);
    let (_stream, hello) = h.next_stream().await;
    assert!(hello.known.is_empty(), "acknowledged: {:?}", hello.known);
    h.stop().await;
}

#[tokio::test]
async fn cancels_stop_running_jobs_and_jobs_not_yet_assigned() {
    let mut h = start(false).await;
    let (mut stream, _) = h.next_stream().await;
    stream.send(welcome(10_000));

    // A cancel that overtakes its assignment: the job never runs a stage.
    stream.send(cancel("job-early"));
    stream.send(assign("job-early", "demo-fast", &[]));
    let Msg::CancelAck(ack) = stream.next().await else {
        panic!("expected the cancel to be acknowledged");
    };
    assert_eq!(ack.stage, Stage::Unspecified as i32);
    let Msg::Finished(finished) = stream.next().await else {
        panic!("expected the outcome right after the ack");
    };
    let Some(Outcome::Cancelled(cancelled)) = finished.result else {
        panic!("expected a cancel, got {finished:?}");
    };
    assert_eq!(cancelled.stage, Stage::Unspecified as i32);
    assert_eq!(cancelled.reason, "not needed any more");

    // A running job: acknowledged in its stage, then stopped there.
    stream.send(assign(
        "job-slow",
        "demo-slow",
        &[("slow_stage", "generate")],
    ));
    stream.until_stage(Stage::Generate).await;
    stream.send(cancel("job-slow"));
    let ack = loop {
        if let Msg::CancelAck(ack) = stream.next().await {
            break ack;
        }
    };
    assert_eq!(ack.stage, Stage::Generate as i32);
    assert!(!ack.past_point_of_no_return);
    let finished = stream.outcome().await;
    let Some(Outcome::Cancelled(cancelled)) = finished.result else {
        panic!("expected a cancel, got {finished:?}");
    };
    assert_eq!(cancelled.stage, Stage::Generate as i32);
    assert!(!cancelled.forced);
    assert!(
        is_empty(h.output.path()),
        "a cancelled job delivers nothing"
    );
    assert!(is_empty(h.work.path()), "work directories are removed");
    stream.send(outcome_ack("job-early"));
    stream.send(outcome_ack("job-slow"));
    h.stop().await;
}

#[tokio::test]
async fn a_worker_cut_off_past_its_lease_cancels_its_jobs() {
    let mut h = start(false).await;
    let (mut stream, _) = h.next_stream().await;
    stream.send(welcome(300));
    stream.send(assign("job-f", "demo-slow", &[]));
    stream.until_stage(Stage::Ingest).await;

    // The control plane disappears until the job is fenced, then is back on the same
    // address: the worker reports the fenced job's outcome.
    let (mut stream, hello) = h
        .away_until_work_is_gone(stream, "the job was not fenced")
        .await;
    assert_eq!(hello.known, vec![attempt("job-f")]);
    let finished = stream.outcome().await;
    let Some(Outcome::Cancelled(cancelled)) = finished.result else {
        panic!("expected a cancel, got {finished:?}");
    };
    assert_eq!(cancelled.stage, Stage::Ingest as i32);
    assert_eq!(
        cancelled.reason,
        "lease lost: no contact with the control plane for 0.3 s"
    );
    assert!(cancelled.fenced && !cancelled.forced);
    stream.send(outcome_ack("job-f"));
    h.stop().await;
}

#[tokio::test]
async fn a_fenced_job_that_ignores_its_token_is_aborted_half_a_lease_later() {
    let mut h = start(true).await;
    let (mut stream, _) = h.next_stream().await;
    stream.send(welcome(400));
    stream.send(assign(
        "job-s",
        "demo-stuck",
        &[("stuck_stage", "ingest"), ("stuck_ms", "600000")],
    ));
    stream.until_stage(Stage::Ingest).await;

    // Fenced after 0.4 s, aborted 0.2 s later: its work directory goes with it.
    let (mut stream, _) = h
        .away_until_work_is_gone(stream, "the stuck fenced job was not aborted")
        .await;
    let finished = stream.outcome().await;
    let Some(Outcome::Cancelled(cancelled)) = finished.result else {
        panic!("expected a cancel, got {finished:?}");
    };
    assert!(cancelled.fenced && cancelled.forced, "{cancelled:?}");
    assert_eq!(
        cancelled.reason,
        "lease lost: no contact with the control plane for 0.4 s"
    );
    stream.send(outcome_ack("job-s"));
    h.stop().await;
}

#[tokio::test]
async fn shutdown_cancels_running_jobs_and_exits_once_their_outcomes_are_acknowledged() {
    let mut h = start(true).await;
    let (mut stream, hello) = h.next_stream().await;
    assert!(hello.reports.contains(&"demo-stuck".to_string()));
    stream.send(welcome(10_000));
    stream.send(assign("job-s", "demo-slow", &[]));
    stream.until_stage(Stage::Ingest).await;

    let asked = tokio::time::Instant::now();
    h.shutdown.cancel();
    let finished = stream.outcome().await;
    let Some(Outcome::Cancelled(cancelled)) = finished.result else {
        panic!("expected a cancel, got {finished:?}");
    };
    assert_eq!(cancelled.reason, "worker shutting down");
    stream.send(outcome_ack("job-s"));
    let result = tokio::time::timeout(PATIENCE, h.worker)
        .await
        .expect("the worker stops")
        .expect("the worker task ends");
    result.expect("the worker exits cleanly");
    // It left as soon as the outcome was acknowledged, well before the 5 s drain limit.
    assert!(asked.elapsed() < Duration::from_secs(4));
    h.server.abort();
}
