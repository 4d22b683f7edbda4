//! A worker cut off by a network partition. The worker runs in a network namespace of its own
//! and reaches the control plane over a veth pair; the test takes the host's end down while a
//! job runs, so both sides' packets vanish without an answer. Then:
//! - the worker fences itself: after a lease without contact it cancels the job, and the job's
//!   code stops (its timeline, written by the job itself, says so);
//! - the control plane settles the job by its `--on-worker-lost` policy: FAILED "worker lost",
//!   or QUEUED again and run by another worker as attempt 2, after the old one stopped; when
//!   the link heals between the fencing and the second lease, the worker's own report of the
//!   fencing requeues the job;
//! - once the link is back the worker reconnects and re-sends the old attempt's outcome, which
//!   is acknowledged (so it stops re-sending) and never applied: the job's final state and its
//!   execution log stay as they were.
//!
//! Needs root for `ip netns` (CI runs as root); without it the test fails saying so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use presswork_proto::v1::{Job, JobStatus, LogEntry, Stage};
use presswork_tests::system::wait_until;
use presswork_tests::{Backend, Cluster, ExecutionLog, LONG_WAIT, NetworkNamespace, describe_job};

/// Short, so the test is quick, but long enough that a loaded 2-core machine still heartbeats
/// in time (workers heartbeat every quarter lease).
const LEASE: Duration = Duration::from_secs(2);
/// How long the partitioned job would run if nothing stopped it: far beyond the fencing (one
/// lease after the cut), so a job that "finished" would show the fencing did not happen.
const HOLD_MS: &str = "10000";
/// For the partition healed between the worker's fencing (one lease) and the control plane's
/// requeue (two leases): long enough that the worker, reconnecting after the heal (a TCP SYN
/// retry or a new connection attempt: up to ~2.5 s), reports the fencing before the second
/// lease runs out, with a second to spare.
const SHORT_PARTITION_LEASE: Duration = Duration::from_secs(5);

/// One line of a test report's timeline: `<event> <monotonic ns> [detail]`.
#[derive(Debug, Clone, PartialEq)]
struct Mark {
    event: String,
    at_ns: u64,
}

fn timeline_path(cluster: &Cluster, worker: usize, job_id: &str, attempt: u32) -> PathBuf {
    cluster
        .output_dir(worker)
        .join(format!("{job_id}-{attempt}.timeline"))
}

fn read_timeline(path: &Path) -> Vec<Mark> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let event = parts.next()?.to_owned();
            let at_ns = parts.next()?.parse().ok()?;
            Some(Mark { event, at_ns })
        })
        .collect()
}

fn ended(marks: &[Mark]) -> bool {
    marks
        .iter()
        .any(|m| matches!(m.event.as_str(), "stopped" | "finished" | "failed"))
}

fn at(marks: &[Mark], event: &str) -> u64 {
    let found: Vec<&Mark> = marks.iter().filter(|m| m.event == event).collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one `{event}` in the timeline: {marks:?}"
    );
    found[0].at_ns
}

/// Waits until the job's code for `attempt` on `worker` has ended, and returns its timeline.
async fn wait_for_code_to_end(
    cluster: &Cluster,
    worker: usize,
    job_id: &str,
    attempt: u32,
) -> Vec<Mark> {
    let path = timeline_path(cluster, worker, job_id, attempt);
    wait_until(
        &format!("the end of attempt {attempt}'s code in {}", path.display()),
        LONG_WAIT,
        || ended(&read_timeline(&path)),
        || {
            format!(
                "timeline so far: {:?}\nworker log: {}",
                read_timeline(&path),
                cluster.worker_log(worker).display()
            )
        },
    )
    .await;
    read_timeline(&path)
}

/// The worker's log, without terminal colours.
fn worker_log_text(cluster: &Cluster, worker: usize) -> String {
    let raw = std::fs::read_to_string(cluster.worker_log(worker)).unwrap_or_default();
    let mut text = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip an escape sequence up to its final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            text.push(c);
        }
    }
    text
}

/// Waits until the worker logged that the control plane acknowledged `attempt`'s outcome (the
/// worker started in a namespace logs its executor at debug level): it stops re-sending it.
async fn wait_for_outcome_acknowledged(
    cluster: &Cluster,
    worker: usize,
    job_id: &str,
    attempt: u32,
) {
    let attempt_field = format!("attempt={attempt}");
    wait_until(
        &format!("the acknowledgement of attempt {attempt}'s outcome, after the link healed"),
        LONG_WAIT,
        || {
            worker_log_text(cluster, worker).lines().any(|line| {
                line.contains("outcome acknowledged")
                    && line.contains(job_id)
                    && line.contains(&attempt_field)
            })
        },
        || {
            format!(
                "see the worker's log {}",
                cluster.worker_log(worker).display()
            )
        },
    )
    .await;
}

/// The job's state and log now, for comparing with later.
async fn settled(cluster: &Cluster, job_id: &str) -> (Job, Vec<LogEntry>) {
    (cluster.get_job(job_id).await, cluster.job_log(job_id).await)
}

fn assert_unchanged(before: &(Job, Vec<LogEntry>), after: &(Job, Vec<LogEntry>), what: &str) {
    assert_eq!(
        (
            after.0.status(),
            after.0.version,
            after.0.attempt,
            &after.0.error
        ),
        (
            before.0.status(),
            before.0.version,
            before.0.attempt,
            &before.0.error
        ),
        "{what}: the job changed\n  before: {}\n  after:  {}",
        describe_job(&before.0),
        describe_job(&after.0)
    );
    assert_eq!(
        after.1,
        before.1,
        "{what}: the execution log changed\n  before:\n{}\n  after:\n{}",
        before.1.describe(),
        after.1.describe()
    );
}

/// A new job runs on the worker `worker_id`, which was cut off and is back.
async fn the_healed_worker_takes_jobs_again(cluster: &Cluster, worker_id: &str) {
    let next = cluster.submit("demo-fast", &[]).await;
    let next = cluster
        .wait_for_status(&next.id, JobStatus::Succeeded)
        .await;
    assert_eq!(
        next.worker_id,
        worker_id,
        "the healed worker takes jobs again: {}",
        describe_job(&next)
    );
}

/// Starts a cluster without workers on `backend`, then one worker inside `netns`, and waits
/// until that worker takes jobs; returns the cluster and the worker's index.
async fn cluster_with_partitionable_worker(
    netns: &NetworkNamespace,
    backend: Backend,
    lease: Duration,
    control_plane_args: &[&str],
) -> (Cluster, usize) {
    let mut cluster = Cluster::builder()
        .workers(0)
        .worker_lease(lease)
        .test_reports()
        .backend(backend)
        .listen_on_all_addresses()
        .control_plane_args(control_plane_args)
        .start()
        .await;
    let worker = cluster.add_worker_in(netns);
    cluster.wait_for_workers().await;
    (cluster, worker)
}

/// Submits a job that holds its slot until cancelled and waits until its code runs.
async fn start_blocker(cluster: &Cluster) -> Job {
    let job = cluster.submit("blocker", &[("hold_ms", HOLD_MS)]).await;
    cluster.wait_for_stage_started(&job.id, Stage::Ingest).await;
    let running = cluster.get_job(&job.id).await;
    assert_eq!(
        (running.status(), running.attempt),
        (JobStatus::Running, 1),
        "{}",
        describe_job(&running)
    );
    running
}

async fn partition_under_fail_policy(backend: Backend) {
    let netns = NetworkNamespace::create();
    let (cluster, worker) = cluster_with_partitionable_worker(&netns, backend, LEASE, &[]).await;
    let running = start_blocker(&cluster).await;

    netns.cut();
    // The worker fences: its job's code stops although nobody could tell it to.
    let fenced = wait_for_code_to_end(&cluster, worker, &running.id, 1).await;
    assert!(
        fenced.iter().any(|m| m.event == "stopped"),
        "the partitioned attempt must be stopped by fencing, not run to its end: {fenced:?}"
    );
    // The control plane calls the worker lost and fails the job.
    let done = cluster.wait_for_terminal(&running.id, LONG_WAIT).await;
    let report = cluster.job_report(&running.id).await;
    assert_eq!(done.status(), JobStatus::Failed, "{report}");
    assert!(done.error.starts_with("worker lost: "), "{report}");
    assert_eq!(done.attempt, 1, "{report}");
    let before = settled(&cluster, &running.id).await;
    assert_eq!(before.1.terminal_entries().len(), 1, "{report}");
    assert!(!before.1.has("job.requeued"), "{report}");

    netns.heal();
    // The worker comes back and re-sends the fenced attempt's outcome: acknowledged, ignored.
    wait_for_outcome_acknowledged(&cluster, worker, &running.id, 1).await;
    the_healed_worker_takes_jobs_again(&cluster, &running.worker_id).await;
    let after = settled(&cluster, &running.id).await;
    assert_unchanged(&before, &after, "the fenced attempt's late outcome");
    let timeline = read_timeline(&timeline_path(&cluster, worker, &running.id, 1));
    at(&timeline, "started");
    at(&timeline, "stopped");
}

async fn partition_under_requeue_policy(backend: Backend) {
    let netns = NetworkNamespace::create();
    let (mut cluster, partitioned) = cluster_with_partitionable_worker(
        &netns,
        backend,
        LEASE,
        &["--on-worker-lost", "requeue", "--max-attempts", "3"],
    )
    .await;
    let running = start_blocker(&cluster).await;

    netns.cut();
    // A worker on the host, to run the job again once it is requeued.
    let healthy = cluster.add_worker_on(0);
    let fenced = wait_for_code_to_end(&cluster, partitioned, &running.id, 1).await;
    assert!(
        fenced.iter().any(|m| m.event == "stopped"),
        "the partitioned attempt must be stopped by fencing, not run to its end: {fenced:?}"
    );

    // Requeued, then claimed by the healthy worker as attempt 2, which runs to its end.
    let done = cluster.wait_for_terminal(&running.id, LONG_WAIT).await;
    let report = cluster.job_report(&running.id).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{report}");
    assert_eq!(done.attempt, 2, "{report}");
    assert_ne!(done.worker_id, running.worker_id, "{report}");
    let before = settled(&cluster, &running.id).await;
    let log = &before.1;
    assert_eq!(log.count("job.started"), 2, "{report}");
    assert_eq!(log.count("job.requeued"), 1, "{report}");
    let requeued = log.entry("job.requeued").expect("a job.requeued entry");
    assert!(
        requeued.message.starts_with("worker lost: ")
            && requeued.message.ends_with("requeued after attempt 1 of 3"),
        "{report}"
    );
    assert_eq!(log.terminal_entries().len(), 1, "{report}");
    assert!(log.has("job.succeeded"), "{report}");
    // Nothing of attempt 1 was recorded after the requeue.
    let from_old_attempt: Vec<&LogEntry> = log
        .iter()
        .filter(|e| e.id > requeued.id && e.attempt == 1)
        .collect();
    assert!(
        from_old_attempt.is_empty(),
        "entries of the lost attempt after its requeue: {from_old_attempt:?}\n{report}"
    );

    // Each attempt's code ran once, on its own worker, and the old one had stopped before the
    // new one started (CLOCK_MONOTONIC is shared by every process of the host).
    let old = read_timeline(&timeline_path(&cluster, partitioned, &running.id, 1));
    let new = wait_for_code_to_end(&cluster, healthy, &running.id, 2).await;
    let (old_start, old_stop) = (at(&old, "started"), at(&old, "stopped"));
    let (new_start, new_end) = (at(&new, "started"), at(&new, "finished"));
    assert!(
        old_start < old_stop && old_stop < new_start && new_start < new_end,
        "attempt 1 ran {old_start}..{old_stop} ns, attempt 2 {new_start}..{new_end} ns: they overlap"
    );
    eprintln!(
        "attempt 1 ran {} ms and was fenced; attempt 2 started {} ms after it stopped",
        (old_stop - old_start) / 1_000_000,
        (new_start - old_stop) / 1_000_000
    );
    for (worker, attempt) in [(partitioned, 2), (healthy, 1)] {
        let path = timeline_path(&cluster, worker, &running.id, attempt);
        assert!(
            !path.exists(),
            "attempt {attempt} also ran on worker {worker}: {}",
            path.display()
        );
    }

    netns.heal();
    // The old worker comes back with attempt 1's outcome: acknowledged, never applied.
    wait_for_outcome_acknowledged(&cluster, partitioned, &running.id, 1).await;
    cluster.kill_worker(healthy);
    the_healed_worker_takes_jobs_again(&cluster, &running.worker_id).await;
    let after = settled(&cluster, &running.id).await;
    assert_unchanged(&before, &after, "the lost attempt's late outcome");
}

/// A partition that heals after the worker fenced itself but before the control plane gave up
/// on it (two leases under `requeue`): the worker reports the fenced attempt itself, and that
/// report requeues the job like a lost worker would, instead of failing it.
async fn short_partition_under_requeue_policy(backend: Backend) {
    let netns = NetworkNamespace::create();
    let (cluster, worker) = cluster_with_partitionable_worker(
        &netns,
        backend,
        SHORT_PARTITION_LEASE,
        &["--on-worker-lost", "requeue", "--max-attempts", "3"],
    )
    .await;
    let running = start_blocker(&cluster).await;

    netns.cut();
    let fenced = wait_for_code_to_end(&cluster, worker, &running.id, 1).await;
    assert!(
        fenced.iter().any(|m| m.event == "stopped"),
        "the partitioned attempt must be stopped by fencing, not run to its end: {fenced:?}"
    );
    netns.heal();

    // The same worker, back, runs the requeued job as attempt 2.
    let done = cluster.wait_for_terminal(&running.id, LONG_WAIT).await;
    let report = cluster.job_report(&running.id).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{report}");
    assert_eq!(done.attempt, 2, "{report}");
    let log = cluster.job_log(&running.id).await;
    let requeued = log.entry("job.requeued").expect("a job.requeued entry");
    assert!(
        requeued
            .message
            .contains("stopped the job itself (lease lost")
            && requeued.message.ends_with("requeued after attempt 1 of 3"),
        "requeued by the worker's own report of the fencing, before the control plane's second lease ran out:\n{report}"
    );
    assert_eq!(log.count("job.requeued"), 1, "{report}");
    assert_eq!(log.terminal_entries().len(), 1, "{report}");
    let old = read_timeline(&timeline_path(&cluster, worker, &running.id, 1));
    let new = wait_for_code_to_end(&cluster, worker, &running.id, 2).await;
    assert!(
        at(&old, "stopped") < at(&new, "started"),
        "attempt 2 started before attempt 1 stopped: {old:?} {new:?}"
    );
    at(&new, "finished");
}

#[tokio::test]
async fn a_short_partition_requeues_the_fenced_job_on_the_workers_own_report_on_postgres() {
    short_partition_under_requeue_policy(Backend::Postgres).await;
}

#[tokio::test]
async fn a_partitioned_worker_fences_and_its_job_fails_as_worker_lost_on_postgres() {
    partition_under_fail_policy(Backend::Postgres).await;
}

#[tokio::test]
async fn a_partitioned_worker_fences_and_its_job_fails_as_worker_lost_on_sqlite() {
    partition_under_fail_policy(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_partitioned_workers_job_is_requeued_and_runs_once_per_attempt_on_postgres() {
    partition_under_requeue_policy(Backend::Postgres).await;
}

#[tokio::test]
async fn a_partitioned_workers_job_is_requeued_and_runs_once_per_attempt_on_sqlite() {
    partition_under_requeue_policy(Backend::Sqlite).await;
}
