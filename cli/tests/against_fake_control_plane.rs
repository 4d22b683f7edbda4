//! The CLI against an in-process fake `JobService`: paging, error mapping, the bearer
//! token, and resuming watched streams without losing or repeating anything.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use presswork_cli::client::{CallCredentials, jobs_client};
use presswork_cli::error::{CliError, ExitCode};
use presswork_cli::jobs::{self, Context};
use presswork_cli::resume::ReconnectPolicy;
use presswork_cli::{Cli, Command};
use presswork_proto::v1::job_service_server::{JobService, JobServiceServer};
use presswork_proto::v1::{
    CancelJobRequest, CancelJobResponse, CancelOutcome, GetJobLogRequest, GetJobLogResponse,
    GetJobRequest, GetJobResponse, Job, JobStatus, ListJobsRequest, ListJobsResponse, LogEntry,
    LogLevel, SubmitJobRequest, SubmitJobResponse, WatchJobLogRequest, WatchJobLogResponse,
    WatchJobsRequest, WatchJobsResponse, watch_jobs_response::Kind,
};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// The fake serves at most this many jobs per page, whatever the client asks for.
const SERVER_PAGE_CAP: usize = 50;
const ADMIN_TOKEN: &str = "admin-token";

type Reply<T> = Result<Response<T>, Status>;
type Items<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, Status>>>;

#[derive(Default)]
struct Recorded {
    list_requests: Vec<ListJobsRequest>,
    submitted: Vec<SubmitJobRequest>,
    authorizations: Vec<Option<String>>,
    watch_after: Vec<u64>,
    log_after: Vec<u64>,
}

#[derive(Default)]
struct FakeJobs {
    recorded: Mutex<Recorded>,
}

fn job(id: &str, status: JobStatus) -> Job {
    Job {
        id: id.to_owned(),
        report: "monthly-sales".to_owned(),
        status: status as i32,
        created_at_unix_ms: 1_700_000_000_000,
        ..Job::default()
    }
}

fn event(kind: Kind, sequence: u64, job: Option<Job>) -> Result<WatchJobsResponse, Status> {
    Ok(WatchJobsResponse {
        kind: kind as i32,
        sequence,
        job,
    })
}

fn entry(id: u64, event: &str) -> Result<WatchJobLogResponse, Status> {
    Ok(WatchJobLogResponse {
        entry: Some(LogEntry {
            id,
            job_id: "job-1".to_owned(),
            at_unix_ms: 1_700_000_000_000 + i64::try_from(id).unwrap_or(0),
            level: LogLevel::Info as i32,
            event: event.to_owned(),
            actor: "system".to_owned(),
            ..LogEntry::default()
        }),
    })
}

impl FakeJobs {
    fn record_authorization<T>(&self, request: &Request<T>) {
        let value = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        self.recorded.lock().unwrap().authorizations.push(value);
    }
}

#[tonic::async_trait]
impl JobService for FakeJobs {
    async fn submit_job(&self, request: Request<SubmitJobRequest>) -> Reply<SubmitJobResponse> {
        let request = request.into_inner();
        let mut submitted = job("job-new", JobStatus::Queued);
        submitted.params = request.params.clone();
        self.recorded.lock().unwrap().submitted.push(request);
        Ok(Response::new(SubmitJobResponse {
            job: Some(submitted),
        }))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Reply<GetJobResponse> {
        match request.into_inner().job_id.as_str() {
            "job-1" => Ok(Response::new(GetJobResponse {
                job: Some(job("job-1", JobStatus::Succeeded)),
            })),
            other => Err(Status::not_found(format!("no job {other}"))),
        }
    }

    async fn list_jobs(&self, request: Request<ListJobsRequest>) -> Reply<ListJobsResponse> {
        let request = request.into_inner();
        let offset: usize = request.page_token.parse().unwrap_or(0);
        let size = (request.page_size as usize).min(SERVER_PAGE_CAP);
        let total = 500;
        let end = (offset + size).min(total);
        let jobs = (offset..end)
            .map(|index| job(&format!("job-{index:03}"), JobStatus::Queued))
            .collect();
        self.recorded.lock().unwrap().list_requests.push(request);
        Ok(Response::new(ListJobsResponse {
            jobs,
            next_page_token: if end < total {
                end.to_string()
            } else {
                String::new()
            },
        }))
    }

    type WatchJobsStream = Items<WatchJobsResponse>;

    async fn watch_jobs(&self, request: Request<WatchJobsRequest>) -> Reply<Self::WatchJobsStream> {
        let after = request.into_inner().after_sequence;
        let call = {
            let mut recorded = self.recorded.lock().unwrap();
            recorded.watch_after.push(after);
            recorded.watch_after.len()
        };
        let items = match call {
            // A snapshot, one change, then the replica goes away mid-stream.
            1 => vec![
                event(Kind::Snapshot, 5, Some(job("job-a", JobStatus::Queued))),
                event(Kind::SnapshotComplete, 5, None),
                event(Kind::Change, 6, Some(job("job-a", JobStatus::Running))),
                Err(Status::unavailable("replica restarting")),
            ],
            // Resumed: repeats the change already seen, sends a new one, then closes.
            2 => vec![
                event(Kind::Change, 6, Some(job("job-a", JobStatus::Running))),
                event(Kind::Change, 7, Some(job("job-a", JobStatus::Succeeded))),
            ],
            // Then the token has expired: not worth retrying.
            _ => return Err(Status::unauthenticated("token expired")),
        };
        Ok(Response::new(tokio_stream::iter(items)))
    }

    async fn cancel_job(&self, request: Request<CancelJobRequest>) -> Reply<CancelJobResponse> {
        self.record_authorization(&request);
        let authorized = request
            .metadata()
            .get("authorization")
            .is_some_and(|value| value == format!("Bearer {ADMIN_TOKEN}").as_str());
        if !authorized {
            return Err(Status::permission_denied(
                "only administrators may cancel jobs",
            ));
        }
        let request = request.into_inner();
        match request.job_id.as_str() {
            "job-run" => Ok(Response::new(CancelJobResponse {
                outcome: CancelOutcome::Cancelling as i32,
                job: Some(job("job-run", JobStatus::Cancelling)),
                message: format!("Cancelling job job-run ({}).", request.reason),
            })),
            "job-done" => Err(Status::failed_precondition(
                "Job is not in a cancellable state.",
            )),
            other => Err(Status::not_found(format!("no job {other}"))),
        }
    }

    async fn get_job_log(&self, _request: Request<GetJobLogRequest>) -> Reply<GetJobLogResponse> {
        Err(Status::unimplemented("not in this fake"))
    }

    type WatchJobLogStream = Items<WatchJobLogResponse>;

    async fn watch_job_log(
        &self,
        request: Request<WatchJobLogRequest>,
    ) -> Reply<Self::WatchJobLogStream> {
        let after = request.into_inner().after_id;
        let call = {
            let mut recorded = self.recorded.lock().unwrap();
            recorded.log_after.push(after);
            recorded.log_after.len()
        };
        let items = match call {
            1 => vec![
                entry(1, "job.submitted"),
                entry(2, "job.started"),
                Err(Status::unavailable("replica restarting")),
            ],
            // Resumed: one repeat, the last entry, then the end (job-1 is terminal).
            _ => vec![entry(2, "job.started"), entry(3, "job.succeeded")],
        };
        Ok(Response::new(tokio_stream::iter(items)))
    }
}

async fn start_fake() -> (Arc<FakeJobs>, SocketAddr) {
    let fake = Arc::new(FakeJobs::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let service = JobServiceServer::from_arc(Arc::clone(&fake));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (fake, address)
}

struct Outcome {
    result: Result<(), CliError>,
    out: String,
    err: String,
}

impl Outcome {
    fn exit_code(&self) -> ExitCode {
        self.result
            .as_ref()
            .err()
            .map_or(ExitCode::Success, CliError::exit_code)
    }

    fn json_lines(&self) -> Vec<Value> {
        self.out
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// Runs `presswork <args>` against `address`, with a fast reconnect for the tests.
async fn presswork(address: SocketAddr, token: Option<&str>, args: &[&str]) -> Outcome {
    let server = format!("http://{address}");
    let cli = Cli::try_parse_from(
        ["presswork", "--server", &server]
            .into_iter()
            .chain(args.iter().copied()),
    )
    .unwrap();
    let Command::Jobs(command) = cli.command;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let result = async {
        let credentials = CallCredentials::from_token(token)?;
        let mut ctx = Context {
            client: jobs_client(&server, credentials)?,
            server: server.clone(),
            json: cli.json,
            reconnect: ReconnectPolicy {
                initial_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            },
            out: &mut out,
            err: &mut err,
        };
        jobs::run(command, &mut ctx).await
    }
    .await;
    Outcome {
        result,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

#[tokio::test]
async fn list_follows_pages_up_to_the_limit() {
    let (fake, address) = start_fake().await;
    let outcome = presswork(
        address,
        None,
        &[
            "--json",
            "jobs",
            "list",
            "--limit",
            "120",
            "--status",
            "QUEUED,running",
        ],
    )
    .await;
    assert!(outcome.result.is_ok(), "{}", outcome.err);
    let jobs: Value = serde_json::from_str(&outcome.out).unwrap();
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 120);
    assert_eq!(jobs[0]["id"], "job-000");
    assert_eq!(jobs[119]["id"], "job-119");
    assert_eq!(jobs[0]["status"], "QUEUED");

    let recorded = fake.recorded.lock().unwrap();
    let pages: Vec<_> = recorded
        .list_requests
        .iter()
        .map(|request| (request.page_size, request.page_token.as_str()))
        .collect();
    assert_eq!(pages, [(120, ""), (70, "50"), (20, "100")]);
    assert_eq!(
        recorded.list_requests[0].statuses,
        [JobStatus::Queued as i32, JobStatus::Running as i32]
    );
}

#[tokio::test]
async fn list_shows_a_table_of_the_default_fifty() {
    let (_fake, address) = start_fake().await;
    let outcome = presswork(address, None, &["jobs", "list"]).await;
    assert!(outcome.result.is_ok(), "{}", outcome.err);
    let lines: Vec<_> = outcome.out.lines().collect();
    assert_eq!(lines.len(), 51, "header and 50 rows");
    assert!(lines[0].starts_with("ID"), "{}", lines[0]);
    assert!(lines[1].starts_with("job-000"), "{}", lines[1]);
}

#[tokio::test]
async fn submit_prints_the_id_alone_and_sends_the_params() {
    let (fake, address) = start_fake().await;
    let outcome = presswork(
        address,
        None,
        &[
            "jobs",
            "submit",
            "--report",
            "monthly-sales",
            "--param",
            "month=2023-10",
            "--param",
            "filter=a=b",
        ],
    )
    .await;
    assert!(outcome.result.is_ok(), "{}", outcome.err);
    assert_eq!(outcome.out, "job-new\n");
    let recorded = fake.recorded.lock().unwrap();
    assert_eq!(recorded.submitted[0].report, "monthly-sales");
    assert_eq!(
        recorded.submitted[0].params,
        HashMap::from([
            ("month".to_owned(), "2023-10".to_owned()),
            ("filter".to_owned(), "a=b".to_owned()),
        ])
    );
}

#[tokio::test]
async fn a_repeated_param_is_a_usage_error() {
    let (fake, address) = start_fake().await;
    let outcome = presswork(
        address,
        None,
        &[
            "jobs", "submit", "--report", "r", "--param", "a=1", "--param", "a=2",
        ],
    )
    .await;
    assert_eq!(outcome.exit_code(), ExitCode::Usage);
    assert!(fake.recorded.lock().unwrap().submitted.is_empty());
}

#[tokio::test]
async fn get_of_an_unknown_job_exits_3_and_names_it() {
    let (_fake, address) = start_fake().await;
    let outcome = presswork(address, None, &["jobs", "get", "job-404"]).await;
    assert_eq!(outcome.exit_code(), ExitCode::NotFound);
    let message = outcome.result.unwrap_err().to_string();
    assert!(message.starts_with("job job-404 not found"), "{message}");
}

#[tokio::test]
async fn cancel_sends_the_bearer_token_and_reports_the_outcome() {
    let (fake, address) = start_fake().await;
    let outcome = presswork(
        address,
        Some(ADMIN_TOKEN),
        &["jobs", "cancel", "job-run", "--reason", "wrong month"],
    )
    .await;
    assert!(outcome.result.is_ok(), "{}", outcome.err);
    assert_eq!(
        outcome.out,
        "Cancelling job job-run (wrong month).\n\
         cancelling: the worker has been told to stop the job\n"
    );
    assert_eq!(
        fake.recorded.lock().unwrap().authorizations,
        [Some(format!("Bearer {ADMIN_TOKEN}"))]
    );

    let outcome = presswork(
        address,
        Some(ADMIN_TOKEN),
        &["--json", "jobs", "cancel", "job-run"],
    )
    .await;
    let value: Value = serde_json::from_str(&outcome.out).unwrap();
    assert_eq!(value["outcome"], "CANCELLING");
    assert_eq!(value["job"]["status"], "CANCELLING");
}

#[tokio::test]
async fn cancel_errors_map_to_their_exit_codes() {
    let (_fake, address) = start_fake().await;
    let denied = presswork(address, None, &["jobs", "cancel", "job-run"]).await;
    assert_eq!(denied.exit_code(), ExitCode::PermissionDenied);
    let message = denied.result.unwrap_err().to_string();
    assert!(
        message.contains("Log in with an administrator account"),
        "{message}"
    );

    let finished = presswork(address, Some(ADMIN_TOKEN), &["jobs", "cancel", "job-done"]).await;
    assert_eq!(finished.exit_code(), ExitCode::FailedPrecondition);
    assert_eq!(
        finished.result.unwrap_err().to_string(),
        "job job-done: Job is not in a cancellable state."
    );
}

#[tokio::test]
async fn an_unreachable_control_plane_exits_5() {
    // Bind and drop, so nothing listens on the port.
    let address = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let outcome = presswork(address, None, &["jobs", "watch"]).await;
    assert_eq!(outcome.exit_code(), ExitCode::Unavailable);
    let message = outcome.result.unwrap_err().to_string();
    assert!(
        message.starts_with(&format!(
            "cannot reach the control plane at http://{address}"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn watch_resumes_after_the_last_sequence_without_loss_or_repeats() {
    let (fake, address) = start_fake().await;
    let outcome = presswork(address, None, &["--json", "jobs", "watch"]).await;
    // The third connection is refused for good: the watch ends with that error.
    assert_eq!(outcome.exit_code(), ExitCode::PermissionDenied);

    let seen: Vec<_> = outcome
        .json_lines()
        .iter()
        .map(|line| {
            (
                line["kind"].as_str().unwrap().to_owned(),
                line["sequence"].as_u64().unwrap(),
                line["job"]["status"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let expected = [
        ("SNAPSHOT", 5, Some("QUEUED")),
        ("SNAPSHOT_COMPLETE", 5, None),
        ("CHANGE", 6, Some("RUNNING")),
        ("CHANGE", 7, Some("SUCCEEDED")),
    ]
    .map(|(kind, sequence, status)| (kind.to_owned(), sequence, status.map(str::to_owned)));
    assert_eq!(seen, expected);
    assert_eq!(fake.recorded.lock().unwrap().watch_after, [0, 6, 7]);
    assert_eq!(
        outcome.err.matches("reconnecting").count(),
        2,
        "{}",
        outcome.err
    );
    assert!(
        outcome.err.contains("resuming after sequence 6"),
        "{}",
        outcome.err
    );
}

#[tokio::test]
async fn log_follow_resumes_after_the_last_entry_and_ends_with_the_job() {
    let (fake, address) = start_fake().await;
    let outcome = presswork(address, None, &["jobs", "log", "job-1", "--follow"]).await;
    assert!(outcome.result.is_ok(), "{}", outcome.err);
    let events: Vec<_> = outcome
        .out
        .lines()
        .map(|line| line.split_whitespace().nth(2).unwrap_or_default())
        .collect();
    assert_eq!(events, ["job.submitted", "job.started", "job.succeeded"]);
    assert_eq!(fake.recorded.lock().unwrap().log_after, [0, 2]);
}
