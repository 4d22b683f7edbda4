//! Out-of-process connectors in real jobs (docs/pdk.md): a job reads its rows from the
//! example Python connector and delivers its PDF; cancelled mid-ingest, the connector is
//! stopped and reaped, its process group is empty, the job's work directory is removed and
//! the worker holds no more file descriptors than before. A connector that ignores SIGTERM is
//! SIGKILLed after the grace (or, when the grace outlasts the cancel deadline, by the force
//! stop), and one that breaks the protocol fails its job with a message naming it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use presswork_proto::v1::{CancelOutcome, CancelResolution, Job, JobStatus, LogEntry, Stage};
use presswork_tests::system::{
    children_of, describe_fds, live_group_members, open_fds, wait_until,
};
use presswork_tests::verdict::check_stopped;
use presswork_tests::{Cluster, ClusterBuilder, LONG_WAIT, WAIT, describe_job};

/// How long the system may take to settle something with no event to wait on (a killed
/// process disappearing, a closed descriptor).
const SETTLE: Duration = Duration::from_secs(10);

fn python_example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/connectors/python/sales_source.py")
        .display()
        .to_string()
}

fn misbehaving() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("connectors/misbehaving.py")
        .display()
        .to_string()
}

/// One worker with the example connector as `sales` and the broken one as `misbehaving`.
fn with_connectors(extra_worker_args: &[&str]) -> ClusterBuilder {
    let sales = format!("sales={}", python_example());
    let misbehaving = format!("misbehaving={}", misbehaving());
    let mut args = vec!["--connector", &sales, "--connector", &misbehaving];
    args.extend_from_slice(extra_worker_args);
    Cluster::builder().workers(1).worker_args(&args)
}

/// The connector's pid from the job log ("connector `NAME` started: pid N, process group N"),
/// once it is there.
async fn connector_pid(cluster: &Cluster, job_id: &str) -> i32 {
    let entry = cluster
        .wait_for_log_entry(job_id, "a connector start", WAIT, |e| {
            e.message.contains("started: pid ")
        })
        .await;
    entry
        .message
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {:?}", entry.message))
}

/// Submits a job whose connector ignores SIGTERM (and hangs on the cancel message), and
/// cancels it once the connector has set itself up — it says so on its stderr, which the job
/// log shows; a cancel before that would find it still defenceless. Returns the job and the
/// connector's pid.
async fn cancel_a_stubborn_connector(cluster: &Cluster) -> (Job, i32) {
    let job = cluster
        .submit(
            "demo-fast",
            &[
                ("source", "misbehaving"),
                ("source.misbehave", "ignore-sigterm"),
                ("source.rows", "10000000"),
            ],
        )
        .await;
    let connector = connector_pid(cluster, &job.id).await;
    cluster
        .wait_for_log_entry(&job.id, "the connector's mode on its stderr", WAIT, |e| {
            e.message
                .contains("misbehaving connector: mode 'ignore-sigterm'")
        })
        .await;
    cluster
        .cancel_expecting(
            &job.id,
            "test: stubborn connector",
            CancelOutcome::Cancelling,
        )
        .await;
    (job, connector)
}

fn log_has(log: &[LogEntry], needle: &str) -> bool {
    log.iter().any(|e| e.message.contains(needle))
}

fn entries_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Nothing of the connector is left: no live process in its group, no child (not even a
/// zombie) of the worker, no job work directory, no output of the job.
fn assert_nothing_left(cluster: &Cluster, job: &Job, connector: i32) {
    let left = live_group_members(connector);
    assert!(
        left.is_empty(),
        "processes left in the connector's group: {left:?}"
    );
    let children = children_of(cluster.worker_pid(0));
    assert!(
        children.is_empty(),
        "the worker still has children (unreaped or still running): {children:?}"
    );
    let work = entries_under(&cluster.work_dir(0));
    assert!(work.is_empty(), "work directories left behind: {work:?}");
    if job.status() != JobStatus::Succeeded {
        let delivered: Vec<PathBuf> = entries_under(&cluster.output_dir(0))
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(&job.id))
            .collect();
        assert!(delivered.is_empty(), "a stopped job left {delivered:?}");
    }
}

/// The worker's open file descriptors come back to their number before the job (pipes closed).
async fn assert_descriptors_settle(worker: i32, before: usize) {
    wait_until(
        "the worker's file descriptors returning to their number before the job",
        SETTLE,
        || open_fds(worker) <= before,
        || {
            format!(
                "{} open, {before} before:\n    {}",
                open_fds(worker),
                describe_fds(worker)
            )
        },
    )
    .await;
}

#[tokio::test]
async fn a_job_reads_its_rows_from_the_python_connector_and_delivers_its_pdf() {
    let cluster = with_connectors(&[]).start().await;
    let job = cluster
        .submit(
            "demo-fast",
            &[
                ("source", "sales"),
                ("source.rows", "1234"),
                ("source.batch", "100"),
            ],
        )
        .await;
    let connector = connector_pid(&cluster, &job.id).await;
    let done = cluster.wait_for_terminal(&job.id, WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{report}");
    let pdf = std::fs::read(&done.output).expect("the delivered report");
    assert!(pdf.starts_with(b"%PDF"), "{}", describe_job(&done));
    let log = cluster.job_log(&job.id).await;
    assert!(
        log_has(&log, "read 1234 rows from connector `sales`"),
        "{report}"
    );
    assert!(
        log_has(&log, "connector `sales`: sent 1234 rows"),
        "{report}"
    );
    assert!(
        log_has(&log, "connector `sales` exited with status 0"),
        "{report}"
    );
    assert_nothing_left(&cluster, &done, connector);
}

#[tokio::test]
async fn cancelling_mid_ingest_stops_the_connector_and_leaves_nothing() {
    let cluster = with_connectors(&[]).start().await;
    let worker = cluster.worker_pid(0);
    // The cluster's readiness probe ran a job already: the worker is warmed up.
    let fds_before = open_fds(worker);
    let job = cluster
        .submit(
            "demo-fast",
            &[
                ("source", "sales"),
                ("source.rows", "10000000"),
                ("source.batch", "10"),
                ("source.delay_ms", "20"),
            ],
        )
        .await;
    let connector = connector_pid(&cluster, &job.id).await;
    cluster
        .wait_for_job(&job.id, "ingesting rows", WAIT, |j| {
            j.stage() == Stage::Ingest && j.progress > 0.0
        })
        .await;

    cluster
        .cancel_expecting(
            &job.id,
            "test: stop the connector",
            CancelOutcome::Cancelling,
        )
        .await;
    let done = cluster.wait_for_terminal(&job.id, WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Cancelled, "{report}");
    let log = cluster.job_log(&job.id).await;
    check_stopped(&done, &log).unwrap_or_else(|why| panic!("{why}\n{report}"));
    let cancel = done
        .cancel
        .as_ref()
        .expect("a cancelled job records its cancel");
    assert_eq!(cancel.stopped_stage(), Stage::Ingest, "{report}");
    assert!(
        log_has(&log, "connector `sales` exited with status 0"),
        "the connector stopped by itself: {report}"
    );
    assert!(log_has(&log, "after SIGTERM"), "{report}");
    assert!(!log_has(&log, "SIGKILL"), "{report}");
    assert!(
        log_has(&log, "connector `sales` stderr: cancelled after"),
        "the connector's stderr is in the job log: {report}"
    );
    assert_nothing_left(&cluster, &done, connector);
    assert_descriptors_settle(worker, fds_before).await;
}

#[tokio::test]
async fn a_connector_that_ignores_sigterm_is_killed_after_the_grace() {
    let cluster = with_connectors(&["--connector-grace-ms", "1000"])
        .start()
        .await;
    let worker = cluster.worker_pid(0);
    let fds_before = open_fds(worker);
    let (job, connector) = cancel_a_stubborn_connector(&cluster).await;
    let done = cluster.wait_for_terminal(&job.id, WAIT).await;
    let report = cluster.job_report(&job.id).await;
    // The grace (1 s) is far inside the cancel deadline (30 s): the worker's SIGKILL ends the
    // stage, and the job is cancelled, not failed by the deadline.
    assert_eq!(done.status(), JobStatus::Cancelled, "{report}");
    let log = cluster.job_log(&job.id).await;
    check_stopped(&done, &log).unwrap_or_else(|why| panic!("{why}\n{report}"));
    assert!(
        log_has(
            &log,
            "connector `misbehaving` did not stop within the 1000 ms grace after SIGTERM: killed (SIGKILL)"
        ),
        "{report}"
    );
    assert_nothing_left(&cluster, &done, connector);
    assert_descriptors_settle(worker, fds_before).await;
}

#[tokio::test]
async fn the_force_stop_after_the_cancel_deadline_kills_the_connectors_group() {
    // The grace outlasts the cancel deadline: the control plane fails the job at the deadline
    // and force-stops it, which must kill the connector's group at once.
    let cluster = with_connectors(&["--connector-grace-ms", "120000"])
        .cancel_timeout(Duration::from_secs(1))
        .capacity(1)
        .start()
        .await;
    let (job, connector) = cancel_a_stubborn_connector(&cluster).await;
    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Failed, "{report}");
    assert_eq!(
        done.cancel.as_ref().map(|c| c.resolution()),
        Some(CancelResolution::TimedOut),
        "{report}"
    );
    // The force stop reaches the worker after the job is failed: wait for its effect.
    wait_until(
        "the connector's process group emptying after the force stop",
        SETTLE,
        || live_group_members(connector).is_empty(),
        || format!("{:?}", live_group_members(connector)),
    )
    .await;
    // Its only slot comes back once the stopped job's task has ended, so the next job runs.
    let next = cluster.submit("demo-fast", &[]).await;
    let next = cluster.wait_for_terminal(&next.id, WAIT).await;
    assert_eq!(
        next.status(),
        JobStatus::Succeeded,
        "{}",
        describe_job(&next)
    );
    wait_until(
        "the worker reaping the killed connector",
        SETTLE,
        || children_of(cluster.worker_pid(0)).is_empty(),
        || format!("{:?}", children_of(cluster.worker_pid(0))),
    )
    .await;
    assert_nothing_left(&cluster, &done, connector);
}

#[tokio::test]
async fn a_connector_that_breaks_the_protocol_fails_its_job_with_advice() {
    let cluster = with_connectors(&[]).start().await;
    let failed = |params: &'static [(&'static str, &'static str)]| {
        let cluster = &cluster;
        async move {
            let job = cluster.submit("demo-fast", params).await;
            let done = cluster.wait_for_terminal(&job.id, WAIT).await;
            let report = cluster.job_report(&job.id).await;
            assert_eq!(done.status(), JobStatus::Failed, "{report}");
            (done, cluster.job_log(&job.id).await, report)
        }
    };

    let (garbage, _, report) =
        failed(&[("source", "misbehaving"), ("source.misbehave", "garbage")]).await;
    assert!(
        garbage.error.contains(
            "connector `misbehaving` broke the connector protocol: line 1 of its stdout is not a protocol message"
        ),
        "{report}"
    );
    assert!(garbage.error.contains("connector-check"), "{report}");

    let (exited, log, report) = failed(&[
        ("source", "misbehaving"),
        ("source.misbehave", "exit-nonzero"),
    ])
    .await;
    assert!(
        exited
            .error
            .contains("connector `misbehaving` exited with status 3 without sending done"),
        "{report}"
    );
    assert!(
        log_has(
            &log,
            "connector `misbehaving` stderr: misbehaving connector: giving up with status 3"
        ),
        "{report}"
    );

    let (unknown, _, report) = failed(&[("source", "nope")]).await;
    assert!(
        unknown.error.starts_with(
            "unknown connector `nope` (parameter source); this worker has misbehaving, sales"
        ),
        "{report}"
    );
    let work = entries_under(&cluster.work_dir(0));
    assert!(work.is_empty(), "work directories left behind: {work:?}");
    let children = children_of(cluster.worker_pid(0));
    assert!(
        children.is_empty(),
        "the worker still has children: {children:?}"
    );
}

/// A worker killed with SIGKILL takes its connectors with it (PR_SET_PDEATHSIG, see
/// docs/decisions.md): before, a connector that ignores SIGTERM ran on with parent 1 after
/// its worker vanished.
#[tokio::test]
async fn a_killed_workers_connector_does_not_outlive_it() {
    let mut cluster = with_connectors(&[]).start().await;
    let job = cluster
        .submit(
            "demo-fast",
            &[
                ("source", "misbehaving"),
                ("source.misbehave", "ignore-sigterm"),
                ("source.rows", "10000000"),
                // Asleep when its pipes close: it does not die writing to a closed stdout.
                ("source.delay_ms", "60000"),
            ],
        )
        .await;
    let connector = connector_pid(&cluster, &job.id).await;
    cluster
        .wait_for_log_entry(&job.id, "the connector's mode on its stderr", WAIT, |e| {
            e.message
                .contains("misbehaving connector: mode 'ignore-sigterm'")
        })
        .await;
    assert!(!live_group_members(connector).is_empty());

    cluster.kill_worker(0);
    wait_until(
        "the killed worker's connector exits",
        SETTLE * 3,
        || live_group_members(connector).is_empty(),
        || format!("{:?}", live_group_members(connector)),
    )
    .await;
}
