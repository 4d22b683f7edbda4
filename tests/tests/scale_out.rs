//! Scale-out: two control-plane replicas on one PostgreSQL database, workers spread over them.
//! A cancel sent to one replica reaches a worker connected to the other; watchers of either
//! replica see every change of both, in order, and resume without gaps; losing a replica
//! loses no job; and no job is handed out twice.
//!
//! Needs `PRESSWORK_TEST_POSTGRES_URL` (`scripts/test` starts PostgreSQL 15 and sets it).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use presswork_proto::v1::watch_jobs_response::Kind;
use presswork_proto::v1::{
    CancelOutcome, CancelResolution, Job, JobStatus, Stage, WatchJobsRequest, WatchJobsResponse,
};
use presswork_tests::cluster::Client;
use presswork_tests::verdict::check_stopped;
use presswork_tests::{Backend, Cluster, ExecutionLog, LONG_WAIT, describe_job};
use tonic::Streaming;

const A: usize = 0;
const B: usize = 1;
/// How long a watcher may wait for the next message before the test gives up.
const WATCH_TIMEOUT: Duration = Duration::from_secs(120);

fn two_replicas() -> presswork_tests::ClusterBuilder {
    Cluster::builder().backend(Backend::Postgres).replicas(2)
}

/// A job's change as a watcher saw it.
#[derive(Clone, Debug, PartialEq)]
struct Change {
    sequence: u64,
    job: Job,
}

/// A `WatchJobs` stream on one replica.
struct Watcher {
    stream: Streaming<WatchJobsResponse>,
    /// The snapshot's sequence (or where the stream resumed).
    start: u64,
    changes: Vec<Change>,
}

impl Watcher {
    /// Opens a stream with a snapshot and reads it to the end of the snapshot.
    async fn open(client: &mut Client) -> Self {
        Self::resume(client, 0).await
    }

    /// Opens a stream after `after` (0: with a snapshot, read to its end).
    async fn resume(client: &mut Client, after: u64) -> Self {
        let stream = client
            .watch_jobs(WatchJobsRequest {
                after_sequence: after,
            })
            .await
            .unwrap_or_else(|e| panic!("WatchJobs after {after} failed: {e:?}"))
            .into_inner();
        let mut watcher = Watcher {
            stream,
            start: after,
            changes: Vec::new(),
        };
        if after == 0 {
            loop {
                let message = watcher.next_message().await;
                if message.kind() == Kind::SnapshotComplete {
                    watcher.start = message.sequence;
                    break;
                }
            }
        }
        watcher
    }

    async fn next_message(&mut self) -> WatchJobsResponse {
        match tokio::time::timeout(WATCH_TIMEOUT, self.stream.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(status))) => panic!("WatchJobs failed: {status:?}"),
            Ok(None) => panic!("WatchJobs ended"),
            Err(_) => panic!(
                "no WatchJobs message within {WATCH_TIMEOUT:?}; last change seen: {:?}",
                self.changes.last().map(|c| c.sequence)
            ),
        }
    }

    /// Reads the next change.
    async fn next_change(&mut self) -> &Change {
        let message = self.next_message().await;
        assert_eq!(message.kind(), Kind::Change, "{message:?}");
        self.changes.push(Change {
            sequence: message.sequence,
            job: message.job.expect("a change carries its job"),
        });
        self.changes.last().expect("just pushed")
    }

    /// Reads changes until `done` holds for one.
    async fn until(&mut self, done: impl Fn(&Change) -> bool) {
        loop {
            if done(self.next_change().await) {
                return;
            }
        }
    }

    fn last_sequence(&self) -> u64 {
        self.changes.last().map_or(self.start, |c| c.sequence)
    }

    /// Every sequence is the one after the previous: no gap, no repeat.
    fn assert_contiguous(&self) {
        for (expected, change) in (self.start + 1..).zip(&self.changes) {
            assert_eq!(
                change.sequence, expected,
                "watcher saw sequence {} where {expected} was next",
                change.sequence
            );
        }
    }

    /// The changes of `job_id` in the order seen.
    fn of(&self, job_id: &str) -> Vec<&Job> {
        self.changes
            .iter()
            .filter(|c| c.job.id == job_id)
            .map(|c| &c.job)
            .collect()
    }
}

/// Each job's versions as seen: 1, 2, 3… with none missing (the watcher started before the
/// job was submitted).
fn assert_every_version(changes: &[&Job]) {
    for (expected, job) in (1..).zip(changes) {
        assert_eq!(
            job.version,
            expected,
            "change {expected} of job {} has version {}: {}",
            job.id,
            job.version,
            describe_job(job)
        );
    }
}

/// (a) A job runs on a worker connected to replica B; it is cancelled through replica A. The
/// cancel reaches the worker, the job ends CANCELLED with every milestone, and a watcher on A
/// saw every change of it in order.
#[tokio::test]
async fn a_cancel_sent_to_one_replica_stops_a_job_on_a_worker_of_the_other() {
    cancel_across_replicas(A, B).await;
}

/// The same the other way round: sent to B, the worker on A.
#[tokio::test]
async fn a_cancel_sent_to_the_other_replica_stops_a_job_on_a_worker_of_the_first() {
    cancel_across_replicas(B, A).await;
}

/// A job submitted to and cancelled through replica `via` runs on a worker connected to
/// replica `worker_on`.
async fn cancel_across_replicas(via: usize, worker_on: usize) {
    let mut cluster = two_replicas().workers(0).start().await;
    let worker = cluster.add_worker_on(worker_on);
    cluster.wait_for_workers().await;
    assert_eq!(cluster.worker_replica(worker), worker_on);
    let mut watcher = Watcher::open(&mut cluster.client_on(via)).await;

    let job = cluster
        .submit_on(
            via,
            "demo-slow",
            &[("slow_stage", "transform"), ("duration_ms", "60000")],
        )
        .await;
    cluster
        .wait_for_stage_started(&job.id, Stage::Transform)
        .await;
    let answer = cluster
        .cancel_on(via, &job.id, "test: cancel across replicas")
        .await
        .unwrap_or_else(|e| panic!("CancelJob through replica {via} failed: {e:?}"));
    assert_eq!(
        answer.outcome(),
        CancelOutcome::Cancelling,
        "{}",
        answer.message
    );

    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Cancelled, "{report}");
    let log = cluster.job_log(&job.id).await;
    check_stopped(&done, &log).unwrap_or_else(|why| panic!("{why}\n{report}"));
    let cancel = done.cancel.as_ref().expect("the cancel is recorded");
    assert!(
        cancel.delivered_at_unix_ms > 0
            && cancel.acknowledged_at_unix_ms > 0
            && cancel.stopped_at_unix_ms > 0,
        "milestones missing: {report}"
    );
    assert_eq!(log.terminal_entries().len(), 1, "{report}");

    watcher
        .until(|c| c.job.id == job.id && c.job.status().is_terminal())
        .await;
    watcher.assert_contiguous();
    let seen = watcher.of(&job.id);
    assert_every_version(&seen);
    assert_eq!(
        seen.last().map(|j| j.version),
        Some(done.version),
        "{report}"
    );
    let statuses: Vec<JobStatus> = seen.iter().map(|j| j.status()).collect();
    for status in [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Cancelling,
        JobStatus::Cancelled,
    ] {
        assert!(
            statuses.contains(&status),
            "watcher on replica {via} never saw {status:?}: {statuses:?}"
        );
    }
}

/// (b) Watchers on replica A see the jobs submitted through B (and A), every change with
/// contiguous sequences; a watcher that drops its stream and resumes misses nothing.
#[tokio::test]
async fn watchers_on_one_replica_see_every_change_of_both_in_order() {
    const JOBS: usize = 300;
    const DROP_AFTER: usize = 100;
    let cluster = two_replicas()
        .workers(2)
        .capacity(4)
        .test_reports()
        .start()
        .await;
    let mut whole = Watcher::open(&mut cluster.client_on(A)).await;
    let mut resumed = Watcher::open(&mut cluster.client_on(A)).await;

    let mut ids = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        // Two of every three through B.
        let replica = if i % 3 == 0 { A } else { B };
        ids.push(cluster.submit_on(replica, "noop", &[]).await.id);
    }

    // The resuming watcher reads some changes, drops its stream, and comes back later.
    for _ in 0..DROP_AFTER {
        resumed.next_change().await;
    }
    let away_from = resumed.last_sequence();
    let before_drop = std::mem::take(&mut resumed.changes);
    let before_start = resumed.start;
    drop(resumed);

    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut succeeded = HashSet::new();
    while succeeded.len() < JOBS {
        let change = whole.next_change().await;
        if change.job.status() == JobStatus::Succeeded && wanted.contains(change.job.id.as_str()) {
            succeeded.insert(change.job.id.clone());
        }
        assert!(
            !change.job.status().is_terminal() || change.job.status() == JobStatus::Succeeded,
            "{}",
            describe_job(&change.job)
        );
    }
    whole.assert_contiguous();
    for id in &ids {
        let seen = whole.of(id);
        assert_every_version(&seen);
        assert_eq!(
            seen.last().map(|j| j.status()),
            Some(JobStatus::Succeeded),
            "job {id}"
        );
    }

    let mut resumed = Watcher::resume(&mut cluster.client_on(A), away_from).await;
    while resumed.last_sequence() < whole.last_sequence() {
        resumed.next_change().await;
    }
    let mut all = before_drop;
    all.extend(resumed.changes);
    let resumed = Watcher {
        stream: resumed.stream,
        start: before_start,
        changes: all,
    };
    resumed.assert_contiguous();
    let from = resumed.start.max(whole.start);
    let theirs: Vec<&Change> = whole.changes.iter().filter(|c| c.sequence > from).collect();
    let ours: Vec<&Change> = resumed
        .changes
        .iter()
        .filter(|c| c.sequence > from && c.sequence <= whole.last_sequence())
        .collect();
    assert_eq!(
        ours, theirs,
        "the resumed watcher saw other changes than the one that never left"
    );
}

/// (c) Replica B is SIGKILLed right after replica A accepted the cancel of a job running on
/// B's worker. The worker moves to A, and the job ends CANCELLED: nothing stays unfinished.
#[tokio::test]
async fn a_cancel_in_flight_survives_the_loss_of_the_workers_replica() {
    let mut cluster = two_replicas().workers(0).start().await;
    cluster.add_worker_on(B);
    cluster.wait_for_workers().await;
    let job = cluster
        .submit_on(
            A,
            "demo-slow",
            &[("slow_stage", "transform"), ("duration_ms", "60000")],
        )
        .await;
    cluster
        .wait_for_stage_started(&job.id, Stage::Transform)
        .await;
    cluster
        .cancel_on(A, &job.id, "test: cancel, then lose the worker's replica")
        .await
        .unwrap_or_else(|e| panic!("CancelJob through replica A failed: {e:?}"));
    cluster.kill_replica(B);

    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Cancelled, "{report}");
    let log = cluster.job_log(&job.id).await;
    check_stopped(&done, &log).unwrap_or_else(|why| panic!("{why}\n{report}"));
    assert_eq!(log.terminal_entries().len(), 1, "{report}");
    assert!(cluster.unfinished_jobs().await.is_empty(), "{report}");

    // The worker now takes jobs through A.
    let next = cluster.submit_on(A, "demo-fast", &[]).await;
    cluster
        .wait_for_status(&next.id, JobStatus::Succeeded)
        .await;
}

/// (c) A job that ignores its cancel, on B's worker, cancelled through A: both replicas arm
/// the deadline and sweep, exactly one of them fails the job, and the worker (on B) is
/// force-stopped, so its only slot takes the next job.
#[tokio::test]
async fn a_cancel_timeout_applies_once_and_force_stops_the_worker_on_the_other_replica() {
    let mut cluster = two_replicas()
        .workers(0)
        .capacity(1)
        .test_reports()
        .cancel_timeout(Duration::from_secs(1))
        .start()
        .await;
    cluster.add_worker_on(B);
    cluster.wait_for_workers().await;
    let job = cluster.submit_on(A, "demo-stuck", &[]).await;
    // demo-stuck ingests cooperatively first; only its transform stage ignores the cancel.
    cluster
        .wait_for_stage_started(&job.id, Stage::Transform)
        .await;
    let answer = cluster
        .cancel_on(A, &job.id, "test: stuck, across replicas")
        .await
        .unwrap_or_else(|e| panic!("CancelJob through replica A failed: {e:?}"));
    assert_eq!(
        answer.outcome(),
        CancelOutcome::Cancelling,
        "{}",
        answer.message
    );

    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Failed, "{report}");
    assert_eq!(
        done.cancel.as_ref().map(|c| c.resolution()),
        Some(CancelResolution::TimedOut),
        "{report}"
    );
    let log = cluster.job_log(&job.id).await;
    assert_eq!(log.count("cancel.timed_out"), 1, "{report}");
    assert_eq!(log.terminal_entries().len(), 1, "{report}");
    assert!(log.has("cancel.delivered"), "{report}");

    let next = cluster.submit_on(A, "demo-fast", &[]).await;
    let next = cluster
        .wait_for_status(&next.id, JobStatus::Succeeded)
        .await;
    assert_eq!(next.worker_id, done.worker_id, "{}", describe_job(&next));
}

/// (d) 1,000 jobs submitted through both replicas, three workers spread over them: each runs
/// exactly once (one `job.started`, attempt 1) and succeeds.
#[tokio::test]
async fn a_thousand_jobs_across_replicas_each_run_exactly_once() {
    const JOBS: usize = 1000;
    let cluster = two_replicas()
        .workers(3)
        .capacity(4)
        .test_reports()
        .start()
        .await;
    let mut watcher = Watcher::open(&mut cluster.client_on(A)).await;
    let mut ids = Vec::with_capacity(JOBS);
    let mut submissions = futures::stream::iter(0..JOBS)
        .map(|i| {
            let cluster = &cluster;
            async move { cluster.submit_on(i % 2, "noop", &[]).await.id }
        })
        .buffer_unordered(16);
    while let Some(id) = submissions.next().await {
        ids.push(id);
    }
    drop(submissions);

    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut ended = HashSet::new();
    while ended.len() < JOBS {
        let change = watcher.next_change().await;
        if change.job.status().is_terminal() && wanted.contains(change.job.id.as_str()) {
            ended.insert(change.job.id.clone());
        }
    }
    watcher.assert_contiguous();

    let mut workers = HashMap::new();
    for id in &ids {
        let done = cluster.get_job(id).await;
        assert_eq!(
            done.status(),
            JobStatus::Succeeded,
            "{}",
            describe_job(&done)
        );
        assert_eq!(done.attempt, 1, "{}", describe_job(&done));
        *workers.entry(done.worker_id.clone()).or_insert(0usize) += 1;
        let log = cluster.job_log(id).await;
        assert_eq!(
            log.count("job.started"),
            1,
            "job {id} started {} times",
            log.count("job.started")
        );
    }
    assert!(cluster.unfinished_jobs().await.is_empty());
    assert!(
        workers.len() >= 2,
        "jobs ran on workers of one replica only: {workers:?}"
    );
}

/// Leases across replicas: a worker connected to B heartbeats through B for several of its
/// leases while its job runs; replica A's sweeper must not call it lost (heartbeats update
/// the shared `workers` row), so the job succeeds.
#[tokio::test]
async fn a_worker_heartbeating_through_one_replica_is_not_lost_to_the_other() {
    let mut cluster = two_replicas()
        .workers(0)
        // 2 s, not less: under a parallel build a heartbeat's write once took over a second,
        // which a real deployment's lease (10 s by default) absorbs many times over.
        .worker_lease(Duration::from_secs(2))
        .start()
        .await;
    cluster.add_worker_on(B);
    cluster.wait_for_workers().await;
    // Runs for four leases.
    let job = cluster
        .submit_on(
            A,
            "demo-slow",
            &[("slow_stage", "transform"), ("duration_ms", "8000")],
        )
        .await;
    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    let report = cluster.job_report(&job.id).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{report}");
    assert_eq!(done.attempt, 1, "{report}");
}
