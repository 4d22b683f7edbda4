//! The Presswork end-to-end harness: starts the real `presswork-control-plane` and
//! `presswork-worker` binaries as processes on loopback, talks to them over gRPC, and waits on
//! the control plane's streams rather than on sleeps.
//!
//! The binaries are found beside the test executable, so build them first:
//! `cargo build --workspace --bins` (`scripts/test` does it, and starts PostgreSQL for the
//! tests that use it).
//!
//! ```no_run
//! # async fn example() {
//! use presswork_tests::Cluster;
//! let cluster = Cluster::builder().workers(2).capacity(4).start().await;
//! let job = cluster.submit("demo-fast", &[]).await;
//! cluster.wait_for_terminal(&job.id, presswork_tests::WAIT).await;
//! # }
//! ```

pub mod cluster;
pub mod database;
pub mod execution_log;
pub mod netns;
pub mod process;
pub mod races;
mod readiness;
pub mod system;
pub mod verdict;
pub mod waiting;

pub use cluster::{Cluster, ClusterBuilder};
pub use database::Backend;
pub use execution_log::{ExecutionLog, describe_job, resolution};
pub use netns::NetworkNamespace;
pub use verdict::{CancelObservation, NOT_CANCELLABLE, Tally, Verdict, judge};
pub use waiting::{LONG_WAIT, WAIT};
