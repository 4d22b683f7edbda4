//! Bounded memory: the worker *process* (the real binary, against a scripted control plane)
//! reads a large CSV generated on the fly by a local HTTP server and groups it, and its peak
//! resident memory (VmHWM in /proc) does not grow with the input.
//!
//! The input size is `PRESSWORK_MEMORY_TEST_ROWS` rows of 27 bytes (default 2,000,000: about
//! 52 MiB, some 12 s in a debug build); docs/benchmarks.md records a 1 GB run in release:
//! `PRESSWORK_MEMORY_TEST_ROWS=40000000 cargo test --release -p presswork-worker --test memory -- --nocapture`

mod support;

use std::time::Instant;

use presswork_proto::v1::aggregate::Function;
use presswork_proto::v1::job_finished::Result as Outcome;
use presswork_proto::v1::{Aggregate, Connector, ReportConfig, SortKey, Transformation};
use tokio::net::TcpListener;

use support::http::{GENERATED_HEADER, TestServer, generated_row};
use support::*;

/// Peak and current resident memory of process `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn grouped_report(url: String) -> ReportConfig {
    ReportConfig {
        name: "memory".into(),
        source: Some(Connector {
            kind: "http".into(),
            params: [("url".to_string(), url)].into(),
        }),
        transformation: Some(Transformation {
            group_by: vec!["region".into(), "product".into()],
            aggregates: vec![
                Aggregate {
                    function: Function::Sum as i32,
                    column: "amount".into(),
                    alias: "total".into(),
                },
                Aggregate {
                    function: Function::Count as i32,
                    ..Default::default()
                },
            ],
            sort: vec![SortKey {
                column: "total".into(),
                descending: true,
            }],
            ..Default::default()
        }),
        delivery: Some(Connector {
            kind: "directory".into(),
            params: Default::default(),
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_grouped_input_does_not_grow_the_workers_memory() {
    let rows: u64 = std::env::var("PRESSWORK_MEMORY_TEST_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let input_mib =
        (GENERATED_HEADER.len() as u64 + rows * generated_row(0).len() as u64) as f64 / 1048576.0;

    let http = TestServer::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (_server, mut streams) = serve(listener);
    let output = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_presswork-worker"))
        .arg("--control-plane")
        .arg(format!("http://{addr}"))
        .arg("--output-dir")
        .arg(output.path())
        .arg("--work-dir")
        .arg(work.path())
        // The generating server is on loopback.
        .arg("--allow-hosts")
        .arg("127.0.0.1")
        .env("PRESSWORK_WORKER_TOKEN", "memory-test-worker-token")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker binary");
    let pid = worker.id().expect("a pid");

    let mut stream = tokio::time::timeout(PATIENCE, streams.recv())
        .await
        .expect("the worker connects")
        .expect("the server runs");
    let presswork_proto::v1::connect_request::Msg::Hello(_) = stream.next().await else {
        panic!("the first message must be Hello");
    };
    stream.send(welcome(600_000));

    // A small run first, so everything a job needs once (TLS roots, buffers, fonts) is in.
    stream.send(assign_config(
        "job-small",
        grouped_report(http.url("/generated/20000")),
    ));
    let finished = stream.outcome().await;
    assert!(
        matches!(finished.result, Some(Outcome::Succeeded(_))),
        "{finished:?}"
    );
    let (baseline_peak, baseline_rss) = memory_kib(pid);

    let started = Instant::now();
    stream.send(assign_config(
        "job-large",
        grouped_report(http.url(&format!("/generated/{rows}"))),
    ));
    let finished = stream.outcome().await;
    let elapsed = started.elapsed();
    assert!(
        matches!(finished.result, Some(Outcome::Succeeded(_))),
        "{finished:?}"
    );
    let (peak, rss) = memory_kib(pid);
    let grown_mib = (peak.saturating_sub(baseline_peak)) as f64 / 1024.0;
    eprintln!(
        "input {input_mib:.0} MiB ({rows} rows) in {:.1} s: worker peak RSS {:.1} MiB after a small job, {:.1} MiB after the large one (+{grown_mib:.1} MiB); RSS now {:.1} MiB (was {:.1})",
        elapsed.as_secs_f64(),
        baseline_peak as f64 / 1024.0,
        peak as f64 / 1024.0,
        rss as f64 / 1024.0,
        baseline_rss as f64 / 1024.0,
    );
    // The input would need `input_mib` to hold; the groups need kilobytes. Allocator slack and
    // I/O buffers are a few MiB whatever the input size.
    assert!(
        grown_mib < 32.0 && grown_mib < input_mib / 4.0,
        "the worker's peak memory grew by {grown_mib:.1} MiB reading {input_mib:.0} MiB"
    );

    stream.send(outcome_ack("job-small"));
    stream.send(outcome_ack("job-large"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the worker");
    let status = tokio::time::timeout(PATIENCE, worker.wait())
        .await
        .expect("the worker exits on SIGTERM")
        .expect("reaped");
    assert!(status.success(), "{status}");
}
