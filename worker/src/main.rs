//! `presswork-worker`: parse flags, set up logging to stderr, run the worker until SIGTERM or
//! Ctrl-C — or, with `connector-check`, run the connector conformance kit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use presswork_worker::plugin::check::{self, CheckOptions};
use presswork_worker::plugin::{self, Connectors};
use presswork_worker::reach::{AllowedHosts, Reach};
use presswork_worker::stage_runtime::{self, StagePriority};
use presswork_worker::{DEFAULT_CAPACITY, DEFAULT_CONTROL_PLANE, DEFAULT_OUTPUT_DIR, WorkerConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Runs Presswork report jobs for a control plane.
#[derive(Debug, Parser)]
#[command(name = "presswork-worker", version, about)]
struct Flags {
    #[command(subcommand)]
    command: Option<Command>,
    /// The control plane's URL; for a scaled-out control plane, several comma-separated (the
    /// worker uses one and moves to the next when it is unreachable), or one load-balanced.
    #[arg(long, env = "PRESSWORK_CONTROL_PLANE", default_value = DEFAULT_CONTROL_PLANE)]
    control_plane: String,
    /// How many jobs to run at once.
    #[arg(long, env = "PRESSWORK_CAPACITY", default_value_t = DEFAULT_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..))]
    capacity: u32,
    /// Also run test reports (demo-stuck, which ignores cancellation, and the benchmark
    /// workloads noop, blocker, coop, busy, short).
    #[arg(long, env = "PRESSWORK_ENABLE_TEST_REPORTS")]
    enable_test_reports: bool,
    /// The name shown on the dashboard [default: worker-<first 8 characters of its id>].
    #[arg(long, env = "PRESSWORK_NAME")]
    name: Option<String>,
    /// Where delivered reports are written, as <job id>.pdf.
    #[arg(long, env = "PRESSWORK_OUTPUT_DIR", default_value = DEFAULT_OUTPUT_DIR)]
    output_dir: PathBuf,
    /// Where jobs get their private work directories [default: the system temp directory].
    #[arg(long, env = "PRESSWORK_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// The worker credential: one of the control plane's --worker-token values. Prefer the
    /// environment variable: command lines are visible to other users of the machine.
    #[arg(long, env = "PRESSWORK_WORKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificate to trust for an https:// control plane.
    #[arg(long, env = "PRESSWORK_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Serve a gRPC health service here (e.g. 0.0.0.0:7071) for container health checks:
    /// "" is SERVING while the process runs; "presswork.worker" while it is connected to the
    /// control plane and takes jobs.
    #[arg(long, env = "PRESSWORK_HEALTH_LISTEN")]
    health_listen: Option<std::net::SocketAddr>,
    /// A connector jobs may use as source=NAME: NAME=PATH of an executable (repeat the flag,
    /// or comma-separate in the environment).
    #[arg(
        long = "connector",
        env = "PRESSWORK_CONNECTORS",
        value_name = "NAME=PATH",
        value_delimiter = ','
    )]
    connectors: Vec<String>,
    /// A directory of connectors: each executable file in it is one, named after the file
    /// without its extension (repeat the flag, or comma-separate in the environment).
    #[arg(
        long = "connector-dir",
        env = "PRESSWORK_CONNECTOR_DIR",
        value_name = "DIR",
        value_delimiter = ','
    )]
    connector_dirs: Vec<PathBuf>,
    /// The scheduling class of job stages: `idle` (default; any other thread on the host —
    /// this worker's stream, the control plane — preempts stage work at once, so cancels are
    /// not delayed by CPU-bound stages) or `normal` (stages compete as equals; for a host
    /// whose cores are kept busy by other services in the same cgroup).
    #[arg(long, env = "PRESSWORK_STAGE_PRIORITY", value_enum, default_value_t = StagePriority::Idle)]
    stage_priority: StagePriority,
    /// How long a cancelled connector has to exit after SIGTERM before its process group is
    /// SIGKILLed, in milliseconds. Keep it below the control plane's --cancel-timeout.
    #[arg(long, env = "PRESSWORK_CONNECTOR_GRACE_MS", value_name = "MS",
          default_value_t = plugin::DEFAULT_GRACE.as_millis() as u64)]
    connector_grace_ms: u64,
    /// The directory the demo reports' `input=PATH` and file sources read from. Without it,
    /// `input=` is refused (the demo reports read their bundled sample).
    #[arg(long, env = "PRESSWORK_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// More directories file sources (csv, jsonl, sqlite://) may read and directory deliveries
    /// may write, besides --data-dir and --output-dir (repeat, or comma-separate).
    #[arg(
        long = "allow-dirs",
        env = "PRESSWORK_ALLOW_DIRS",
        value_name = "DIR",
        value_delimiter = ','
    )]
    allow_dirs: Vec<PathBuf>,
    /// Hosts HTTP sources and deliveries may reach besides public addresses: networks
    /// (10.1.0.0/16), addresses (127.0.0.1) or host names (repeat, or comma-separate). By
    /// default loopback, private, link-local and metadata addresses are refused.
    #[arg(
        long = "allow-hosts",
        env = "PRESSWORK_ALLOW_HOSTS",
        value_name = "HOST|CIDR",
        value_delimiter = ','
    )]
    allow_hosts: Vec<String>,
    /// Let SQL sources connect as a PostgreSQL superuser or a member of
    /// pg_read_server_files, pg_write_server_files or pg_execute_server_program (refused by
    /// default: such a role can read and write the database server's files).
    #[arg(long, env = "PRESSWORK_ALLOW_PRIVILEGED_SQL_ROLES")]
    allow_privileged_sql_roles: bool,
    /// Where report configurations' `${file:NAME}` secret references are read: NAME is a
    /// file in this directory (keep it readable by the worker only). `${env:NAME}` reads the
    /// worker's environment.
    #[arg(long, env = "PRESSWORK_SECRETS_DIR", value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks that a connector honours the plug-in contract (docs/pdk.md): runs it to the
    /// end, runs it again and cancels it at its first rows, and reports PASS or FAIL per
    /// rule. Exit status 0 when every rule passed, 1 otherwise.
    ConnectorCheck(CheckFlags),
}

#[derive(Debug, Args)]
struct CheckFlags {
    /// The connector program (an executable).
    program: PathBuf,
    /// A parameter for the connector, as a job's source.KEY=VALUE gives it (repeat).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// How long after SIGTERM to wait before SIGKILL, in milliseconds (the stop rule's limit
    /// is 1 s whatever this is).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    grace_ms: u64,
    /// How long the complete run may take, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout_secs: u64,
}

// One thread for the stream to the control plane: a message read from the socket is handled
// on the thread that read it, with no hand-over between threads that could wait behind a
// busy core. Job stages run on a runtime of their own (`stage_runtime`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<ExitCode> {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    if let Some(Command::ConnectorCheck(check)) = flags.command {
        return connector_check(check).await;
    }

    stage_runtime::configure(flags.stage_priority);
    let defaults = WorkerConfig::default();
    let config = WorkerConfig {
        control_plane: flags.control_plane,
        capacity: flags.capacity,
        enable_test_reports: flags.enable_test_reports,
        name: flags.name.unwrap_or(defaults.name),
        worker_id: defaults.worker_id,
        output_dir: flags.output_dir,
        work_dir: flags.work_dir.unwrap_or(defaults.work_dir),
        token: presswork_worker::WorkerToken(flags.token.unwrap_or_default()),
        tls_ca: flags.tls_ca,
        health_listen: flags.health_listen,
        connectors: Connectors::from_settings(
            &flags.connectors,
            &flags.connector_dirs,
            Duration::from_millis(flags.connector_grace_ms),
        )?,
        reach: Reach {
            data_dir: flags.data_dir,
            allow_dirs: flags.allow_dirs,
            allow_hosts: AllowedHosts::parse(&flags.allow_hosts).map_err(anyhow::Error::msg)?,
            allow_privileged_sql_roles: flags.allow_privileged_sql_roles,
        },
        secrets_dir: flags.secrets_dir,
    };

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    presswork_worker::run(config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// `presswork-worker connector-check`: prints the report on stdout, the connector's stderr
/// on stderr.
async fn connector_check(flags: CheckFlags) -> anyhow::Result<ExitCode> {
    let mut params = BTreeMap::new();
    for param in &flags.params {
        let (key, value) = param.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--param `{param}` is not KEY=VALUE; e.g. --param rows=1000")
        })?;
        params.insert(key.to_string(), value.to_string());
    }
    let options = CheckOptions {
        program: flags.program,
        params,
        grace: Duration::from_millis(flags.grace_ms),
        timeout: Duration::from_secs(flags.timeout_secs),
    };
    let report = check::check(&options, Arc::new(|line| eprintln!("{line}"))).await;
    println!("{report}");
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Fires `shutdown` on SIGTERM or Ctrl-C (SIGINT).
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; stop the worker with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("stop requested");
    shutdown.cancel();
}
