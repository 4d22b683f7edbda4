//! Follows `WatchJobs` on a connection of its own and notes, on the bench's monotonic clock, when
//! each job was first seen in each status, when its stage started, and whether it changed
//! after it was terminal (it never should).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use presswork_proto::v1::watch_jobs_response::Kind;
use presswork_proto::v1::{Job, JobStatus, Stage, WatchJobsRequest};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::clock::now_ns;
use crate::cluster::Cluster;

const STATUSES: usize = 7;

/// What the bench saw of one job.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The job as last seen.
    pub job: Job,
    /// When it was first seen in each status (indexed by `JobStatus as usize`).
    pub first: [Option<u64>; STATUSES],
    /// When it was first seen with a stage started.
    pub stage_started: Option<u64>,
    /// Changes seen after it was terminal.
    pub after_terminal: usize,
}

impl Seen {
    pub fn first_in(&self, status: JobStatus) -> Option<u64> {
        self.first[status as usize]
    }

    /// When it was first seen terminal.
    pub fn terminal_at(&self) -> Option<u64> {
        [
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .filter_map(|s| self.first_in(s))
        .min()
    }

    pub fn is_terminal(&self) -> bool {
        self.job.status().is_terminal()
    }
}

/// Everything seen so far.
#[derive(Default)]
pub struct State {
    pub jobs: HashMap<String, Seen>,
    /// How many jobs are in each status now.
    pub now_in: [usize; STATUSES],
    /// Changes received after the snapshot.
    pub changes: usize,
    /// Changes of terminal jobs (must stay 0).
    pub after_terminal: usize,
    /// Why the stream ended, if it did.
    pub ended: Option<String>,
}

impl State {
    pub fn count(&self, status: JobStatus) -> usize {
        self.now_in[status as usize]
    }

    fn record(&mut self, job: Job, at: u64) {
        let status = job.status();
        let index = status as usize;
        match self.jobs.get_mut(&job.id) {
            Some(seen) => {
                if job.version <= seen.job.version {
                    return;
                }
                if seen.is_terminal() {
                    seen.after_terminal += 1;
                    self.after_terminal += 1;
                }
                self.now_in[seen.job.status() as usize] -= 1;
                self.now_in[index] += 1;
                seen.first[index].get_or_insert(at);
                if job.stage() != Stage::Unspecified {
                    seen.stage_started.get_or_insert(at);
                }
                seen.job = job;
            }
            None => {
                let mut first = [None; STATUSES];
                first[index] = Some(at);
                let stage_started = (job.stage() != Stage::Unspecified).then_some(at);
                self.now_in[index] += 1;
                self.jobs.insert(
                    job.id.clone(),
                    Seen {
                        job,
                        first,
                        stage_started,
                        after_terminal: 0,
                    },
                );
            }
        }
    }
}

/// A `WatchJobs` follower.
pub struct Observer {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Observer {
    /// Opens the stream and returns once its snapshot is complete, so every job submitted
    /// afterwards is seen as it changes.
    pub async fn start(cluster: &Cluster) -> anyhow::Result<Self> {
        Self::start_on(cluster, 0).await
    }

    /// [`Observer::start`] on control-plane replica `replica`.
    pub async fn start_on(cluster: &Cluster, replica: usize) -> anyhow::Result<Self> {
        let mut client = cluster.new_client_on(replica).await?;
        let mut stream = client
            .watch_jobs(WatchJobsRequest { after_sequence: 0 })
            .await
            .context("WatchJobs")?
            .into_inner();
        let state = Arc::new(Mutex::new(State::default()));
        loop {
            let message = stream
                .message()
                .await?
                .context("WatchJobs ended during its snapshot")?;
            match message.kind() {
                Kind::SnapshotComplete => break,
                _ => {
                    if let Some(job) = message.job {
                        lock(&state).record(job, now_ns());
                    }
                }
            }
        }
        let changed = Arc::new(Notify::new());
        let task = {
            let state = Arc::clone(&state);
            let changed = Arc::clone(&changed);
            tokio::spawn(async move {
                let why = loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            let at = now_ns();
                            if let Some(job) = message.job {
                                let mut state = lock(&state);
                                state.changes += 1;
                                state.record(job, at);
                            }
                            changed.notify_waiters();
                        }
                        Ok(None) => break "WatchJobs ended".to_string(),
                        Err(status) => break format!("WatchJobs failed: {status}"),
                    }
                };
                lock(&state).ended = Some(why);
                changed.notify_waiters();
            })
        };
        Ok(Observer {
            state,
            changed,
            task,
        })
    }

    /// Reads the state.
    pub fn with<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        read(&lock(&self.state))
    }

    /// Waits until `check` answers, for at most `timeout`.
    pub async fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&State) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = lock(&self.state);
                if let Some(answer) = check(&state) {
                    return Ok(answer);
                }
                if let Some(why) = &state.ended {
                    bail!("{why} while waiting for {what}");
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
        }
    }

    /// Waits until job `id` is terminal.
    pub async fn terminal(&self, id: &str, timeout: Duration) -> anyhow::Result<Seen> {
        self.wait(timeout, &format!("job {id} to end"), |s| {
            s.jobs.get(id).filter(|j| j.is_terminal()).cloned()
        })
        .await
    }

    /// Waits until job `id` has been seen in `status` (or ended); returns when it was first.
    pub async fn first_in(
        &self,
        id: &str,
        status: JobStatus,
        timeout: Duration,
    ) -> anyhow::Result<Option<u64>> {
        self.wait(timeout, &format!("job {id} to be {status:?}"), |s| {
            s.jobs
                .get(id)
                .filter(|j| j.first_in(status).is_some() || j.is_terminal())
                .map(|j| j.first_in(status))
        })
        .await
    }

    /// Waits until job `id` has started a stage (or ended).
    pub async fn stage_started(&self, id: &str, timeout: Duration) -> anyhow::Result<Seen> {
        self.wait(timeout, &format!("job {id} to start its stage"), |s| {
            s.jobs
                .get(id)
                .filter(|j| j.stage_started.is_some() || j.is_terminal())
                .cloned()
        })
        .await
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Submits one `blocker` per slot and waits until all of them run at once, on `workers`
/// distinct workers: then every worker is connected and takes jobs. Returns the blockers' ids
/// (still running: cancel them to free the slots).
pub async fn fill_slots(
    cluster: &Cluster,
    observer: &Observer,
    workers: usize,
    slots: usize,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(slots);
    for _ in 0..slots {
        ids.push(
            cluster
                .submit("blocker", &[("hold_ms", "120000")])
                .await?
                .id,
        );
    }
    let wanted: HashSet<String> = ids.iter().cloned().collect();
    observer
        .wait(
            Duration::from_secs(30),
            &format!("{slots} blockers to run on {workers} workers (are the workers starting? see their logs)"),
            |s| {
                let running: Vec<&Seen> = wanted
                    .iter()
                    .filter_map(|id| s.jobs.get(id))
                    .filter(|j| j.job.status() == JobStatus::Running)
                    .collect();
                let distinct: HashSet<&str> =
                    running.iter().map(|j| j.job.worker_id.as_str()).collect();
                (running.len() == slots && distinct.len() == workers).then_some(())
            },
        )
        .await?;
    Ok(ids)
}

/// Cancels `ids` (blockers) and waits until they have ended.
pub async fn release(cluster: &Cluster, observer: &Observer, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        let _ = cluster.cancel(id).await;
    }
    for id in ids {
        observer.terminal(id, Duration::from_secs(30)).await?;
    }
    Ok(())
}
