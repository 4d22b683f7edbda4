//! WatchJobs: a watcher sees every change of every job, in order; a watcher that drops its
//! stream and resumes with `after_sequence` misses none and sees none twice.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use presswork_proto::v1::watch_jobs_response::Kind;
use presswork_proto::v1::{JobStatus, WatchJobsRequest, WatchJobsResponse};
use presswork_tests::Cluster;
use presswork_tests::cluster::Client;
use tokio::sync::{oneshot, watch};

const JOBS: usize = 1000;
/// The resuming watcher drops its stream after this many changes...
const DISCONNECT_AFTER: usize = 300;
/// ...and resumes once the other watcher has seen this many more.
const MISSED_WHILE_AWAY: usize = 600;
const WATCH_TIMEOUT: Duration = Duration::from_secs(240);

/// One change as a watcher saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Change {
    sequence: u64,
    job_id: String,
    version: i64,
    status: JobStatus,
}

/// What one watcher saw.
#[derive(Default)]
struct Watcher {
    snapshot_sequence: u64,
    snapshot_ids: HashSet<String>,
    changes: Vec<Change>,
    /// Jobs created after the snapshot that reached SUCCEEDED.
    succeeded: HashSet<String>,
    /// Snapshot messages received on a resumed stream (there must be none).
    snapshots_after_resume: usize,
    resumed: bool,
}

impl Watcher {
    fn observe(&mut self, message: WatchJobsResponse) {
        let kind = message.kind();
        match (kind, message.job) {
            (Kind::Snapshot, Some(job)) => {
                if self.resumed {
                    self.snapshots_after_resume += 1;
                }
                self.snapshot_ids.insert(job.id);
            }
            (Kind::SnapshotComplete, _) => self.snapshot_sequence = message.sequence,
            (Kind::Change, Some(job)) => {
                if job.status() == JobStatus::Succeeded && !self.snapshot_ids.contains(&job.id) {
                    self.succeeded.insert(job.id.clone());
                }
                let status = job.status();
                self.changes.push(Change {
                    sequence: message.sequence,
                    job_id: job.id,
                    version: job.version,
                    status,
                });
            }
            (kind, job) => panic!("unexpected WatchJobs message {kind:?} with job {job:?}"),
        }
    }

    fn done(&self) -> bool {
        self.succeeded.len() >= JOBS
    }

    fn last_sequence(&self) -> u64 {
        self.changes
            .last()
            .map_or(self.snapshot_sequence, |c| c.sequence)
    }
}

async fn open(client: &mut Client, after_sequence: u64) -> tonic::Streaming<WatchJobsResponse> {
    client
        .watch_jobs(WatchJobsRequest { after_sequence })
        .await
        .unwrap_or_else(|e| panic!("WatchJobs(after {after_sequence}) failed: {e:?}"))
        .into_inner()
}

async fn next(stream: &mut tonic::Streaming<WatchJobsResponse>) -> WatchJobsResponse {
    stream
        .message()
        .await
        .unwrap_or_else(|e| panic!("WatchJobs broke: {e:?}"))
        .expect("WatchJobs ended while jobs were still running")
}

/// Follows one stream from the start until every new job succeeded, reporting the number of
/// changes seen so far.
async fn watch_throughout(
    mut client: Client,
    ready: oneshot::Sender<()>,
    progress: watch::Sender<usize>,
) -> Watcher {
    let mut watcher = Watcher::default();
    let mut stream = open(&mut client, 0).await;
    let mut ready = Some(ready);
    while !watcher.done() {
        let message = next(&mut stream).await;
        let kind = message.kind();
        watcher.observe(message);
        if kind == Kind::SnapshotComplete
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(());
        }
        if kind == Kind::Change {
            progress.send_replace(watcher.changes.len());
        }
    }
    watcher
}

/// Follows a stream until it saw [`DISCONNECT_AFTER`] changes, drops it, waits until the
/// other watcher has seen [`MISSED_WHILE_AWAY`] more, then resumes after the last sequence
/// it saw.
async fn watch_with_a_gap(
    mut client: Client,
    ready: oneshot::Sender<()>,
    mut others_progress: watch::Receiver<usize>,
) -> Watcher {
    let mut watcher = Watcher::default();
    let mut stream = open(&mut client, 0).await;
    let mut ready = Some(ready);
    while watcher.changes.len() < DISCONNECT_AFTER && !watcher.done() {
        let message = next(&mut stream).await;
        if message.kind() == Kind::SnapshotComplete
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(());
        }
        watcher.observe(message);
    }
    drop(stream);
    let _ = others_progress
        .wait_for(|seen| *seen >= DISCONNECT_AFTER + MISSED_WHILE_AWAY)
        .await;
    watcher.resumed = true;
    let mut stream = open(&mut client, watcher.last_sequence()).await;
    while !watcher.done() {
        let message = next(&mut stream).await;
        watcher.observe(message);
    }
    watcher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_change_in_order_and_resume_without_gaps() {
    let cluster = Cluster::builder().workers(2).capacity(8).start().await;
    let (progress_tx, progress_rx) = watch::channel(0);
    let (ready_1, ready_1_rx) = oneshot::channel();
    let (ready_2, ready_2_rx) = oneshot::channel();
    let throughout = tokio::spawn(watch_throughout(cluster.client(), ready_1, progress_tx));
    let with_gap = tokio::spawn(watch_with_a_gap(cluster.client(), ready_2, progress_rx));
    ready_1_rx
        .await
        .expect("the first watcher took its snapshot");
    ready_2_rx
        .await
        .expect("the second watcher took its snapshot");

    let began = Instant::now();
    let submitted: HashSet<String> = futures::stream::iter(0..JOBS)
        .map(|_| cluster.submit("demo-fast", &[]))
        .buffer_unordered(32)
        .map(|job| job.id)
        .collect()
        .await;
    assert_eq!(submitted.len(), JOBS, "every submitted job has its own id");

    let (throughout, with_gap) = tokio::time::timeout(WATCH_TIMEOUT, async {
        (throughout.await, with_gap.await)
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the watchers did not see all {JOBS} jobs succeed within {WATCH_TIMEOUT:?}; cluster directory: {}",
            cluster.dir().display()
        )
    });
    let first = throughout.expect("the first watcher panicked");
    let second = with_gap.expect("the second watcher panicked");
    eprintln!(
        "{JOBS} jobs succeeded in {:.1?}; watcher 1 saw {} changes, watcher 2 {} (resumed after {DISCONNECT_AFTER})",
        began.elapsed(),
        first.changes.len(),
        second.changes.len()
    );

    // Watcher 1: the new jobs are exactly the submitted ones.
    let new_ids: HashSet<String> = first
        .changes
        .iter()
        .map(|c| c.job_id.clone())
        .filter(|id| !first.snapshot_ids.contains(id))
        .collect();
    assert_eq!(
        new_ids, submitted,
        "the watcher saw exactly the submitted jobs"
    );

    // Sequences increase across all jobs, after the snapshot's.
    let mut previous = first.snapshot_sequence;
    for change in &first.changes {
        assert!(
            change.sequence > previous,
            "sequence {} after {previous}: {change:?}",
            change.sequence
        );
        previous = change.sequence;
    }

    // Per job: QUEUED, RUNNING, SUCCEEDED, in that order; versions increase; nothing after
    // the end.
    let mut per_job: HashMap<&str, Vec<&Change>> = HashMap::new();
    for change in &first.changes {
        per_job.entry(&change.job_id).or_default().push(change);
    }
    for id in &submitted {
        let changes = &per_job[id.as_str()];
        let mut statuses: Vec<JobStatus> = changes.iter().map(|c| c.status).collect();
        statuses.dedup();
        assert_eq!(
            statuses,
            [JobStatus::Queued, JobStatus::Running, JobStatus::Succeeded],
            "job {id}: {changes:?}"
        );
        assert!(
            changes.windows(2).all(|w| w[1].version > w[0].version),
            "job {id}: versions must increase: {changes:?}"
        );
        assert_eq!(
            changes.last().map(|c| c.status),
            Some(JobStatus::Succeeded),
            "job {id}: a change after SUCCEEDED: {changes:?}"
        );
    }

    // Watcher 2 saw exactly what watcher 1 saw, with no duplicates and no second snapshot.
    assert_eq!(
        second.snapshots_after_resume, 0,
        "a resumed stream sends no snapshot"
    );
    let sequences: HashSet<u64> = second.changes.iter().map(|c| c.sequence).collect();
    assert_eq!(
        sequences.len(),
        second.changes.len(),
        "watcher 2 saw a change twice"
    );
    let of_new_jobs = |w: &Watcher| -> Vec<Change> {
        w.changes
            .iter()
            .filter(|c| submitted.contains(&c.job_id))
            .cloned()
            .collect()
    };
    let (seen_1, seen_2) = (of_new_jobs(&first), of_new_jobs(&second));
    if seen_1 != seen_2 {
        let set_1: HashSet<u64> = seen_1.iter().map(|c| c.sequence).collect();
        let set_2: HashSet<u64> = seen_2.iter().map(|c| c.sequence).collect();
        let missed: Vec<&Change> = seen_1
            .iter()
            .filter(|c| !set_2.contains(&c.sequence))
            .take(10)
            .collect();
        let extra: Vec<&Change> = seen_2
            .iter()
            .filter(|c| !set_1.contains(&c.sequence))
            .take(10)
            .collect();
        panic!(
            "the resumed watcher's changes differ from the continuous one's ({} vs {}); missed: {missed:?}; extra: {extra:?}",
            seen_2.len(),
            seen_1.len()
        );
    }
}
