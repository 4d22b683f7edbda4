//! The worker's own gRPC health service (`--health-listen`), for container health checks
//! (`presswork health --server http://127.0.0.1:PORT`) and Kubernetes gRPC probes:
//! - `""` (the process as a whole) is SERVING while the process runs: a liveness check.
//! - [`READY_SERVICE`] is SERVING while the session with the control plane is up, and
//!   NOT_SERVING while it connects, reconnects or drains for shutdown: a readiness check.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

/// The health service name that says whether the worker is connected to its control plane.
pub const READY_SERVICE: &str = "presswork.worker";

/// Serves health on `addr` until `stop` fires, following `connected` for [`READY_SERVICE`].
/// Binds before returning, so a busy port is reported at startup.
pub(crate) async fn serve(
    addr: SocketAddr,
    mut connected: watch::Receiver<bool>,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on --health-listen {addr}; pick a free port or leave it unset")
    })?;
    let local = listener.local_addr()?;
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(READY_SERVICE, ServingStatus::NotServing)
        .await;
    tracing::info!(addr = %local, "health service listening");
    Ok(tokio::spawn(async move {
        let follow = async {
            loop {
                let up = *connected.borrow_and_update();
                let status = if up {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                reporter.set_service_status(READY_SERVICE, status).await;
                if connected.changed().await.is_err() {
                    // The session is over: the worker is about to exit.
                    reporter
                        .set_service_status(READY_SERVICE, ServingStatus::NotServing)
                        .await;
                    break;
                }
            }
        };
        let server = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stop.cancelled(),
            );
        let (_, served) = tokio::join!(follow, server);
        if let Err(error) = served {
            tracing::warn!(%error, "health service failed; container health checks will fail");
        }
    }))
}
