//! What an operator's parameters can make a worker read: a demo report's `input=` on an
//! endless file (`/dev/zero`, one line without end) fails its job at the 1 MiB line limit
//! while the worker stays up with its memory bounded (before, it grew ~250 MB/s until it
//! aborted); `input=` outside the worker's `--data-dir` is refused.

use presswork_proto::v1::JobStatus;
use presswork_tests::{Cluster, LONG_WAIT, describe_job};

/// The resident memory of process `pid`, in KiB (`VmRSS` in `/proc/<pid>/status`).
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("the worker (pid {pid}) is gone: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test]
async fn an_endless_input_fails_its_job_and_the_worker_stays_up() {
    let cluster = Cluster::builder()
        .workers(1)
        .closed_reach()
        .worker_args(&["--data-dir", "/dev"])
        .start()
        .await;
    let worker = cluster.worker_pid(0);

    let job = cluster.submit("demo-fast", &[("input", "/dev/zero")]).await;
    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Failed, "{report}");
    assert!(
        done.error
            .contains("cannot read /dev/zero: line 1 is longer than the 1 MiB limit"),
        "{report}"
    );
    let rss = rss_kib(worker);
    assert!(rss < 256 * 1024, "the worker holds {rss} KiB after the job");

    for (input, expected) in [
        ("../x", "contains `..`"),
        (
            "/etc/passwd",
            "is outside the directories this worker allows",
        ),
    ] {
        let job = cluster.submit("demo-fast", &[("input", input)]).await;
        let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
        assert_eq!(done.status(), JobStatus::Failed, "{}", describe_job(&done));
        assert!(done.error.contains(expected), "{input}: {}", done.error);
    }

    // The same worker process runs the next job.
    let next = cluster.submit("demo-fast", &[]).await;
    let next = cluster
        .wait_for_status(&next.id, JobStatus::Succeeded)
        .await;
    assert_eq!(cluster.worker_pid(0), worker, "{}", describe_job(&next));
    rss_kib(worker);
}

#[tokio::test]
async fn input_is_refused_without_a_data_directory() {
    let cluster = Cluster::builder().workers(1).closed_reach().start().await;
    let job = cluster
        .submit("demo-fast", &[("input", "/etc/passwd")])
        .await;
    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    assert_eq!(done.status(), JobStatus::Failed, "{}", describe_job(&done));
    assert!(
        done.error
            .contains("parameter input is refused: this worker has no data directory"),
        "{}",
        done.error
    );
    assert!(!done.error.contains("root:"), "{}", done.error);
}
