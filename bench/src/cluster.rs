//! The system under test: the release binaries of the control plane and the workers, started
//! as processes on loopback with a fresh database, and stopped (SIGTERM, then SIGKILL) when a
//! scenario is over.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use presswork_proto::v1::auth_service_client::AuthServiceClient;
use presswork_proto::v1::job_service_client::JobServiceClient;
use presswork_proto::v1::{
    CancelJobRequest, CancelJobResponse, Job, LoginRequest, SubmitJobRequest,
};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The administrator the bench signs in as (it submits and cancels).
const BENCH_USER: &str = "bench-admin";
const BENCH_PASSWORD: &str = "bench-admin-password";

/// A `JobService` client that signs its calls with the bench administrator's token.
pub type Client = JobServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone, Debug)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub const CONTROL_PLANE_BINARY: &str = "presswork-control-plane";
pub const WORKER_BINARY: &str = "presswork-worker";
const LISTENING: &str = "presswork-control-plane listening on ";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process may take to stop after SIGTERM before it is killed. A worker drains its
/// jobs for up to 5 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(7);

/// Which store engine the control plane runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// What every cluster of a run shares.
#[derive(Clone, Debug)]
pub struct Environment {
    /// Where the release binaries are.
    pub bin_dir: PathBuf,
    /// The run's directory: one sub-directory per cluster (database, logs, job timelines).
    pub run_dir: PathBuf,
    pub backend: Backend,
    /// Admin URL (a role with CREATEDB) to make a fresh database per cluster.
    pub postgres_url: Option<String>,
}

impl Environment {
    /// Checks that the binaries are there; says how to build them when they are not, and
    /// warns when their sources changed after they were built (in a workspace checkout).
    pub fn check_binaries(bin_dir: &Path) -> anyhow::Result<()> {
        let workspace = bin_dir.parent().and_then(Path::parent);
        for (name, sources) in [
            (CONTROL_PLANE_BINARY, ["control-plane", "proto"]),
            (WORKER_BINARY, ["worker", "proto"]),
        ] {
            let path = bin_dir.join(name);
            if !path.is_file() {
                bail!(
                    "{} is missing: build the release binaries first with `cargo build --release --bins` (or pass --bin-dir)",
                    path.display()
                );
            }
            let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            let changed = workspace.and_then(|root| {
                sources
                    .iter()
                    .filter_map(|dir| newest_file(&root.join(dir)))
                    .max()
            });
            if let (Some(built), Some(changed)) = (built, changed)
                && changed > built
            {
                eprintln!(
                    "warning: {} is older than its sources: run `cargo build --release --bins` to measure the current code",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

/// When the newest file under `dir` (sources, not build output) was modified.
fn newest_file(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("target") {
                    pending.push(path);
                }
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(Some(modified));
            }
        }
    }
    newest
}

/// The shape of a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub workers: usize,
    pub capacity: u32,
    /// `--cancel-timeout` in seconds (default: the control plane's, 30 s).
    pub cancel_timeout: Option<f64>,
}

/// A control plane and its workers for one scenario.
pub struct Cluster {
    pub dir: PathBuf,
    /// Where every worker writes job outputs and test-workload timelines.
    pub output_dir: PathBuf,
    pub url: String,
    channel: Channel,
    control_plane: Option<Child>,
    /// Kept open: the control plane announces itself on stdout.
    _stdout: ChildStdout,
    /// Control-plane replicas after the first (PostgreSQL only).
    others: Vec<Replica>,
    workers: Vec<Child>,
    database: Database,
    bearer: Bearer,
}

/// A control-plane replica after the first.
struct Replica {
    child: Option<Child>,
    url: String,
    _stdout: ChildStdout,
    channel: Channel,
}

impl Cluster {
    /// Starts the control plane on a fresh database and the workers. Workers connect by
    /// themselves; [`crate::observer::fill_slots`] tells when they take jobs.
    pub async fn start(env: &Environment, name: &str, spec: &ClusterSpec) -> anyhow::Result<Self> {
        Self::start_replicated(env, name, spec, 1, 0).await
    }

    /// Starts `replicas` control-plane replicas on one fresh database (more than one needs
    /// PostgreSQL) and the workers: worker `i` is placed on replica `(first + i) % replicas`
    /// (its `--control-plane` list starts with that replica's URL, then the others').
    pub async fn start_replicated(
        env: &Environment,
        name: &str,
        spec: &ClusterSpec,
        replicas: usize,
        first: usize,
    ) -> anyhow::Result<Self> {
        let replicas = replicas.max(1);
        anyhow::ensure!(
            replicas == 1 || env.backend == Backend::Postgres,
            "{replicas} control-plane replicas need PostgreSQL"
        );
        let dir = env.run_dir.join(format!("{name}-{}", env.backend.name()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let database = Database::create(env, &dir).await?;
        add_admin(
            &env.bin_dir.join(CONTROL_PLANE_BINARY),
            database.url(),
            &dir,
        )
        .await?;
        let worker_token = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let mut started = Vec::with_capacity(replicas);
        for replica in 0..replicas {
            let log = match replica {
                0 => dir.join("control-plane.log"),
                n => dir.join(format!("control-plane-{n}.log")),
            };
            started
                .push(start_control_plane(env, spec, database.url(), &worker_token, &log).await?);
        }
        let mut started = started.into_iter();
        let (control_plane, url, stdout, channel) = started.next().context("one replica")?;
        let others = started
            .map(|(child, url, stdout, channel)| Replica {
                child: Some(child),
                url,
                _stdout: stdout,
                channel,
            })
            .collect();
        let token = AuthServiceClient::new(channel.clone())
            .login(LoginRequest {
                username: BENCH_USER.into(),
                password: BENCH_PASSWORD.into(),
            })
            .await
            .context("sign in as the bench administrator")?
            .into_inner()
            .token;
        let bearer = Bearer(
            format!("Bearer {token}")
                .parse()
                .context("a header-safe token")?,
        );
        let output_dir = dir.join("output");
        let work_dir = dir.join("work");
        for d in [&output_dir, &work_dir] {
            std::fs::create_dir_all(d)?;
        }
        let mut cluster = Cluster {
            dir,
            output_dir,
            url,
            channel,
            control_plane: Some(control_plane),
            _stdout: stdout,
            others,
            workers: Vec::new(),
            database,
            bearer,
        };
        for index in 0..spec.workers {
            let home = (first + index) % replicas;
            let urls: Vec<String> = (0..replicas)
                .map(|r| cluster.replica_url((home + r) % replicas).to_string())
                .collect();
            let args = vec![
                "--control-plane".to_string(),
                urls.join(","),
                "--capacity".to_string(),
                spec.capacity.to_string(),
                "--enable-test-reports".to_string(),
                "--output-dir".to_string(),
                cluster.output_dir.display().to_string(),
                "--work-dir".to_string(),
                work_dir.display().to_string(),
                "--name".to_string(),
                format!("bench-worker-{index}"),
                "--token".to_string(),
                worker_token.clone(),
            ];
            let log = cluster.dir.join(format!("worker-{index}.log"));
            let worker = command(&env.bin_dir.join(WORKER_BINARY), &args, &log)?
                .stdout(Stdio::null())
                .spawn()
                .context("start a worker")?;
            cluster.workers.push(worker);
        }
        Ok(cluster)
    }

    /// The URL of control-plane replica `replica` (0 is the first).
    pub fn replica_url(&self, replica: usize) -> &str {
        match replica {
            0 => &self.url,
            n => &self.others[n - 1].url,
        }
    }

    /// A client of replica `replica`, on that replica's shared connection.
    pub fn client_on(&self, replica: usize) -> Client {
        let channel = match replica {
            0 => self.channel.clone(),
            n => self.others[n - 1].channel.clone(),
        };
        JobServiceClient::with_interceptor(channel, self.bearer.clone())
    }

    /// A client of replica `replica` on a connection of its own.
    pub async fn new_client_on(&self, replica: usize) -> anyhow::Result<Client> {
        Ok(JobServiceClient::with_interceptor(
            connect(self.replica_url(replica)).await?,
            self.bearer.clone(),
        ))
    }

    /// The control plane's process id (while it runs).
    pub fn control_plane_pid(&self) -> Option<u32> {
        self.control_plane.as_ref().and_then(Child::id)
    }

    /// The process ids of every control-plane replica (of those running).
    pub fn control_plane_pids(&self) -> Vec<u32> {
        self.control_plane
            .iter()
            .chain(self.others.iter().filter_map(|r| r.child.as_ref()))
            .filter_map(Child::id)
            .collect()
    }

    /// The workers' process ids (of those running).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(Child::id).collect()
    }

    /// A client on the cluster's shared connection.
    pub fn client(&self) -> Client {
        JobServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// A client on a connection of its own (a separate dashboard, a separate watcher).
    pub async fn new_client(&self) -> anyhow::Result<Client> {
        Ok(JobServiceClient::with_interceptor(
            connect(&self.url).await?,
            self.bearer.clone(),
        ))
    }

    pub async fn submit(&self, report: &str, params: &[(&str, &str)]) -> anyhow::Result<Job> {
        submit(&mut self.client(), report, params).await
    }

    pub async fn cancel(&self, job_id: &str) -> Result<CancelJobResponse, tonic::Status> {
        cancel(&mut self.client(), job_id).await
    }

    /// Stops the workers, then the control plane (SIGTERM, SIGKILL after a while), and drops
    /// the PostgreSQL database.
    pub async fn stop(mut self) {
        let workers = std::mem::take(&mut self.workers);
        futures::future::join_all(workers.into_iter().map(stop_process)).await;
        let control_planes = self
            .control_plane
            .take()
            .into_iter()
            .chain(self.others.iter_mut().filter_map(|r| r.child.take()));
        futures::future::join_all(control_planes.map(stop_process)).await;
        self.database.drop_database().await;
    }
}

pub async fn submit(
    client: &mut Client,
    report: &str,
    params: &[(&str, &str)],
) -> anyhow::Result<Job> {
    let params: HashMap<String, String> = params
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    client
        .submit_job(SubmitJobRequest {
            report: report.to_string(),
            params,
        })
        .await
        .with_context(|| format!("SubmitJob {report}"))?
        .into_inner()
        .job
        .context("SubmitJobResponse without a job")
}

pub async fn cancel(client: &mut Client, job_id: &str) -> Result<CancelJobResponse, tonic::Status> {
    client
        .cancel_job(CancelJobRequest {
            job_id: job_id.to_string(),
            reason: "bench".to_string(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Starts one control plane on `database`; returns it once it announced its address, with
/// that address and a connection to it.
async fn start_control_plane(
    env: &Environment,
    spec: &ClusterSpec,
    database: &str,
    worker_token: &str,
    log: &Path,
) -> anyhow::Result<(Child, String, ChildStdout, Channel)> {
    let mut args = vec![
        "--worker-token".to_string(),
        worker_token.to_string(),
        "--listen".to_string(),
        "127.0.0.1:0".to_string(),
        "--database".to_string(),
        database.to_string(),
        // The throughput scenarios submit as fast as they can, as one user.
        "--submit-rate".to_string(),
        "0".to_string(),
    ];
    if let Some(timeout) = spec.cancel_timeout {
        args.extend(["--cancel-timeout".to_string(), timeout.to_string()]);
    }
    let mut control_plane = command(&env.bin_dir.join(CONTROL_PLANE_BINARY), &args, log)?
        .stdout(Stdio::piped())
        .spawn()
        .context("start the control plane")?;
    let stdout = control_plane.stdout.take().context("piped stdout")?;
    let (url, stdout) = tokio::time::timeout(STARTUP_TIMEOUT, announced(stdout))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the control plane did not announce `{LISTENING}…` within {STARTUP_TIMEOUT:?}; see {}",
                log.display()
            )
        })??;
    let channel = connect(&url).await?;
    Ok((control_plane, url, stdout, channel))
}

/// Adds the bench administrator to the fresh database, as an operator would.
async fn add_admin(program: &Path, database: &str, dir: &Path) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let args = [
        "--database",
        database,
        "users",
        "add",
        "--username",
        BENCH_USER,
        "--role",
        "administrator",
    ]
    .map(str::to_string);
    let mut child = command(program, &args, &dir.join("control-plane.log"))?
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("run `presswork-control-plane users add`")?;
    let mut stdin = child.stdin.take().context("piped stdin")?;
    stdin
        .write_all(format!("{BENCH_PASSWORD}\n").as_bytes())
        .await?;
    drop(stdin);
    let status = child.wait().await?;
    anyhow::ensure!(
        status.success(),
        "adding the bench administrator failed; see {}",
        dir.join("control-plane.log").display()
    );
    Ok(())
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connect to the control plane at {url}"))
}

/// A command with only the given flags as configuration (no `PRESSWORK_*` from the
/// environment), stderr appended to `log`, killed if the bench dies.
fn command(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Command> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PRESSWORK_") {
            command.env_remove(name);
        }
    }
    Ok(command)
}

/// Reads the control plane's stdout until it announces its address.
async fn announced(stdout: ChildStdout) -> anyhow::Result<(String, ChildStdout)> {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            bail!("the control plane exited before announcing its address; see its log");
        }
        if let Some(url) = line.trim().strip_prefix(LISTENING) {
            return Ok((url.to_string(), reader.into_inner()));
        }
    }
}

async fn stop_process(mut child: Child) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(STOP_TIMEOUT, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// A fresh database for one cluster: a SQLite file in its directory, or a new PostgreSQL
/// database (dropped when the cluster stops).
enum Database {
    Sqlite {
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl Database {
    async fn create(env: &Environment, dir: &Path) -> anyhow::Result<Self> {
        match env.backend {
            Backend::Sqlite => Ok(Database::Sqlite {
                url: format!("sqlite://{}", dir.join("presswork.db").display()),
            }),
            Backend::Postgres => {
                let admin_url = env.postgres_url.clone().context(
                    "--database postgres needs --postgres-url or PRESSWORK_TEST_POSTGRES_URL (an admin URL whose role has CREATEDB)",
                )?;
                let name = format!("presswork_bench_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .with_context(|| format!("connect to PostgreSQL at {admin_url}"))?;
                // The name is made above from a UUID: a safe identifier.
                sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .with_context(|| format!("create database {name}"))?;
                let _ = admin.close().await;
                let url = with_database(&admin_url, &name);
                Ok(Database::Postgres {
                    admin_url,
                    name,
                    url,
                })
            }
        }
    }

    fn url(&self) -> &str {
        match self {
            Database::Sqlite { url } | Database::Postgres { url, .. } => url,
        }
    }

    async fn drop_database(&self) {
        let Database::Postgres {
            admin_url, name, ..
        } = self
        else {
            return;
        };
        let dropped = async {
            let mut admin = PgConnection::connect(admin_url).await?;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await?;
            admin.close().await
        };
        if let Err(e) = dropped.await {
            eprintln!("could not drop benchmark database {name}: {e}");
        }
    }
}

/// `admin_url` with its database name replaced by `database`, keeping any `?options`.
fn with_database(admin_url: &str, database: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_of_an_admin_url() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/postgres", "b1"),
            "postgres://u:p@127.0.0.1:5432/b1"
        );
        assert_eq!(
            with_database("postgres://u:p@db/postgres?sslmode=disable", "b1"),
            "postgres://u:p@db/b1?sslmode=disable"
        );
    }
}
