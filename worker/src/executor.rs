//! The jobs: one supervised task per job, a child token per stage, and the bookkeeping of
//! attempts — running, finished with an outcome not yet acknowledged, or cancelled before
//! their assignment arrived.
//!
//! Each job runs in two tasks: the *pipeline* task runs the stages, and a *supervisor* task
//! (tracked by a [`TaskTracker`]) awaits it, so that a force stop can abort the pipeline and
//! the outcome is still reported — only once the pipeline's code has really stopped. The
//! supervisor then removes the job's work directory and sends `JobFinished`; the job keeps its
//! capacity slot until the session has seen that message.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use presswork_proto::v1::connect_request::Msg;
use presswork_proto::v1::job_finished::Result as Outcome;
use presswork_proto::v1::{
    AssignJob, CancelAck, CancelCommand, Cancelled, ConnectRequest, Failed, JobAttempt,
    JobFinished, LogLevel, Stage, Succeeded,
};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::{AbortHandle, JoinError, JoinHandle};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::cancel::{CancelEffect, CancelReason, JobControl};
use crate::configured::{self, ConfiguredReport, Delivery, WorkerOffer};
use crate::plugin::Connectors;
use crate::reach::Reach;
use crate::reports::{self, ReportPlan};
use crate::secrets::Secrets;
use crate::stages::generate::{ReportDocument, TableDocument};
use crate::stages::{
    JobReporter, StageContext, StageError, deliver, generate, ingest, sources, transform, upload,
};
use crate::table::Transformer;
use crate::test_reports::{self, Workload};

/// How many cancels for not-yet-assigned attempts are remembered (oldest forgotten first).
const EARLY_CANCELS: usize = 4096;

/// What the executor needs from the worker's configuration.
#[derive(Debug, Clone)]
pub(crate) struct ExecutorSettings {
    pub(crate) capacity: u32,
    pub(crate) enable_test_reports: bool,
    pub(crate) output_dir: PathBuf,
    pub(crate) work_dir: PathBuf,
    pub(crate) connectors: Connectors,
    /// Resolves configured reports' secret references.
    pub(crate) secrets: Secrets,
    /// For HTTP sources and deliveries (one connection pool for every job).
    pub(crate) http: reqwest::Client,
    /// What jobs may reach (directories, privileged SQL roles; hosts are the client's).
    pub(crate) reach: Arc<Reach>,
}

/// What one job runs: a built-in report, or a stored configuration.
enum JobPlan {
    BuiltIn(ReportPlan),
    Configured(Box<ConfiguredReport>),
}

struct RunningJob {
    control: Arc<JobControl>,
    pipeline: AbortHandle,
}

struct FinishedJob {
    message: JobFinished,
    /// Written to a stream at least once (so it is re-sent first after a reconnect).
    sent: bool,
}

/// The worker's jobs. Owned by the session task; job tasks talk back through `events`.
pub(crate) struct Executor {
    settings: ExecutorSettings,
    events: UnboundedSender<ConnectRequest>,
    running: HashMap<JobAttempt, RunningJob>,
    finished: HashMap<JobAttempt, FinishedJob>,
    early_cancels: EarlyCancels,
    tracker: TaskTracker,
    accepting: bool,
}

impl Executor {
    pub(crate) fn new(settings: ExecutorSettings, events: UnboundedSender<ConnectRequest>) -> Self {
        Executor {
            settings,
            events,
            running: HashMap::new(),
            finished: HashMap::new(),
            early_cancels: EarlyCancels::default(),
            tracker: TaskTracker::new(),
            accepting: true,
        }
    }

    /// Attempts running or finished with an outcome not yet acknowledged.
    pub(crate) fn known(&self) -> Vec<JobAttempt> {
        self.running
            .keys()
            .chain(self.finished.keys())
            .cloned()
            .collect()
    }

    /// Outcomes already written to a stream and not acknowledged: to re-send after a reconnect.
    pub(crate) fn sent_outcomes(&self) -> Vec<JobFinished> {
        self.finished
            .values()
            .filter(|finished| finished.sent)
            .map(|finished| finished.message.clone())
            .collect()
    }

    pub(crate) fn has_running(&self) -> bool {
        !self.running.is_empty()
    }

    /// No job running and every outcome acknowledged.
    pub(crate) fn is_idle(&self) -> bool {
        self.running.is_empty() && self.finished.is_empty()
    }

    /// The supervisor tasks, to wait for on exit.
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Starts an assigned job, or answers at once (returned messages) when it is cancelled
    /// already or cannot run. Duplicate assignments are ignored.
    pub(crate) fn assign(&mut self, assign: AssignJob) -> Vec<Msg> {
        let Some(job) = assign.job else {
            warn!("ignoring an assignment that names no job attempt");
            return Vec::new();
        };
        if self.running.contains_key(&job) || self.finished.contains_key(&job) {
            debug!(job_id = %job.job_id, attempt = job.attempt, "ignoring a duplicate assignment");
            return Vec::new();
        }
        if let Some(reason) = self.early_cancels.take(&job) {
            info!(job_id = %job.job_id, attempt = job.attempt, %reason, "job cancelled before its assignment arrived; not running it");
            let ack = Msg::CancelAck(CancelAck {
                job: Some(job.clone()),
                stage: Stage::Unspecified as i32,
                past_point_of_no_return: false,
            });
            let cancelled = Outcome::Cancelled(Cancelled {
                stage: Stage::Unspecified as i32,
                stop_duration_us: 0,
                forced: false,
                reason: reason.to_string(),
                fenced: reason.is_fencing(),
            });
            return vec![ack, self.finish_now(job, cancelled)];
        }
        let planned = if !self.accepting {
            Err("worker shutting down: the job was not started; the control plane can assign it to another worker".to_string())
        } else if !is_safe_file_name(&job.job_id) {
            Err(format!(
                "job id `{}` cannot name an output file (use letters, digits, '-', '_' and '.')",
                job.job_id
            ))
        } else if let Some(config) = &assign.config {
            let offer = WorkerOffer {
                output_dir: &self.settings.output_dir,
                connectors: &self.settings.connectors,
                secrets: &self.settings.secrets,
            };
            configured::plan(config, &assign.params, &job.job_id, &offer)
                .map(|report| JobPlan::Configured(Box::new(report)))
        } else {
            reports::plan(
                &assign.report,
                &assign.params,
                self.settings.enable_test_reports,
                &self.settings.connectors,
            )
            .map(JobPlan::BuiltIn)
        };
        let refusal = match planned {
            Ok(_) if self.running.len() >= self.settings.capacity as usize => format!(
                "worker over capacity: it runs at most {} jobs at once and that many are running; submit the job again (this is a dispatcher bug if it repeats)",
                self.settings.capacity
            ),
            Ok(plan) => {
                self.start(job, assign.report, plan);
                return Vec::new();
            }
            Err(error) => error,
        };
        warn!(job_id = %job.job_id, attempt = job.attempt, report = %assign.report, error = %refusal, "job refused");
        let failed = Outcome::Failed(Failed {
            stage: Stage::Unspecified as i32,
            error: refusal,
        });
        vec![self.finish_now(job, failed)]
    }

    /// Fires the job's token at once and returns the acknowledgement to send. A cancel for an
    /// attempt not assigned yet is remembered; one for a finished attempt is ignored.
    pub(crate) fn cancel(&mut self, command: CancelCommand) -> Option<Msg> {
        let job = command.job?;
        let reason = CancelReason::UserRequested {
            by: command.requested_by,
            reason: command.reason,
        };
        let Some(running) = self.running.get(&job) else {
            if !self.finished.contains_key(&job) {
                debug!(job_id = %job.job_id, attempt = job.attempt, "cancel for an attempt not assigned yet; remembering it");
                self.early_cancels.remember(job, reason);
            }
            return None;
        };
        let effect = running.control.cancel(reason);
        let stage = running.control.stage();
        let CancelEffect::Fired {
            past_point_of_no_return,
        } = effect
        else {
            return None;
        };
        info!(job_id = %job.job_id, attempt = job.attempt, stage = stage.short_name(), past_point_of_no_return, "cancel delivered to the job");
        Some(Msg::CancelAck(CancelAck {
            job: Some(job),
            stage: stage as i32,
            past_point_of_no_return,
        }))
    }

    /// Aborts a job that ignored its token. Its slot stays taken until its task has ended.
    pub(crate) fn force_stop(&mut self, job: &JobAttempt) {
        if let Some(running) = self.running.get(job) {
            warn!(job_id = %job.job_id, attempt = job.attempt, stage = running.control.stage().short_name(), "force-stopping a job that did not stop when cancelled");
            running.control.cancel(CancelReason::ForceStopped);
            running.pipeline.abort();
        }
    }

    /// The attempts running now.
    pub(crate) fn running_attempts(&self) -> Vec<JobAttempt> {
        self.running.keys().cloned().collect()
    }

    /// Cancels every running job (shutdown, fencing); returns how many there were.
    pub(crate) fn cancel_all(&self, reason: &CancelReason) -> usize {
        for running in self.running.values() {
            running.control.cancel(reason.clone());
        }
        self.running.len()
    }

    /// Aborts every running job (the shutdown drain ran out of time).
    pub(crate) fn abort_all(&self) {
        for running in self.running.values() {
            running.pipeline.abort();
        }
    }

    /// False once the worker stopped taking jobs (it is draining for shutdown).
    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting
    }

    /// Refuses new jobs from now on.
    pub(crate) fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// Notes a message from a job on its way out: a `JobFinished` frees the job's slot and
    /// keeps the outcome until it is acknowledged.
    pub(crate) fn record(&mut self, msg: &ConnectRequest) {
        if let Some(Msg::Finished(finished)) = &msg.msg
            && let Some(job) = &finished.job
        {
            self.running.remove(job);
            self.finished.insert(
                job.clone(),
                FinishedJob {
                    message: finished.clone(),
                    sent: false,
                },
            );
        }
    }

    /// The outcome of `job` was written to a stream.
    pub(crate) fn mark_sent(&mut self, job: &JobAttempt) {
        if let Some(finished) = self.finished.get_mut(job) {
            finished.sent = true;
        }
    }

    /// The control plane applied the outcome of `job`: stop re-sending it.
    pub(crate) fn acknowledge(&mut self, job: &JobAttempt) {
        if self.finished.remove(job).is_some() {
            debug!(job_id = %job.job_id, attempt = job.attempt, "outcome acknowledged");
        }
    }

    fn finish_now(&mut self, job: JobAttempt, result: Outcome) -> Msg {
        let message = JobFinished {
            job: Some(job.clone()),
            result: Some(result),
        };
        self.finished.insert(
            job,
            FinishedJob {
                message: message.clone(),
                sent: false,
            },
        );
        Msg::Finished(message)
    }

    fn start(&mut self, attempt: JobAttempt, report: String, plan: JobPlan) {
        info!(job_id = %attempt.job_id, attempt = attempt.attempt, %report, "starting job");
        let control = Arc::new(JobControl::new());
        let reporter = Arc::new(JobReporter::new(attempt.clone(), self.events.clone()));
        let work_dir = self.settings.work_dir.join(format!(
            "presswork-{}-{}-{}",
            attempt.job_id,
            attempt.attempt,
            uuid::Uuid::new_v4().simple()
        ));
        let pipeline = Pipeline {
            plan,
            control: control.clone(),
            reporter: reporter.clone(),
            work_dir: work_dir.clone(),
            output_dir: self.settings.output_dir.clone(),
            http: self.settings.http.clone(),
            reach: Arc::clone(&self.settings.reach),
        };
        // Stages run on their own runtime so that CPU-bound stage code never delays the stream
        // that brings the cancel (see stage_runtime).
        let handle = crate::stage_runtime::handle().spawn(async move { pipeline.run().await });
        let abort = handle.abort_handle();
        self.tracker
            .spawn(supervise(handle, control.clone(), reporter, work_dir));
        self.running.insert(
            attempt,
            RunningJob {
                control,
                pipeline: abort,
            },
        );
    }
}

/// Where and why a job's pipeline stopped early.
struct StageFailure {
    stage: Stage,
    error: StageError,
}

/// One job's run through the stages.
struct Pipeline {
    plan: JobPlan,
    control: Arc<JobControl>,
    reporter: Arc<JobReporter>,
    work_dir: PathBuf,
    output_dir: PathBuf,
    http: reqwest::Client,
    reach: Arc<Reach>,
}

impl Pipeline {
    /// Runs the job; returns where its report went.
    async fn run(self) -> Result<String, StageFailure> {
        match &self.plan {
            JobPlan::BuiltIn(plan) => match plan.workload {
                Some(workload) => self.run_test_workload(workload).await,
                None => self.run_built_in(plan).await,
            },
            JobPlan::Configured(report) => self.run_configured(report).await,
        }
    }

    async fn create_work_dir(&self) -> Result<(), StageFailure> {
        tokio::fs::create_dir_all(&self.work_dir)
            .await
            .map_err(|e| StageFailure {
                stage: Stage::Unspecified,
                error: StageError::Failed(format!(
                    "cannot create the work directory {}: {e}; check --work-dir",
                    self.work_dir.display()
                )),
            })
    }

    async fn run_built_in(&self, plan: &ReportPlan) -> Result<String, StageFailure> {
        self.create_work_dir().await?;
        let job = self.reporter.job();

        let ctx = self.enter(Stage::Ingest)?;
        let rows = self
            .stage(&ctx, ingest::run(&ctx, &plan.input, &self.reach))
            .await?;

        let ctx = self.enter(Stage::Transform)?;
        let summary = self.stage(&ctx, transform::run(&ctx, &rows)).await?;

        let ctx = self.enter(Stage::Generate)?;
        let doc = ReportDocument {
            title: "Sales by region",
            job_id: &job.job_id,
            attempt: job.attempt,
            params: &plan.params,
            summary: &summary,
            generated_at: SystemTime::now(),
        };
        let pdf = self.stage(&ctx, generate::run(&ctx, &doc)).await?;

        let ctx = self.enter(Stage::Deliver)?;
        let file_name = format!("{}.pdf", job.job_id);
        let path = self
            .stage(&ctx, deliver::run(&ctx, &pdf, &self.output_dir, &file_name))
            .await?;
        Ok(path.display().to_string())
    }

    /// A stored configuration: rows stream from the source into the transformation during
    /// ingest; transform sorts and limits what it kept; generate lays the table out; deliver
    /// publishes it in a directory or uploads it.
    async fn run_configured(&self, report: &ConfiguredReport) -> Result<String, StageFailure> {
        self.create_work_dir().await?;
        let job = self.reporter.job();

        let ctx = self.enter(Stage::Ingest)?;
        let mut transformer =
            Transformer::new(&report.transformation).map_err(|error| StageFailure {
                stage: Stage::Ingest,
                error: StageError::Failed(format!(
                    "report configuration `{}`: {error}; fix it with `presswork reports update {}`",
                    report.name, report.name
                )),
            })?;
        self.stage(
            &ctx,
            sources::read(
                &ctx,
                &report.source,
                &self.http,
                &self.reach,
                &mut transformer,
            ),
        )
        .await?;

        let ctx = self.enter(Stage::Transform)?;
        let table = self
            .stage(&ctx, transform::finish_table(&ctx, transformer))
            .await?;

        let ctx = self.enter(Stage::Generate)?;
        let doc = TableDocument {
            title: &report.template.title,
            subtitle: &report.template.subtitle,
            job_id: &job.job_id,
            attempt: job.attempt,
            params: &report.params,
            table: &table,
            totals: report
                .template
                .totals
                .then(|| generate::labelled_totals(&table)),
            page_size: report.template.page_size,
            generated_at: SystemTime::now(),
        };
        let pdf = self.stage(&ctx, generate::run_table(&ctx, &doc)).await?;
        drop(table);

        let ctx = self.enter(Stage::Deliver)?;
        match &report.delivery {
            Delivery::Directory { dir, file_name } => {
                let deliver = async {
                    let dir = self
                        .reach
                        .delivery_dir(dir, &self.output_dir)
                        .await
                        .map_err(|problem| {
                            StageError::Failed(format!(
                                "cannot deliver to {}: {problem}",
                                dir.display()
                            ))
                        })?;
                    deliver::run(&ctx, &pdf, &dir, file_name).await
                };
                let path = self.stage(&ctx, deliver).await?;
                Ok(path.display().to_string())
            }
            Delivery::Http(delivery) => {
                let upload = upload::run(&ctx, &self.http, &self.reach.allow_hosts, &pdf, delivery);
                self.stage(&ctx, upload).await
            }
        }
    }

    /// A test workload (`--enable-test-reports`) instead of the pipeline: one stage, or none
    /// for `noop`. It needs no work directory.
    async fn run_test_workload(&self, workload: Workload) -> Result<String, StageFailure> {
        if !workload.has_stage() {
            return Ok("/dev/null".to_string());
        }
        let ctx = self.enter(Stage::Ingest)?;
        let path = self
            .stage(&ctx, test_reports::run(&ctx, workload, &self.output_dir))
            .await?;
        Ok(path.display().to_string())
    }

    /// Starts `stage` unless the job was cancelled since the last one.
    fn enter(&self, stage: Stage) -> Result<StageContext, StageFailure> {
        if self.control.token().is_cancelled() {
            return Err(StageFailure {
                stage: self.control.stage(),
                error: StageError::Cancelled,
            });
        }
        self.control.set_stage(stage);
        self.reporter.stage_started(stage);
        Ok(StageContext::new(
            stage,
            self.control.clone(),
            self.reporter.clone(),
            self.work_dir.clone(),
        ))
    }

    /// Runs the report's behaviour for the stage, then the stage's work.
    async fn stage<T>(
        &self,
        ctx: &StageContext,
        work: impl Future<Output = Result<T, StageError>>,
    ) -> Result<T, StageFailure> {
        let before = match &self.plan {
            JobPlan::BuiltIn(plan) => plan.before_stage(ctx).await,
            JobPlan::Configured(_) => Ok(()),
        };
        let result = match before {
            Ok(()) => work.await,
            Err(error) => Err(error),
        };
        result.map_err(|error| StageFailure {
            stage: ctx.stage(),
            error,
        })
    }
}

/// Awaits the pipeline, turns how it ended into the outcome, cleans up, and reports.
async fn supervise(
    pipeline: JoinHandle<Result<String, StageFailure>>,
    control: Arc<JobControl>,
    reporter: Arc<JobReporter>,
    work_dir: PathBuf,
) {
    let joined = pipeline.await;
    let outcome = outcome(&control, joined);
    control.finish();
    if let Err(error) = tokio::fs::remove_dir_all(&work_dir).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        warn!(dir = %work_dir.display(), %error, "could not remove a job's work directory; delete it by hand");
    }
    let job = reporter.job();
    match &outcome {
        Outcome::Succeeded(done) => {
            info!(job_id = %job.job_id, attempt = job.attempt, output = %done.output, "job succeeded");
        }
        Outcome::Failed(failed) => {
            let stage = stage_name(failed.stage);
            warn!(job_id = %job.job_id, attempt = job.attempt, stage, error = %failed.error, "job failed");
            reporter.log(
                Stage::try_from(failed.stage).unwrap_or_default(),
                LogLevel::Error,
                format!("{stage} failed: {}", failed.error),
            );
        }
        Outcome::Cancelled(cancelled) => {
            let stage = stage_name(cancelled.stage);
            info!(job_id = %job.job_id, attempt = job.attempt, stage, stop_duration_us = cancelled.stop_duration_us, forced = cancelled.forced, reason = %cancelled.reason, "job cancelled");
            let how = if cancelled.forced {
                "force-stopped"
            } else {
                "stopped"
            };
            reporter.log(
                Stage::try_from(cancelled.stage).unwrap_or_default(),
                LogLevel::Warn,
                format!(
                    "{how} in {stage} {} µs after the cancel: {}",
                    cancelled.stop_duration_us, cancelled.reason
                ),
            );
        }
    }
    reporter.finished(outcome);
}

fn outcome(
    control: &JobControl,
    joined: Result<Result<String, StageFailure>, JoinError>,
) -> Outcome {
    let cancelled = |stage: Stage, forced: bool| {
        let (reason, since) = control
            .stop_cause()
            .unwrap_or((CancelReason::ForceStopped, Default::default()));
        Outcome::Cancelled(Cancelled {
            stage: stage as i32,
            stop_duration_us: u64::try_from(since.as_micros()).unwrap_or(u64::MAX),
            forced,
            reason: reason.to_string(),
            fenced: reason.is_fencing(),
        })
    };
    match joined {
        Ok(Ok(output)) => Outcome::Succeeded(Succeeded { output }),
        Ok(Err(StageFailure {
            stage,
            error: StageError::Failed(error),
        })) => Outcome::Failed(Failed {
            stage: stage as i32,
            error,
        }),
        Ok(Err(StageFailure {
            stage,
            error: StageError::Cancelled,
        })) => cancelled(stage, false),
        Err(aborted) if aborted.is_cancelled() => cancelled(control.stage(), true),
        Err(panic) => Outcome::Failed(Failed {
            stage: control.stage() as i32,
            error: format!(
                "the job panicked ({panic}); this is a worker bug: please report it with the worker's log"
            ),
        }),
    }
}

fn stage_name(stage: i32) -> &'static str {
    match Stage::try_from(stage).unwrap_or_default() {
        Stage::Unspecified => "before any stage",
        stage => stage.short_name(),
    }
}

/// Letters, digits, `-`, `_` and `.`, not starting with a dot: safe as a file name.
fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Cancels that arrived before their assignment (a cancel can overtake its AssignJob).
#[derive(Default)]
struct EarlyCancels {
    order: VecDeque<JobAttempt>,
    reasons: HashMap<JobAttempt, CancelReason>,
}

impl EarlyCancels {
    fn remember(&mut self, job: JobAttempt, reason: CancelReason) {
        if self.reasons.insert(job.clone(), reason).is_none() {
            self.order.push_back(job);
        }
        if self.order.len() > EARLY_CANCELS
            && let Some(oldest) = self.order.pop_front()
        {
            self.reasons.remove(&oldest);
        }
    }

    fn take(&mut self, job: &JobAttempt) -> Option<CancelReason> {
        let reason = self.reasons.remove(job)?;
        self.order.retain(|remembered| remembered != job);
        Some(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::mpsc;

    struct Fixture {
        executor: Executor,
        events: mpsc::UnboundedReceiver<ConnectRequest>,
        _output: tempfile::TempDir,
        work: tempfile::TempDir,
    }

    fn fixture(capacity: u32) -> Fixture {
        let output = tempfile::tempdir().expect("tempdir");
        let work = tempfile::tempdir().expect("tempdir");
        let (tx, events) = mpsc::unbounded_channel();
        let settings = ExecutorSettings {
            capacity,
            enable_test_reports: true,
            output_dir: output.path().to_path_buf(),
            work_dir: work.path().to_path_buf(),
            connectors: Connectors::default(),
            secrets: Secrets::default(),
            http: reqwest::Client::new(),
            reach: Arc::new(Reach::default()),
        };
        Fixture {
            executor: Executor::new(settings, tx),
            events,
            _output: output,
            work,
        }
    }

    fn attempt(id: &str) -> JobAttempt {
        JobAttempt {
            job_id: id.into(),
            attempt: 1,
        }
    }

    fn assignment(id: &str, report: &str, params: &[(&str, &str)]) -> AssignJob {
        AssignJob {
            job: Some(attempt(id)),
            report: report.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            config: None,
        }
    }

    fn cancel_command(id: &str) -> CancelCommand {
        CancelCommand {
            job: Some(attempt(id)),
            requested_by: "ada".into(),
            reason: "wrong quarter".into(),
        }
    }

    impl Fixture {
        /// The next message from a job, recorded as the session would.
        async fn next_event(&mut self) -> Msg {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.events.recv())
                .await
                .expect("a job message within 30 s")
                .expect("the channel is open");
            self.executor.record(&msg);
            msg.msg.expect("a message")
        }

        async fn until_stage(&mut self, stage: Stage) {
            loop {
                if let Msg::StageStarted(started) = self.next_event().await
                    && started.stage == stage as i32
                {
                    return;
                }
            }
        }

        async fn outcome(&mut self) -> Outcome {
            loop {
                if let Msg::Finished(finished) = self.next_event().await {
                    return finished.result.expect("an outcome");
                }
            }
        }
    }

    fn failure(messages: Vec<Msg>) -> String {
        match messages.as_slice() {
            [
                Msg::Finished(JobFinished {
                    result: Some(Outcome::Failed(failed)),
                    ..
                }),
            ] => failed.error.clone(),
            other => panic!("expected one failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn demo_fast_delivers_a_pdf_and_logs_its_steps() {
        let mut f = fixture(2);
        assert!(
            f.executor
                .assign(assignment("job-1", "demo-fast", &[]))
                .is_empty()
        );
        let mut stages = Vec::new();
        let mut logs = Vec::new();
        let outcome = loop {
            match f.next_event().await {
                Msg::StageStarted(started) => stages.push(started.stage),
                Msg::Log(line) => logs.push(line.message),
                Msg::Finished(finished) => break finished.result.expect("an outcome"),
                _ => {}
            }
        };
        let Outcome::Succeeded(done) = outcome else {
            panic!("expected success, got {outcome:?} after {logs:?}");
        };
        assert!(
            std::fs::read(&done.output)
                .expect("the report")
                .starts_with(b"%PDF")
        );
        assert!(done.output.ends_with("job-1.pdf"), "{}", done.output);
        assert_eq!(stages, [1, 2, 3, 4]);
        assert_eq!(logs[0], "read 240 rows from sample data");
        assert!(
            logs.iter().any(|l| l.starts_with("wrote 1-page PDF")),
            "{logs:?}"
        );
        assert_eq!(logs.last(), Some(&format!("delivered to {}", done.output)));
        // The work directory is gone; the outcome waits for its acknowledgement.
        assert_eq!(
            std::fs::read_dir(f.work.path()).expect("work dir").count(),
            0
        );
        assert_eq!(f.executor.known(), vec![attempt("job-1")]);
        f.executor.acknowledge(&attempt("job-1"));
        assert!(f.executor.is_idle());
    }

    #[tokio::test]
    async fn a_cancelled_job_reports_the_stage_it_stopped_in() {
        let mut f = fixture(2);
        f.executor.assign(assignment(
            "job-1",
            "demo-slow",
            &[("slow_stage", "transform")],
        ));
        f.until_stage(Stage::Transform).await;

        let ack = f.executor.cancel(cancel_command("job-1"));
        let Some(Msg::CancelAck(ack)) = ack else {
            panic!("expected an ack, got {ack:?}");
        };
        assert_eq!(ack.stage, Stage::Transform as i32);
        assert!(!ack.past_point_of_no_return);

        let outcome = f.outcome().await;
        let Outcome::Cancelled(cancelled) = outcome else {
            panic!("expected a cancel, got {outcome:?}");
        };
        assert_eq!(cancelled.stage, Stage::Transform as i32);
        assert_eq!(cancelled.reason, "wrong quarter");
        assert!(!cancelled.forced);
        assert!(!f.executor.has_running());
        // A cancel re-sent for the finished attempt is ignored.
        assert!(f.executor.cancel(cancel_command("job-1")).is_none());
        assert_eq!(
            std::fs::read_dir(f.work.path()).expect("work dir").count(),
            0
        );
    }

    #[tokio::test]
    async fn a_cancel_that_overtakes_its_assignment_stops_the_job_before_any_stage() {
        let mut f = fixture(2);
        assert!(f.executor.cancel(cancel_command("job-1")).is_none());
        let messages = f.executor.assign(assignment("job-1", "demo-fast", &[]));
        let [Msg::CancelAck(ack), Msg::Finished(finished)] = messages.as_slice() else {
            panic!("expected an ack and an outcome, got {messages:?}");
        };
        assert_eq!(ack.stage, Stage::Unspecified as i32);
        let Some(Outcome::Cancelled(cancelled)) = &finished.result else {
            panic!("expected a cancel, got {finished:?}");
        };
        assert_eq!(cancelled.stage, Stage::Unspecified as i32);
        assert!(!f.executor.has_running());
        assert!(f.events.try_recv().is_err(), "no stage ran");
        // The same assignment again is a duplicate.
        assert!(
            f.executor
                .assign(assignment("job-1", "demo-fast", &[]))
                .is_empty()
        );
    }

    #[tokio::test]
    async fn refusals_fail_the_job_at_once() {
        let mut f = fixture(1);
        assert!(
            f.executor
                .assign(assignment("job-1", "demo-slow", &[]))
                .is_empty()
        );
        assert!(
            f.executor
                .assign(assignment("job-1", "demo-slow", &[]))
                .is_empty(),
            "duplicate"
        );
        let error = failure(f.executor.assign(assignment("job-2", "demo-fast", &[])));
        assert!(error.starts_with("worker over capacity"), "{error}");
        let error = failure(f.executor.assign(assignment("job-3", "demo-nope", &[])));
        assert!(error.starts_with("unknown report `demo-nope`"), "{error}");
        let error = failure(f.executor.assign(assignment("../etc", "demo-fast", &[])));
        assert!(error.contains("cannot name an output file"), "{error}");

        f.executor.cancel_all(&CancelReason::WorkerShutdown);
        let Outcome::Cancelled(cancelled) = f.outcome().await else {
            panic!("expected a cancel");
        };
        assert_eq!(cancelled.reason, "worker shutting down");
        assert!(!cancelled.fenced, "a shutdown is not fencing");
    }

    #[tokio::test]
    async fn a_job_stopped_by_fencing_says_so_in_its_outcome() {
        let mut f = fixture(1);
        f.executor.assign(assignment("job-1", "demo-slow", &[]));
        f.until_stage(Stage::Ingest).await;
        f.executor.cancel_all(&CancelReason::LeaseLost {
            silent_for: Duration::from_secs(2),
        });
        let Outcome::Cancelled(cancelled) = f.outcome().await else {
            panic!("expected a cancel");
        };
        assert!(cancelled.fenced);
        assert!(!cancelled.forced);
        assert_eq!(
            cancelled.reason,
            "lease lost: no contact with the control plane for 2 s"
        );
    }

    #[tokio::test]
    async fn a_job_that_ignores_its_token_is_force_stopped() {
        let mut f = fixture(1);
        f.executor.assign(assignment("job-1", "demo-stuck", &[]));
        f.until_stage(Stage::Transform).await;
        assert!(f.executor.cancel(cancel_command("job-1")).is_some());
        f.executor.force_stop(&attempt("job-1"));
        let Outcome::Cancelled(cancelled) = f.outcome().await else {
            panic!("expected a cancel");
        };
        assert!(cancelled.forced);
        assert_eq!(cancelled.stage, Stage::Transform as i32);
        assert_eq!(cancelled.reason, "wrong quarter");
        assert_eq!(
            std::fs::read_dir(f.work.path()).expect("work dir").count(),
            0
        );
    }

    #[test]
    fn early_cancels_forget_the_oldest() {
        let mut early = EarlyCancels::default();
        for i in 0..=EARLY_CANCELS {
            early.remember(attempt(&i.to_string()), CancelReason::WorkerShutdown);
        }
        assert_eq!(early.take(&attempt("0")), None);
        assert!(early.take(&attempt("1")).is_some());
        assert_eq!(early.reasons.len(), EARLY_CANCELS - 1);
    }
}
