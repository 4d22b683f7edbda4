//! Budgets and admission of the job API: what a submit may carry and how fast, and how many
//! watchers are served at once, against a real control plane.

use std::collections::HashMap;
use std::time::Instant;

use futures::StreamExt;
use presswork_proto::v1::job_service_client::JobServiceClient;
use presswork_proto::v1::watch_jobs_response::Kind;
use presswork_proto::v1::{SubmitJobRequest, WatchJobsRequest, WatchJobsResponse};
use presswork_tests::cluster::{Bearer, Client};
use presswork_tests::{Cluster, WAIT};
use tonic::{Code, Status, Streaming};

async fn submit(client: &mut Client, report: &str, params: &[(&str, &str)]) -> Result<(), Status> {
    let params: HashMap<String, String> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    client
        .submit_job(SubmitJobRequest {
            report: report.into(),
            params,
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_names_a_known_report_its_parameters_fit_a_budget_and_users_are_rate_limited() {
    let cluster = Cluster::builder()
        .workers(0)
        .control_plane_args(&["--submit-rate", "5"])
        .start()
        .await;
    let mut ada = cluster.client_as("ada");

    // A report nobody knows would stay queued for ever: NOT_FOUND, naming the known ones.
    let unknown = submit(&mut ada, "nightly-sales", &[]).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(
        unknown.message().contains("nightly-sales") && unknown.message().contains("demo-fast"),
        "{unknown:?}"
    );
    // A parameter the built-in report does not take would only fail the job later.
    let param = submit(&mut ada, "demo-slow", &[("slow_stagee", "generate")])
        .await
        .unwrap_err();
    assert_eq!(param.code(), Code::InvalidArgument, "{param:?}");
    assert!(param.message().contains("slow_stage,"), "{param:?}");
    // Parameters that each fit but together exceed the budget.
    let value = "v".repeat(4000);
    let names: Vec<String> = (0..8).map(|i| format!("source.k{i}")).collect();
    let big: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), value.as_str())).collect();
    let budget = submit(&mut ada, "demo-fast", &big).await.unwrap_err();
    assert_eq!(budget.code(), Code::InvalidArgument, "{budget:?}");
    assert!(budget.message().contains("16384"), "{budget:?}");

    // 5 a second with bursts of 50: a burst runs out well before 1,000 submits.
    let started = Instant::now();
    let mut accepted = 0u32;
    let refused = loop {
        match submit(&mut ada, "demo-fast", &[]).await {
            Ok(()) => accepted += 1,
            Err(status) => break status,
        }
        assert!(accepted < 1000, "1,000 submits in a row were accepted");
    };
    let allowed = 50.0 + 5.0 * started.elapsed().as_secs_f64() + 1.0;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        f64::from(accepted) <= allowed,
        "{accepted} submits accepted, more than the {allowed:.0} the rate allows"
    );
    // Per user: another user still submits.
    submit(&mut cluster.client_as("otto"), "demo-fast", &[])
        .await
        .expect("another user's submits are not limited by ada's");
}

/// Opens WatchJobs from the start (a snapshot) or after a sequence, on a connection of its
/// own, as each dashboard has.
async fn watch(
    cluster: &Cluster,
    after_sequence: u64,
) -> Result<Streaming<WatchJobsResponse>, Status> {
    let channel = tonic::transport::Endpoint::from_shared(cluster.url())
        .expect("the control plane's URL")
        .connect()
        .await
        .expect("connect to the control plane");
    JobServiceClient::with_interceptor(channel, Bearer::token(cluster.token("ada")))
        .watch_jobs(WatchJobsRequest { after_sequence })
        .await
        .map(|response| response.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_are_admitted_within_bounds_and_told_to_retry_beyond_them() {
    let cluster = Cluster::builder()
        .workers(0)
        .control_plane_args(&[
            "--max-watchers",
            "4",
            "--max-snapshot-readers",
            "1",
            "--submit-rate",
            "0",
        ])
        .start()
        .await;
    // A snapshot larger than what the HTTP/2 windows and the stream's buffer hold together.
    const JOBS: usize = 1200;
    let input = "i".repeat(3000);
    let mut ada = cluster.client_as("ada");
    for _ in 0..JOBS {
        submit(&mut ada, "demo-fast", &[("input", input.as_str())])
            .await
            .expect("submit");
    }

    // A watcher that stops reading holds the only snapshot turn...
    let mut slow = watch(&cluster, 0)
        .await
        .expect("the first watcher is admitted");
    let first = tokio::time::timeout(WAIT, slow.next())
        .await
        .expect("a first message");
    assert!(matches!(first, Some(Ok(_))), "{first:?}");
    // ...so the next snapshot is refused as retryable, not failed as INTERNAL.
    let refused = watch(&cluster, 0)
        .await
        .expect_err("a second snapshot reader was admitted");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // Resuming watchers need no snapshot; the fourth stream is the last one admitted.
    let mut resumed = Vec::new();
    for _ in 0..3 {
        resumed.push(watch(&cluster, 1).await.expect("a resuming watcher"));
    }
    let full = watch(&cluster, 1)
        .await
        .expect_err("a fifth stream was admitted");
    assert_eq!(full.code(), Code::Unavailable, "{full:?}");
    assert!(full.message().contains("--max-watchers"), "{full:?}");

    // When the slow watcher leaves, its place and its turn are free again, and a new watcher
    // gets every job.
    drop(slow);
    let mut fresh = None;
    let deadline = Instant::now() + WAIT;
    while fresh.is_none() {
        match watch(&cluster, 0).await {
            Ok(stream) => fresh = Some(stream),
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            Err(status) => panic!("the slow watcher's place was not freed: {status:?}"),
        }
    }
    let mut fresh = fresh.expect("admitted");
    let mut jobs = 0;
    loop {
        let message = tokio::time::timeout(WAIT, fresh.next())
            .await
            .expect("the snapshot kept coming")
            .expect("the stream stays open")
            .expect("no error");
        match message.kind() {
            Kind::Snapshot => jobs += 1,
            Kind::SnapshotComplete => break,
            other => panic!("{other:?} before the snapshot completed"),
        }
    }
    assert_eq!(jobs, JOBS);
}
