//! Waiting for jobs by following the control plane's streams, never by sleeping.
//!
//! A wait follows `WatchJobs` (or `WatchJobLog`) until the job or an entry matches. When the
//! control plane restarts, the follow resumes from the last sequence it saw. A wait that runs
//! out of time fails with the job's last state and log.

use std::time::Duration;

use presswork_proto::v1::watch_jobs_response::Kind;
use presswork_proto::v1::{
    GetJobLogRequest, GetJobRequest, Job, JobStatus, LogEntry, WatchJobLogRequest, WatchJobsRequest,
};

use crate::cluster::Cluster;
use crate::execution_log::{ExecutionLog, describe_job};

/// How long a job may take to reach a state in ordinary tests.
pub const WAIT: Duration = Duration::from_secs(30);
/// For waits that include a cancel timeout, a worker lease or a restart.
pub const LONG_WAIT: Duration = Duration::from_secs(60);
/// Between two attempts to open a stream while the control plane is down.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

impl Cluster {
    /// Follows `WatchJobs` until job `job_id` matches `predicate`, and returns that state of
    /// the job. `what` names the awaited state in the failure message.
    pub async fn wait_for_job(
        &self,
        job_id: &str,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&Job) -> bool,
    ) -> Job {
        let mut last_seen = None;
        let mut last_error = None;
        let followed = tokio::time::timeout(
            timeout,
            self.follow_job(job_id, &predicate, &mut last_seen, &mut last_error),
        )
        .await;
        match followed {
            Ok(job) => job,
            Err(_) => {
                let last_seen = last_seen.as_ref().map_or("none".to_owned(), describe_job);
                panic!(
                    "job {job_id} did not become {what} within {timeout:?}\n  last state on WatchJobs: {last_seen}\n  last stream error: {last_error:?}\n{}",
                    self.job_report(job_id).await
                )
            }
        }
    }

    async fn follow_job(
        &self,
        job_id: &str,
        predicate: &impl Fn(&Job) -> bool,
        last_seen: &mut Option<Job>,
        last_error: &mut Option<tonic::Status>,
    ) -> Job {
        // 0 until a snapshot is complete: a resume in the middle of one could miss the job.
        let mut after_sequence = 0;
        loop {
            match self
                .client()
                .watch_jobs(WatchJobsRequest { after_sequence })
                .await
            {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    loop {
                        let message = match stream.message().await {
                            Ok(Some(message)) => message,
                            Ok(None) => break,
                            Err(e) => {
                                *last_error = Some(e);
                                break;
                            }
                        };
                        if matches!(message.kind(), Kind::SnapshotComplete | Kind::Change) {
                            after_sequence = message.sequence;
                        }
                        if let Some(job) = message.job.filter(|j| j.id == job_id) {
                            if predicate(&job) {
                                return job;
                            }
                            *last_seen = Some(job);
                        }
                    }
                }
                Err(e) => *last_error = Some(e),
            }
            // The stream broke (a control plane restart): open it again shortly.
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }

    /// Waits until the job has `status`.
    pub async fn wait_for_status(&self, job_id: &str, status: JobStatus) -> Job {
        self.wait_for_job(job_id, status.short_name(), WAIT, |j| j.status() == status)
            .await
    }

    /// Waits until a worker runs the job.
    pub async fn wait_until_running(&self, job_id: &str) -> Job {
        self.wait_for_status(job_id, JobStatus::Running).await
    }

    /// Waits until the job is SUCCEEDED, FAILED or CANCELLED.
    pub async fn wait_for_terminal(&self, job_id: &str, timeout: Duration) -> Job {
        self.wait_for_job(job_id, "terminal", timeout, |j| j.status().is_terminal())
            .await
    }

    /// Follows `WatchJobLog` until an entry of the job matches `predicate`, and returns it.
    /// Fails at once when the log ends (the job became terminal) without such an entry.
    pub async fn wait_for_log_entry(
        &self,
        job_id: &str,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&LogEntry) -> bool,
    ) -> LogEntry {
        let mut last_error = None;
        let followed = tokio::time::timeout(
            timeout,
            self.follow_log(job_id, &predicate, &mut last_error),
        )
        .await;
        match followed {
            Ok(Some(entry)) => entry,
            Ok(None) => panic!(
                "the log of job {job_id} ended without {what}\n{}",
                self.job_report(job_id).await
            ),
            Err(_) => panic!(
                "no {what} in the log of job {job_id} within {timeout:?}\n  last stream error: {last_error:?}\n{}",
                self.job_report(job_id).await
            ),
        }
    }

    async fn follow_log(
        &self,
        job_id: &str,
        predicate: &impl Fn(&LogEntry) -> bool,
        last_error: &mut Option<tonic::Status>,
    ) -> Option<LogEntry> {
        let mut after_id = 0;
        loop {
            match self
                .client()
                .watch_job_log(WatchJobLogRequest {
                    job_id: job_id.to_owned(),
                    after_id,
                })
                .await
            {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(message)) => {
                                let Some(entry) = message.entry else { continue };
                                after_id = entry.id;
                                if predicate(&entry) {
                                    return Some(entry);
                                }
                            }
                            // The log is complete: the job is terminal.
                            Ok(None) => return None,
                            Err(e) => {
                                *last_error = Some(e);
                                break;
                            }
                        }
                    }
                }
                Err(e) => *last_error = Some(e),
            }
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }

    /// Waits for the first `stage.started` entry of `stage`.
    pub async fn wait_for_stage_started(
        &self,
        job_id: &str,
        stage: presswork_proto::v1::Stage,
    ) -> LogEntry {
        self.wait_for_log_entry(
            job_id,
            &format!("stage.started {}", stage.short_name()),
            WAIT,
            |e| e.event == "stage.started" && e.stage() == stage,
        )
        .await
    }

    /// The job's current state and log, and where the cluster's files are, for a failure
    /// message. Never panics: it is called while reporting another failure.
    pub async fn job_report(&self, job_id: &str) -> String {
        let mut client = self.client();
        let state = match tokio::time::timeout(
            Duration::from_secs(5),
            client.get_job(GetJobRequest {
                job_id: job_id.to_owned(),
            }),
        )
        .await
        {
            Ok(Ok(r)) => r
                .into_inner()
                .job
                .map_or("no job".to_owned(), |j| describe_job(&j)),
            Ok(Err(e)) => format!("GetJob failed: {e:?}"),
            Err(_) => "GetJob did not answer within 5 s".to_owned(),
        };
        let log = match tokio::time::timeout(
            Duration::from_secs(5),
            client.get_job_log(GetJobLogRequest {
                job_id: job_id.to_owned(),
                ..Default::default()
            }),
        )
        .await
        {
            Ok(Ok(r)) => r.into_inner().entries.describe(),
            Ok(Err(e)) => format!("    GetJobLog failed: {e:?}"),
            Err(_) => "    GetJobLog did not answer within 5 s".to_owned(),
        };
        format!(
            "  now: {state}\n  log:\n{log}\n  cluster directory: {}",
            self.dir().display()
        )
    }
}
