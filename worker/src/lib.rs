//! The Presswork worker: connects out to the control plane over one bidirectional gRPC
//! stream, runs the report jobs it is assigned (ingest → transform → generate → deliver), each
//! under a cancellation token, and streams progress, logs and outcomes back.
//!
//! - [`session`]: connect, reconnect, demultiplex the stream, heartbeats and fencing.
//! - [`executor`]: a supervised task per job, a child token per stage.
//! - [`stages`]: the stages and the contract they follow ([`stages::StageContext`]).
//! - [`reports`]: the built-in report kinds.
//! - [`configured`]: stored report configurations (`AssignJob.config`), checked and planned.
//! - [`secrets`]: the values of configurations' secret references (`${env:…}`, `${file:…}`).
//! - [`cancel`]: why a job was cancelled, and its point of no return.
//! - [`plugin`]: out-of-process connectors (any language, JSON lines over stdin/stdout) and
//!   their conformance kit.
//! - [`test_reports`]: test-only workloads for benchmarks (`--enable-test-reports`).

pub mod cancel;
pub mod configured;
mod executor;
pub mod health;
pub mod plugin;
pub mod reach;
pub mod reports;
pub mod secrets;
mod session;
pub mod stage_runtime;
pub mod stages;
pub mod table;
pub mod test_reports;

use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// The control plane a worker connects to when none is given.
pub const DEFAULT_CONTROL_PLANE: &str = "http://127.0.0.1:7070";
/// How many jobs a worker runs at once when not told otherwise.
pub const DEFAULT_CAPACITY: u32 = 2;
/// Where delivered reports go when not told otherwise (relative to the working directory).
pub const DEFAULT_OUTPUT_DIR: &str = "presswork-output";

/// Everything a worker needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// The control plane's URL (`--control-plane`), e.g. `http://127.0.0.1:7070`; several,
    /// comma-separated, for a scaled-out control plane (see [`WorkerConfig::control_planes`]).
    pub control_plane: String,
    /// How many jobs run at once (`--capacity`, at least 1).
    pub capacity: u32,
    /// Whether test reports (`demo-stuck` and the test workloads) may run
    /// (`--enable-test-reports`).
    pub enable_test_reports: bool,
    /// Stable for the life of the process: a fresh UUID by default.
    pub worker_id: String,
    /// Shown on the dashboard (`--name`).
    pub name: String,
    /// Where delivered reports are written as `<job id>.pdf` (`--output-dir`).
    pub output_dir: PathBuf,
    /// Where each job gets its private work directory (`--work-dir`).
    pub work_dir: PathBuf,
    /// The worker credential presented to the control plane (`--token`).
    pub token: WorkerToken,
    /// PEM CA certificate to trust for an `https://` control plane (`--tls-ca`).
    pub tls_ca: Option<PathBuf>,
    /// Where to serve the worker's gRPC health service (`--health-listen`); none by default.
    pub health_listen: Option<std::net::SocketAddr>,
    /// The connectors jobs may name (`--connector`, `--connector-dir`), and their grace
    /// period after SIGTERM (`--connector-grace-ms`).
    pub connectors: plugin::Connectors,
    /// What jobs may reach: hosts, directories, privileged SQL roles (`--allow-hosts`,
    /// `--data-dir`, `--allow-dirs`, `--allow-privileged-sql-roles`).
    pub reach: reach::Reach,
    /// Where report configurations' `${file:NAME}` secret references are read
    /// (`--secrets-dir`); `${env:NAME}` reads the process environment.
    pub secrets_dir: Option<PathBuf>,
}

/// A worker credential; never printed, not even by `{:?}`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WorkerToken(pub String);

impl std::fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "WorkerToken(unset)"
        } else {
            "WorkerToken(<redacted>)"
        })
    }
}

impl Default for WorkerConfig {
    /// The defaults, with a fresh worker id and a name derived from it.
    fn default() -> Self {
        let worker_id = uuid::Uuid::new_v4().to_string();
        WorkerConfig {
            control_plane: DEFAULT_CONTROL_PLANE.to_string(),
            capacity: DEFAULT_CAPACITY,
            enable_test_reports: false,
            name: default_name(&worker_id),
            worker_id,
            output_dir: PathBuf::from(DEFAULT_OUTPUT_DIR),
            work_dir: std::env::temp_dir(),
            token: WorkerToken::default(),
            tls_ca: None,
            health_listen: None,
            connectors: plugin::Connectors::default(),
            reach: reach::Reach::default(),
            secrets_dir: None,
        }
    }
}

/// `worker-` and the first 8 characters of the worker id.
pub fn default_name(worker_id: &str) -> String {
    format!("worker-{}", worker_id.chars().take(8).collect::<String>())
}

impl WorkerConfig {
    /// The control planes' URLs: `control_plane` split at commas. The worker connects to one
    /// and moves to the next when it is unreachable or its stream breaks.
    pub fn control_planes(&self) -> Vec<&str> {
        self.control_plane
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect()
    }

    /// Checks the settings; errors name the setting and say what to do.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.capacity >= 1,
            "--capacity (PRESSWORK_CAPACITY) must be at least 1, got {}",
            self.capacity
        );
        anyhow::ensure!(
            !self.worker_id.is_empty(),
            "the worker id must not be empty"
        );
        anyhow::ensure!(
            !self.token.0.is_empty(),
            "no worker credential: set --token (or PRESSWORK_WORKER_TOKEN) to one of the control plane's --worker-token values"
        );
        anyhow::ensure!(
            !self.control_planes().is_empty(),
            "--control-plane (PRESSWORK_CONTROL_PLANE) is empty: give the control plane's URL, e.g. http://127.0.0.1:7070"
        );
        for url in self.control_planes() {
            anyhow::ensure!(
                !url.starts_with("https://") || self.tls_ca.is_some(),
                "{url} is an https:// URL: give the CA certificate that signed its certificate with --tls-ca (PRESSWORK_TLS_CA)"
            );
        }
        Ok(())
    }
}

/// Runs the worker until `shutdown` fires: then it stops taking jobs, cancels the running ones
/// ("worker shutting down"), waits up to 5 s for their outcomes to be acknowledged, and
/// returns. Errors only when the configuration cannot work (bad URL, unusable directories).
pub async fn run(mut config: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    for (flag, dir) in [
        ("--output-dir", &mut config.output_dir),
        ("--work-dir", &mut config.work_dir),
    ] {
        tokio::fs::create_dir_all(&*dir).await.with_context(|| {
            format!(
                "cannot create {flag} {}; pick a writable directory",
                dir.display()
            )
        })?;
        *dir = std::path::absolute(&*dir)
            .with_context(|| format!("cannot resolve {flag} {}", dir.display()))?;
    }
    tracing::info!(
        worker_id = %config.worker_id,
        name = %config.name,
        capacity = config.capacity,
        control_plane = %config.control_plane,
        output_dir = %config.output_dir.display(),
        reports = ?reports::available(config.enable_test_reports),
        connectors = ?config.connectors.names(),
        data_dir = ?config.reach.data_dir,
        allow_dirs = ?config.reach.allow_dirs,
        stage_priority = ?stage_runtime::priority(),
        "worker starting"
    );
    if config.reach.allow_privileged_sql_roles {
        tracing::warn!(
            "--allow-privileged-sql-roles is set: SQL sources may run as a PostgreSQL superuser or a role that reads, writes or runs files on the database server"
        );
    }
    let (connected, connected_rx) = tokio::sync::watch::channel(false);
    let stop_health = CancellationToken::new();
    let health = match config.health_listen {
        Some(addr) => Some(health::serve(addr, connected_rx, stop_health.clone()).await?),
        None => None,
    };
    let result = session::WorkerSession::new(config, connected)?
        .run(shutdown)
        .await;
    stop_health.cancel();
    if let Some(health) = health {
        let _ = health.await;
    }
    result
}
