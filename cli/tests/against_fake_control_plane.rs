//! The CLI against an in-process fake `JobService` and `AuthService`: paging, error
//! mapping, the bearer token, resuming watched streams without losing or repeating
//! anything, signing in and out, and TLS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use presswork_cli::account::Environment;
use presswork_cli::client::{self, CallCredentials, jobs_client};
use presswork_cli::error::{CliError, ExitCode};
use presswork_cli::jobs::{self, Context};
use presswork_cli::resume::ReconnectPolicy;
use presswork_cli::token::{Token, TokenFile, TokenSource};
use presswork_cli::{Cli, Command};
use presswork_proto::v1::auth_service_server::{AuthService, AuthServiceServer};
use presswork_proto::v1::job_service_server::{JobService, JobServiceServer};
use presswork_proto::v1::{
    CancelJobRequest, CancelJobResponse, CancelOutcome, GetJobLogRequest, GetJobLogResponse,
    GetJobRequest, GetJobResponse, Job, JobStatus, ListJobsRequest, ListJobsResponse, LogEntry,
    LogLevel, LoginRequest, LoginResponse, Role, SubmitJobRequest, SubmitJobResponse, User,
    WatchJobLogRequest, WatchJobLogResponse, WatchJobsRequest, WatchJobsResponse, WhoAmIRequest,
    WhoAmIResponse, watch_jobs_response::Kind,
};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

/// The fake serves at most this many jobs per page, whatever the client asks for.
const SERVER_PAGE_CAP: usize = 50;
const ADMIN_TOKEN: &str = "admin-token";
const ADA_PASSWORD: &str = "correct horse battery staple";
/// 2023-11-15T10:13:20Z
const TOKEN_EXPIRES_AT_MS: i64 = 1_700_043_200_000;

type Reply<T> = Result<Response<T>, Status>;
type Items<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, Status>>>;

#[derive(Default)]
struct Recorded {
    logins: Vec<(String, String)>,
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

fn authorization<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

impl FakeJobs {
    fn record_authorization<T>(&self, request: &Request<T>) {
        let value = authorization(request);
        self.recorded.lock().unwrap().authorizations.push(value);
    }
}

fn ada() -> User {
    User {
        username: "ada".to_owned(),
        role: Role::Administrator as i32,
        disabled: false,
    }
}

#[tonic::async_trait]
impl AuthService for FakeJobs {
    async fn login(&self, request: Request<LoginRequest>) -> Reply<LoginResponse> {
        let LoginRequest { username, password } = request.into_inner();
        self.recorded
            .lock()
            .unwrap()
            .logins
            .push((username.clone(), password.clone()));
        match (username.as_str(), password.as_str()) {
            ("ada", ADA_PASSWORD) => Ok(Response::new(LoginResponse {
                token: ADMIN_TOKEN.to_owned(),
                expires_at_unix_ms: TOKEN_EXPIRES_AT_MS,
                user: Some(ada()),
            })),
            ("mallory", _) => Err(Status::resource_exhausted(
                "too many sign-in attempts for this user: wait a minute and try again",
            )),
            _ => Err(Status::unauthenticated("wrong username or password")),
        }
    }

    async fn who_am_i(&self, request: Request<WhoAmIRequest>) -> Reply<WhoAmIResponse> {
        self.record_authorization(&request);
        if authorization(&request) != Some(format!("Bearer {ADMIN_TOKEN}")) {
            return Err(Status::unauthenticated("this call needs a bearer token"));
        }
        Ok(Response::new(WhoAmIResponse {
            user: Some(ada()),
            token_expires_at_unix_ms: TOKEN_EXPIRES_AT_MS,
        }))
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
        self.record_authorization(&request);
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
    start_fake_with(Server::builder()).await
}

/// The fake behind TLS, with the test certificate for `localhost` in `tests/tls`.
async fn start_fake_with_tls() -> (Arc<FakeJobs>, SocketAddr) {
    let identity = Identity::from_pem(
        include_str!("tls/server.pem"),
        include_str!("tls/server.key"),
    );
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))
        .unwrap();
    start_fake_with(server).await
}

async fn start_fake_with(mut server: Server) -> (Arc<FakeJobs>, SocketAddr) {
    let fake = Arc::new(FakeJobs::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        server
            .add_service(JobServiceServer::from_arc(Arc::clone(&fake)))
            .add_service(AuthServiceServer::from_arc(Arc::clone(&fake)))
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
    let Command::Jobs(command) = cli.command else {
        panic!("not a jobs command: {args:?}");
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let result = async {
        let token = token.map(|value| Token {
            value: value.to_owned(),
            source: TokenSource::Environment,
        });
        let credentials = CallCredentials::from_token(token.as_ref())?;
        let mut ctx = Context {
            client: jobs_client(client::channel(&server, None)?, credentials),
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
        message.contains("presswork login --username <name>"),
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

/// A user's machine: a control plane to talk to and a configuration directory of its own.
struct Desk {
    server: String,
    token_file: TokenFile,
    _config: tempfile::TempDir,
}

impl Desk {
    fn new(server: String) -> Self {
        let config = tempfile::tempdir().unwrap();
        let token_file = TokenFile::in_config_dir(Some(config.path().join("config"))).unwrap();
        Self {
            server,
            token_file,
            _config: config,
        }
    }

    /// Runs `presswork --server <server> <args>` as `main` does, with `env_token` as
    /// PRESSWORK_TOKEN and `stdin` as standard input.
    async fn presswork(&self, env_token: Option<&str>, stdin: &str, args: &[&str]) -> Outcome {
        let cli = Cli::try_parse_from(
            ["presswork", "--server", &self.server]
                .into_iter()
                .chain(args.iter().copied()),
        )
        .unwrap();
        let mut stdin = stdin.as_bytes();
        let env = Environment {
            token: env_token,
            token_file: Some(self.token_file.clone()),
            stdin: &mut stdin,
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let result = presswork_cli::run(cli, env, &mut out, &mut err).await;
        Outcome {
            result,
            out: String::from_utf8(out).unwrap(),
            err: String::from_utf8(err).unwrap(),
        }
    }

    async fn login(&self, env_token: Option<&str>, username: &str, password: &str) -> Outcome {
        let args = ["login", "--username", username, "--password-stdin"];
        self.presswork(env_token, &format!("{password}\n"), &args)
            .await
    }
}

fn tls_fixture(name: &str) -> String {
    format!("{}/tests/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn login_keeps_the_token_for_later_commands_until_logout() {
    let (fake, address) = start_fake().await;
    let desk = Desk::new(format!("http://{address}"));

    let login = desk.login(None, "ada", ADA_PASSWORD).await;
    assert!(login.result.is_ok(), "{:?}", login.result);
    assert_eq!(
        login.out,
        "signed in as ada (role administrator) until 2023-11-15 10:13:20 UTC\n"
    );
    assert_eq!(login.err, "");
    assert_eq!(
        fake.recorded.lock().unwrap().logins,
        [("ada".to_owned(), ADA_PASSWORD.to_owned())]
    );
    assert_eq!(
        desk.token_file.load().unwrap().as_deref(),
        Some(ADMIN_TOKEN)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::metadata(desk.token_file.path()).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    }

    // The stored token is sent; PRESSWORK_TOKEN, when set and not empty, wins.
    for env_token in [None, Some("env-token"), Some("")] {
        let list = desk
            .presswork(env_token, "", &["jobs", "list", "--limit", "1"])
            .await;
        assert!(list.result.is_ok(), "{:?}", list.result);
    }
    let whoami = desk.presswork(None, "", &["whoami"]).await;
    assert!(whoami.result.is_ok(), "{:?}", whoami.result);
    assert!(
        whoami
            .out
            .starts_with("user           ada\nrole           administrator\n"),
        "{}",
        whoami.out
    );
    let whoami = desk.presswork(None, "", &["--json", "whoami"]).await;
    let value: Value = serde_json::from_str(&whoami.out).unwrap();
    assert_eq!(value["username"], "ada");
    assert_eq!(value["role"], "ADMINISTRATOR");
    assert_eq!(value["token_expires_at"], "2023-11-15T10:13:20.000Z");

    let logout = desk.presswork(None, "", &["logout"]).await;
    assert!(logout.result.is_ok(), "{:?}", logout.result);
    assert_eq!(logout.out, "signed out\n");
    assert!(!desk.token_file.path().exists());
    let again = desk.presswork(None, "", &["logout"]).await;
    assert_eq!(again.out, "not signed in: there was no stored token\n");

    // Signed out: nothing is sent, and the error says how to sign in.
    let list = desk
        .presswork(None, "", &["jobs", "list", "--limit", "1"])
        .await;
    assert!(list.result.is_ok(), "{:?}", list.result);
    let whoami = desk.presswork(None, "", &["whoami"]).await;
    assert_eq!(whoami.exit_code(), ExitCode::PermissionDenied);
    let message = whoami.result.unwrap_err().to_string();
    assert!(
        message.contains("presswork login --username <name>"),
        "{message}"
    );

    let bearer = Some(format!("Bearer {ADMIN_TOKEN}"));
    assert_eq!(
        fake.recorded.lock().unwrap().authorizations,
        [
            bearer.clone(),
            Some("Bearer env-token".to_owned()),
            bearer.clone(),
            bearer.clone(),
            bearer,
            None,
            None,
        ]
    );
    // Neither the password nor the token is ever printed.
    for outcome in [&login, &logout] {
        for secret in [ADA_PASSWORD, ADMIN_TOKEN] {
            assert!(!outcome.out.contains(secret) && !outcome.err.contains(secret));
        }
    }
}

#[tokio::test]
async fn a_refused_sign_in_keeps_nothing_and_says_why() {
    let (_fake, address) = start_fake().await;
    let desk = Desk::new(format!("http://{address}"));

    let wrong = desk.login(None, "ada", "guess").await;
    assert_eq!(wrong.exit_code(), ExitCode::PermissionDenied);
    let message = wrong.result.unwrap_err().to_string();
    assert!(
        message.starts_with("wrong username or password for `ada`"),
        "{message}"
    );

    let limited = desk.login(None, "mallory", "guess").await;
    assert_eq!(limited.exit_code(), ExitCode::Generic);
    assert_eq!(
        limited.result.unwrap_err().to_string(),
        "too many sign-in attempts for this user: wait a minute and try again"
    );

    let empty = desk.login(None, "ada", "").await;
    assert_eq!(empty.exit_code(), ExitCode::Usage);
    assert!(!desk.token_file.path().exists());
}

#[tokio::test]
async fn a_sign_in_while_presswork_token_is_set_says_which_is_used() {
    let (_fake, address) = start_fake().await;
    let desk = Desk::new(format!("http://{address}"));
    let login = desk.login(Some("env-token"), "ada", ADA_PASSWORD).await;
    assert!(login.result.is_ok(), "{:?}", login.result);
    assert!(
        login.err.contains("PRESSWORK_TOKEN is set"),
        "{}",
        login.err
    );
    assert_eq!(
        desk.token_file.load().unwrap().as_deref(),
        Some(ADMIN_TOKEN)
    );
}

#[tokio::test]
async fn https_needs_the_ca_that_signed_the_control_plane() {
    let (_fake, address) = start_fake_with_tls().await;
    let desk = Desk::new(format!("https://localhost:{}", address.port()));
    let desk = &desk;
    let whoami_trusting = |ca: Option<String>| async move {
        let mut args = Vec::new();
        if let Some(ca) = &ca {
            args.extend(["--tls-ca", ca.as_str()]);
        }
        args.push("whoami");
        desk.presswork(Some(ADMIN_TOKEN), "", &args).await
    };

    let no_ca = whoami_trusting(None).await;
    assert_eq!(no_ca.exit_code(), ExitCode::Usage);
    let message = no_ca.result.unwrap_err().to_string();
    assert!(message.contains("--tls-ca"), "{message}");

    let trusted = whoami_trusting(Some(tls_fixture("ca.pem"))).await;
    assert!(trusted.result.is_ok(), "{:?}", trusted.result);
    assert!(
        trusted.out.starts_with("user           ada\n"),
        "{}",
        trusted.out
    );

    let untrusted = whoami_trusting(Some(tls_fixture("other-ca.pem"))).await;
    assert_eq!(untrusted.exit_code(), ExitCode::Unavailable);
    let message = untrusted.result.unwrap_err().to_string();
    assert!(
        message.starts_with("cannot trust the control plane at https://localhost"),
        "{message}"
    );
}
