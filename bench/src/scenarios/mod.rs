//! The scenarios. Each starts its own cluster on a fresh database, measures, stops the cluster
//! and returns its report; each phase is bounded and stops by itself.

pub mod cancel_queued;
pub mod cancel_running;
pub mod cancel_running_replicas;
pub mod consistency;
pub mod footprint;
pub mod throughput;
pub mod unresponsive;
pub mod watchers;

use std::time::Duration;

use futures::StreamExt;
use presswork_proto::v1::Job;

use crate::clock::{between, now_ns};
use crate::cluster::{Cluster, submit};

/// Sizes of the scenarios (flags; the defaults keep a full run of one database under about
/// three minutes on two cores).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Jobs kept queued while cancels are timed.
    pub queued: usize,
    /// Cancels of queued jobs timed.
    pub cancels: usize,
    /// Running `coop` jobs stopped.
    pub stops: usize,
    /// How much CPU a `coop` job spins between two looks at its token, ms (0: `blocker`).
    pub check_ms: u64,
    /// No-op jobs run end to end.
    pub jobs: usize,
    /// Slots per worker in the throughput scenario (two workers).
    pub capacity: u32,
    /// Concurrent `WatchJobs` streams.
    pub watchers: usize,
    /// Jobs submitted and cancelled while the watchers watch (two changes each).
    pub watched_jobs: usize,
    /// Changes per second the watchers are fed.
    pub watch_rate: f64,
    /// `busy` jobs stopped per variant.
    pub kills: usize,
    /// SIGTERM → SIGKILL grace of the `busy` child, ms.
    pub grace_ms: u64,
    /// The control plane's cancel timeout in the force-stop variant, seconds.
    pub force_timeout: f64,
    /// Races of each kind (claim vs cancel, finish vs cancel).
    pub races: usize,
}

/// Generous bound on any single wait for the system: a scenario that needs longer is broken.
pub const WAIT: Duration = Duration::from_secs(30);

/// A job as `SubmitJob` returned it, and when the call was made and answered.
pub struct Submitted {
    pub job: Job,
    pub sent: u64,
    pub answered: u64,
}

impl Submitted {
    pub fn round_trip(&self) -> i64 {
        between(self.sent, self.answered)
    }
}

/// Submits `n` jobs with at most `in_flight` calls at once, in submission order.
pub async fn submit_many(
    cluster: &Cluster,
    report: &str,
    params: &[(&str, &str)],
    n: usize,
    in_flight: usize,
) -> anyhow::Result<Vec<Submitted>> {
    let client = cluster.client();
    let results: Vec<anyhow::Result<Submitted>> = futures::stream::iter(0..n)
        .map(|_| {
            let mut client = client.clone();
            async move {
                let sent = now_ns();
                let job = submit(&mut client, report, params).await?;
                Ok(Submitted {
                    job,
                    sent,
                    answered: now_ns(),
                })
            }
        })
        .buffered(in_flight)
        .collect()
        .await;
    results.into_iter().collect()
}

/// A pause of `0..max` with microsecond jitter (for landing cancels at random phases).
pub async fn jitter(max: Duration) {
    use rand::Rng;
    let micros = rand::rng().random_range(0..max.as_micros().max(1) as u64);
    tokio::time::sleep(Duration::from_micros(micros)).await;
}
