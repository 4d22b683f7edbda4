//! `presswork-worker`: parse flags, set up logging to stderr, run the worker until SIGTERM or
//! Ctrl-C.

use std::path::PathBuf;

use clap::Parser;
use presswork_worker::{DEFAULT_CAPACITY, DEFAULT_CONTROL_PLANE, DEFAULT_OUTPUT_DIR, WorkerConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Runs Presswork report jobs for a control plane.
#[derive(Debug, Parser)]
#[command(name = "presswork-worker", version, about)]
struct Flags {
    /// The control plane's URL.
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
    token: String,
    /// PEM CA certificate to trust for an https:// control plane.
    #[arg(long, env = "PRESSWORK_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Serve a gRPC health service here (e.g. 0.0.0.0:7071) for container health checks:
    /// "" is SERVING while the process runs; "presswork.worker" while it is connected to the
    /// control plane and takes jobs.
    #[arg(long, env = "PRESSWORK_HEALTH_LISTEN")]
    health_listen: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let defaults = WorkerConfig::default();
    let config = WorkerConfig {
        control_plane: flags.control_plane,
        capacity: flags.capacity,
        enable_test_reports: flags.enable_test_reports,
        name: flags.name.unwrap_or(defaults.name),
        worker_id: defaults.worker_id,
        output_dir: flags.output_dir,
        work_dir: flags.work_dir.unwrap_or(defaults.work_dir),
        token: presswork_worker::WorkerToken(flags.token),
        tls_ca: flags.tls_ca,
        health_listen: flags.health_listen,
    };

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    presswork_worker::run(config, shutdown).await
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
