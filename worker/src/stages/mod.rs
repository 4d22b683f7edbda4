//! The pipeline stages and the contract every stage follows.
//!
//! A stage is an async function that takes a [`StageContext`] and returns
//! `Result<T, StageError>`. It must observe [`StageContext::token`] at every await (use
//! [`StageContext::cancellable`]) and at least every few milliseconds of CPU work
//! ([`StageContext::is_cancelled`] per chunk), and return [`StageError::Cancelled`] once it
//! fired, having undone whatever it left half done. Its private work directory is removed
//! however the job ends.

pub mod deliver;
pub mod generate;
pub mod ingest;
pub mod sources;
pub mod transform;
pub mod upload;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presswork_proto::v1::connect_request::Msg;
use presswork_proto::v1::{
    ConnectRequest, JobAttempt, JobFinished, LogLevel, LogLine, Progress, Stage, StageStarted,
    job_finished,
};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cancel::JobControl;
use crate::plugin::process::LineSink;

/// How a stage ended without a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// The stage saw its token fire and stopped.
    #[error("cancelled")]
    Cancelled,
    /// The stage could not do its work; the message says what happened and what to do.
    #[error("{0}")]
    Failed(String),
}

/// Progress messages of one job are sent at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Sends one job's messages (stage started, progress, log lines, outcome) to the session.
pub(crate) struct JobReporter {
    job: JobAttempt,
    events: UnboundedSender<ConnectRequest>,
    last_progress: Mutex<Option<Instant>>,
}

impl JobReporter {
    pub(crate) fn new(job: JobAttempt, events: UnboundedSender<ConnectRequest>) -> Self {
        JobReporter {
            job,
            events,
            last_progress: Mutex::new(None),
        }
    }

    pub(crate) fn job(&self) -> &JobAttempt {
        &self.job
    }

    fn send(&self, msg: Msg) {
        // The session owns the receiver for the life of the worker; if it is gone, the worker
        // is exiting and nobody is left to tell.
        let _ = self.events.send(ConnectRequest { msg: Some(msg) });
    }

    pub(crate) fn stage_started(&self, stage: Stage) {
        self.send(Msg::StageStarted(StageStarted {
            job: Some(self.job.clone()),
            stage: stage as i32,
        }));
    }

    pub(crate) fn log(&self, stage: Stage, level: LogLevel, message: String) {
        tracing::debug!(job_id = %self.job.job_id, attempt = self.job.attempt, stage = stage.short_name(), %message, "job log");
        self.send(Msg::Log(LogLine {
            job: Some(self.job.clone()),
            stage: stage as i32,
            level: level as i32,
            message,
        }));
    }

    /// Sends the fraction unless one was sent less than [`PROGRESS_INTERVAL`] ago; a finished
    /// stage (`1.0`) is always reported.
    pub(crate) fn progress(&self, stage: Stage, fraction: f64) {
        let fraction = fraction.clamp(0.0, 1.0);
        {
            let mut last = match self.last_progress.lock() {
                Ok(last) => last,
                Err(poisoned) => poisoned.into_inner(),
            };
            let now = Instant::now();
            let due = last.is_none_or(|at| now.duration_since(at) >= PROGRESS_INTERVAL);
            if !due && fraction < 1.0 {
                return;
            }
            *last = Some(now);
        }
        self.send(Msg::Progress(Progress {
            job: Some(self.job.clone()),
            stage: stage as i32,
            fraction,
        }));
    }

    pub(crate) fn finished(&self, result: job_finished::Result) {
        self.send(Msg::Finished(JobFinished {
            job: Some(self.job.clone()),
            result: Some(result),
        }));
    }
}

/// What a stage gets to do its work: its job, a child token, a private work directory, a
/// logger and a progress reporter.
pub struct StageContext {
    stage: Stage,
    token: CancellationToken,
    work_dir: PathBuf,
    control: Arc<JobControl>,
    reporter: Arc<JobReporter>,
}

impl StageContext {
    pub(crate) fn new(
        stage: Stage,
        control: Arc<JobControl>,
        reporter: Arc<JobReporter>,
        work_dir: PathBuf,
    ) -> Self {
        StageContext {
            stage,
            token: control.token().child_token(),
            work_dir,
            control,
            reporter,
        }
    }

    /// The job this stage runs for.
    pub fn job_id(&self) -> &str {
        &self.reporter.job().job_id
    }

    /// The attempt of the job this stage runs for.
    pub fn attempt(&self) -> u32 {
        self.reporter.job().attempt
    }

    /// Which stage this is.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The stage's token: a child of the job's, fired when the job is cancelled.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether the token fired; check it per chunk of CPU work.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// `Err(Cancelled)` once the token fired: `ctx.check()?` between chunks of work.
    pub fn check(&self) -> Result<(), StageError> {
        if self.is_cancelled() {
            Err(StageError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Awaits `work` unless the token fires first (then `work` is dropped).
    pub async fn cancellable<T>(&self, work: impl Future<Output = T>) -> Result<T, StageError> {
        tokio::select! {
            biased;
            _ = self.token.cancelled() => Err(StageError::Cancelled),
            output = work => Ok(output),
        }
    }

    /// The job's private work directory, removed however the job ends.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// Adds an info line to the job's execution log.
    pub fn log(&self, message: impl Into<String>) {
        self.log_at(LogLevel::Info, message);
    }

    /// Adds a line at `level` to the job's execution log.
    pub fn log_at(&self, level: LogLevel, message: impl Into<String>) {
        self.reporter.log(self.stage, level, message.into());
    }

    /// A sink that adds each line, after `prefix`, to the job's execution log at `level`: for
    /// a child process's output, copied from another task.
    pub fn log_sink(&self, level: LogLevel, prefix: String) -> LineSink {
        let reporter = self.reporter.clone();
        let stage = self.stage;
        Arc::new(move |line: String| reporter.log(stage, level, format!("{prefix}{line}")))
    }

    /// Why the job was cancelled, once it was (for a child process's cancel message).
    pub fn cancel_reason(&self) -> Option<String> {
        self.control
            .stop_cause()
            .map(|(reason, _)| reason.to_string())
    }

    /// Tells, from any thread, how long ago the job's token fired, if it did (for the test
    /// workloads' timelines).
    pub(crate) fn cancel_clock(&self) -> impl Fn() -> Option<Duration> + Send + 'static {
        let control = Arc::clone(&self.control);
        move || control.stop_cause().map(|(_, since)| since)
    }

    /// Reports how far the stage is, 0.0 to 1.0 (throttled per job).
    pub fn progress(&self, fraction: f64) {
        self.reporter.progress(self.stage, fraction);
    }

    /// Claims the point of no return (e.g. just before a rename that publishes the result).
    /// `Err(Cancelled)`: a cancel came first; undo and return it. After `Ok`, a cancel is
    /// acknowledged as past the point of no return and the stage finishes its work.
    pub fn enter_point_of_no_return(&self) -> Result<(), StageError> {
        if self.control.enter_point_of_no_return() {
            Ok(())
        } else {
            Err(StageError::Cancelled)
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A stage context wired to a channel the test reads.

    use super::*;
    use tokio::sync::mpsc;

    /// A context for `stage` of job `job-1`, attempt 1, its control block (to cancel it as
    /// the executor would) and the receiver of its messages.
    pub(crate) fn context(
        stage: Stage,
        work_dir: &Path,
    ) -> (
        StageContext,
        Arc<JobControl>,
        mpsc::UnboundedReceiver<ConnectRequest>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let control = Arc::new(JobControl::new());
        let job = JobAttempt {
            job_id: "job-1".into(),
            attempt: 1,
        };
        let reporter = Arc::new(JobReporter::new(job, tx));
        let ctx = StageContext::new(stage, control.clone(), reporter, work_dir.to_path_buf());
        (ctx, control, rx)
    }

    /// Waits for the next progress message (panics after a generous timeout).
    pub(crate) async fn next_progress(rx: &mut mpsc::UnboundedReceiver<ConnectRequest>) -> f64 {
        let wait = async {
            loop {
                match rx.recv().await.and_then(|m| m.msg) {
                    Some(Msg::Progress(p)) => return p.fraction,
                    Some(_) => continue,
                    None => panic!("the stage dropped its reporter without progress"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("no progress within 30 s")
    }
}
