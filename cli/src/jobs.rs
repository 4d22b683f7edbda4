//! `presswork jobs …`: submit, list, inspect, cancel, watch and read the log of jobs.

use std::collections::HashMap;
use std::io::Write;

use clap::{Args, Subcommand};
use presswork_proto::v1::{
    CancelJobRequest, GetJobLogRequest, GetJobRequest, JobStatus, ListJobsRequest, LogEntry,
    SubmitJobRequest, WatchJobLogRequest, WatchJobsRequest, WatchJobsResponse,
    watch_jobs_response::Kind,
};
use serde_json::Value;
use tonic::Status;

use crate::client::JobsClient;
use crate::error::CliError;
use crate::resume::{ReconnectPolicy, Reconnector, WatchCursor};
use crate::{now_ms, output};

/// The largest page the control plane serves (`ListJobsRequest.page_size`).
const MAX_PAGE_SIZE: usize = 1_000;

/// The statuses `--status` accepts, in lifecycle order.
pub const STATUS_NAMES: [&str; 6] = [
    "queued",
    "running",
    "cancelling",
    "succeeded",
    "failed",
    "cancelled",
];

/// Work with report jobs.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Queue a job for a report and print its id.
    Submit(SubmitArgs),
    /// List the newest jobs, optionally only those in some statuses.
    List(ListArgs),
    /// Show everything about a job, including each milestone of its cancel.
    Get {
        /// The job id.
        id: String,
    },
    /// Cancel a queued or running job (administrators only).
    Cancel {
        /// The job id.
        id: String,
        /// Why; recorded in the job's execution log.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Print each job change as it happens (after the current state of every job).
    ///
    /// Reconnects by itself when the stream breaks and resumes after the last change seen,
    /// so no change is lost. Stop it with Ctrl-C.
    Watch,
    /// Print a job's execution log.
    Log {
        /// The job id.
        id: String,
        /// Keep printing new entries until the job has finished.
        #[arg(long, short)]
        follow: bool,
    },
}

/// Arguments of `jobs submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The report to run.
    #[arg(long, value_name = "NAME")]
    pub report: String,
    /// A report parameter; repeat for several.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
}

/// Arguments of `jobs list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this status (queued, running, cancelling, succeeded, failed, cancelled);
    /// repeat or separate with commas for several.
    #[arg(long, value_name = "STATUS", value_parser = parse_status, value_delimiter = ',')]
    pub status: Vec<JobStatus>,
    /// How many of the newest jobs to show.
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

/// Parses `KEY=VALUE` (the value may itself contain `=`).
pub fn parse_param(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some(("", _)) => Err(format!("`{raw}` has an empty key; expected KEY=VALUE")),
        Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
        None => Err(format!("`{raw}` is not KEY=VALUE (no `=`)")),
    }
}

/// Parses a status name case-insensitively.
pub fn parse_status(raw: &str) -> Result<JobStatus, String> {
    match JobStatus::from_short_name(raw.trim()) {
        Some(JobStatus::Unspecified) | None => Err(format!(
            "unknown status `{raw}`; valid statuses: {}",
            STATUS_NAMES.join(", ")
        )),
        Some(status) => Ok(status),
    }
}

/// Everything a command needs: the client, where it points, the output mode and streams.
pub struct Context<'a> {
    /// The `JobService` client.
    pub client: JobsClient,
    /// The control plane URL, for error messages.
    pub server: String,
    /// Machine output (`--json`) instead of text for people.
    pub json: bool,
    /// How `watch` and `log --follow` reconnect.
    pub reconnect: ReconnectPolicy,
    /// Where results go.
    pub out: &'a mut dyn Write,
    /// Where notes and progress remarks go.
    pub err: &'a mut dyn Write,
}

impl Context<'_> {
    fn failed(&self, status: Status, job_id: Option<&str>) -> CliError {
        CliError::rpc(status, &self.server, job_id)
    }

    fn print_json(&mut self, value: &Value) -> Result<(), CliError> {
        crate::write_json(self.out, value)
    }

    fn print_json_line(&mut self, value: &Value) -> Result<(), CliError> {
        let text = serde_json::to_string(value).map_err(std::io::Error::from)?;
        writeln!(self.out, "{text}")?;
        self.out.flush()?;
        Ok(())
    }
}

/// Runs one `jobs` command.
pub async fn run(command: JobsCommand, ctx: &mut Context<'_>) -> Result<(), CliError> {
    match command {
        JobsCommand::Submit(args) => submit(ctx, args).await,
        JobsCommand::List(args) => list(ctx, args).await,
        JobsCommand::Get { id } => get(ctx, &id).await,
        JobsCommand::Cancel { id, reason } => cancel(ctx, &id, reason).await,
        JobsCommand::Watch => watch(ctx).await,
        JobsCommand::Log { id, follow } => {
            if follow {
                follow_log(ctx, &id).await
            } else {
                log(ctx, &id).await
            }
        }
    }
}

async fn submit(ctx: &mut Context<'_>, args: SubmitArgs) -> Result<(), CliError> {
    let mut params = HashMap::with_capacity(args.params.len());
    for (key, value) in args.params {
        if params.contains_key(&key) {
            return Err(CliError::Usage(format!(
                "--param `{key}` is given more than once"
            )));
        }
        params.insert(key, value);
    }
    let request = SubmitJobRequest {
        report: args.report,
        params,
    };
    let response = ctx
        .client
        .submit_job(request)
        .await
        .map_err(|status| ctx.failed(status, None))?
        .into_inner();
    let job = response.job.ok_or_else(|| {
        ctx.failed(
            Status::internal("the response to SubmitJob has no job"),
            None,
        )
    })?;
    if ctx.json {
        ctx.print_json(&output::job_to_json(&job))
    } else {
        writeln!(ctx.out, "{}", job.id)?;
        Ok(())
    }
}

async fn list(ctx: &mut Context<'_>, args: ListArgs) -> Result<(), CliError> {
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let statuses: Vec<i32> = args.status.iter().map(|status| *status as i32).collect();
    let mut jobs = Vec::new();
    let mut page_token = String::new();
    loop {
        let page_size = (limit - jobs.len()).min(MAX_PAGE_SIZE);
        let request = ListJobsRequest {
            statuses: statuses.clone(),
            page_size: u32::try_from(page_size).unwrap_or(u32::MAX),
            page_token: page_token.clone(),
        };
        let page = ctx
            .client
            .list_jobs(request)
            .await
            .map_err(|status| ctx.failed(status, None))?
            .into_inner();
        let empty_page = page.jobs.is_empty();
        jobs.extend(page.jobs);
        // Stop at the limit, on the last page, and on a page that cannot make progress.
        if jobs.len() >= limit
            || page.next_page_token.is_empty()
            || empty_page
            || page.next_page_token == page_token
        {
            break;
        }
        page_token = page.next_page_token;
    }
    jobs.truncate(limit);
    if ctx.json {
        let values = jobs.iter().map(output::job_to_json).collect();
        return ctx.print_json(&Value::Array(values));
    }
    if jobs.is_empty() {
        writeln!(ctx.err, "no jobs found")?;
        return Ok(());
    }
    writeln!(ctx.out, "{}", output::job_table(&jobs, now_ms()))?;
    Ok(())
}

async fn get(ctx: &mut Context<'_>, id: &str) -> Result<(), CliError> {
    let request = GetJobRequest {
        job_id: id.to_owned(),
    };
    let job = ctx
        .client
        .get_job(request)
        .await
        .map_err(|status| ctx.failed(status, Some(id)))?
        .into_inner()
        .job
        .ok_or_else(|| {
            ctx.failed(
                Status::internal("the response to GetJob has no job"),
                Some(id),
            )
        })?;
    if ctx.json {
        ctx.print_json(&output::job_to_json(&job))
    } else {
        let lines = output::job_details(&job, now_ms());
        writeln!(ctx.out, "{}", output::render_key_values(&lines))?;
        Ok(())
    }
}

async fn cancel(ctx: &mut Context<'_>, id: &str, reason: Option<String>) -> Result<(), CliError> {
    let request = CancelJobRequest {
        job_id: id.to_owned(),
        reason: reason.unwrap_or_default(),
    };
    let response = ctx
        .client
        .cancel_job(request)
        .await
        .map_err(|status| ctx.failed(status, Some(id)))?
        .into_inner();
    if ctx.json {
        return ctx.print_json(&output::cancel_response_to_json(&response));
    }
    if !response.message.is_empty() {
        writeln!(ctx.out, "{}", response.message)?;
    }
    writeln!(ctx.out, "{}", output::cancel_outcome_line(&response))?;
    Ok(())
}

/// Why a followed stream needs reopening, when the server simply closed it.
fn closed_by_server() -> Status {
    Status::unavailable("the control plane closed the stream")
}

async fn watch(ctx: &mut Context<'_>) -> Result<(), CliError> {
    let mut cursor = WatchCursor::default();
    let mut reconnector = Reconnector::new(ctx.reconnect);
    loop {
        let request = WatchJobsRequest {
            after_sequence: cursor.after_sequence(),
        };
        let failure = match ctx.client.watch_jobs(request).await {
            Ok(response) => {
                reconnector.opened();
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            reconnector.delivered();
                            if cursor.accept(event.kind, event.sequence) {
                                show_watch_event(ctx, &event)?;
                            }
                        }
                        Ok(None) => break closed_by_server(),
                        Err(status) => break status,
                    }
                }
            }
            Err(status) => status,
        };
        cursor.lost();
        let delay = reconnector
            .after_failure(failure.clone())
            .map_err(|status| ctx.failed(status, None))?;
        writeln!(
            ctx.err,
            "watch: stream lost ({}); reconnecting in {}, {}",
            crate::error::status_detail(&failure),
            output::format_duration_ms(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            match cursor.after_sequence() {
                0 => "starting from a fresh snapshot".to_owned(),
                sequence => format!("resuming after sequence {sequence}"),
            }
        )?;
        tokio::time::sleep(delay).await;
    }
}

fn show_watch_event(ctx: &mut Context<'_>, event: &WatchJobsResponse) -> Result<(), CliError> {
    if ctx.json {
        return ctx.print_json_line(&output::watch_event_to_json(event));
    }
    if event.kind == Kind::SnapshotComplete as i32 {
        writeln!(
            ctx.err,
            "watch: current jobs shown; waiting for changes (Ctrl-C to stop)"
        )?;
        return Ok(());
    }
    if let Some(line) = output::watch_line(event, now_ms()) {
        writeln!(ctx.out, "{line}")?;
        ctx.out.flush()?;
    }
    Ok(())
}

fn show_log_entry(ctx: &mut Context<'_>, entry: &LogEntry) -> Result<(), CliError> {
    if ctx.json {
        ctx.print_json_line(&output::log_entry_to_json(entry))
    } else {
        writeln!(ctx.out, "{}", output::log_line(entry))?;
        ctx.out.flush()?;
        Ok(())
    }
}

/// The whole log, a page at a time (a long log does not fit one message).
async fn log(ctx: &mut Context<'_>, id: &str) -> Result<(), CliError> {
    let mut after_id = 0;
    loop {
        let request = GetJobLogRequest {
            job_id: id.to_owned(),
            after_id,
            page_size: 0,
        };
        let page = ctx
            .client
            .get_job_log(request)
            .await
            .map_err(|status| ctx.failed(status, Some(id)))?
            .into_inner();
        for entry in &page.entries {
            show_log_entry(ctx, entry)?;
        }
        if page.next_after_id == 0 {
            return Ok(());
        }
        after_id = page.next_after_id;
    }
}

/// Whether the job has reached a final status (the end of a followed log).
async fn job_is_terminal(ctx: &mut Context<'_>, id: &str) -> Result<bool, Status> {
    let request = GetJobRequest {
        job_id: id.to_owned(),
    };
    let job = ctx.client.get_job(request).await?.into_inner().job;
    Ok(job.is_some_and(|job| JobStatus::try_from(job.status).is_ok_and(JobStatus::is_terminal)))
}

async fn follow_log(ctx: &mut Context<'_>, id: &str) -> Result<(), CliError> {
    let mut after_id = 0;
    let mut reconnector = Reconnector::new(ctx.reconnect);
    loop {
        let request = WatchJobLogRequest {
            job_id: id.to_owned(),
            after_id,
        };
        let failure = match ctx.client.watch_job_log(request).await {
            Ok(response) => {
                reconnector.opened();
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            reconnector.delivered();
                            let Some(entry) = message.entry else { continue };
                            if entry.id > after_id {
                                after_id = entry.id;
                                show_log_entry(ctx, &entry)?;
                            }
                        }
                        // The stream ends once the job is terminal; a control plane shutting
                        // down may also close it, so check before stopping.
                        Ok(None) => match job_is_terminal(ctx, id).await {
                            Ok(true) => return Ok(()),
                            Ok(false) => break closed_by_server(),
                            Err(status) => break status,
                        },
                        Err(status) => break status,
                    }
                }
            }
            Err(status) => status,
        };
        let delay = reconnector
            .after_failure(failure.clone())
            .map_err(|status| ctx.failed(status, Some(id)))?;
        writeln!(
            ctx.err,
            "log: stream lost ({}); reconnecting in {}, resuming after entry {after_id}",
            crate::error::status_detail(&failure),
            output::format_duration_ms(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
        )?;
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_param("month=2023-10"),
            Ok(("month".to_owned(), "2023-10".to_owned()))
        );
        assert_eq!(
            parse_param("filter=a=b"),
            Ok(("filter".to_owned(), "a=b".to_owned()))
        );
        assert_eq!(
            parse_param("empty="),
            Ok(("empty".to_owned(), String::new()))
        );
        let error = parse_param("month").unwrap_err();
        assert!(error.contains("`month`"), "{error}");
        assert!(parse_param("=x").is_err());
    }

    #[test]
    fn statuses_parse_case_insensitively_and_errors_list_the_valid_ones() {
        assert_eq!(parse_status("queued"), Ok(JobStatus::Queued));
        assert_eq!(parse_status("Cancelling"), Ok(JobStatus::Cancelling));
        assert_eq!(parse_status("FAILED"), Ok(JobStatus::Failed));
        let error = parse_status("done").unwrap_err();
        assert_eq!(
            error,
            "unknown status `done`; valid statuses: queued, running, cancelling, succeeded, \
             failed, cancelled"
        );
        assert!(parse_status("unspecified").is_err());
    }
}
