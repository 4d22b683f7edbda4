//! The control plane's settings: flags, each also read from a `PRESSWORK_` environment
//! variable, with defaults for a local run. Validated once at start.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::dispatch::Timing;

/// presswork-control-plane: owns every job's state, hands jobs to workers and streams cancels
/// to them. Serves gRPC on one port.
#[derive(Clone, Debug, Parser)]
#[command(name = "presswork-control-plane", version)]
pub struct Config {
    /// Address to listen on for gRPC (workers, CLI, dashboard).
    #[arg(long, env = "PRESSWORK_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// Database URL: sqlite:///absolute/path.db (created when missing) or
    /// postgres://user:password@host/database.
    #[arg(
        long,
        env = "PRESSWORK_DATABASE",
        default_value = "sqlite://presswork.db"
    )]
    pub database: String,

    /// Seconds a running job has to confirm a cancel before it is failed and force-stopped.
    #[arg(long, env = "PRESSWORK_CANCEL_TIMEOUT", default_value_t = 30.0, value_parser = positive_seconds)]
    pub cancel_timeout: f64,

    /// Seconds without a heartbeat after which a worker is lost and its jobs fail.
    #[arg(long, env = "PRESSWORK_WORKER_LEASE", default_value_t = 10.0, value_parser = positive_seconds)]
    pub worker_lease: f64,
}

impl Config {
    /// The protocol timings these settings imply. Workers heartbeat four times per lease.
    pub fn timing(&self) -> Timing {
        let lease = Duration::from_secs_f64(self.worker_lease);
        Timing {
            cancel_timeout: Duration::from_secs_f64(self.cancel_timeout),
            worker_lease: lease,
            heartbeat_interval: (lease / 4).max(Duration::from_millis(20)),
        }
    }
}

fn positive_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(secs) if (0.05..=86_400.0).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "{value:?} is not a number of seconds between 0.05 and 86400 (e.g. 30 or 0.5)"
        )),
    }
}
