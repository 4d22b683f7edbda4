//! The Presswork control plane: the only writer of job state. It serves the gRPC API, hands
//! jobs to connected workers and streams cancels to them.

pub mod config;
pub mod dispatch;
pub mod grpc;
pub mod job;
pub mod store;
pub mod time;

use std::sync::Arc;

use presswork_proto::v1::job_service_server::JobServiceServer;
use presswork_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::Config;

use crate::dispatch::Dispatcher;
use crate::grpc::caller::LocalCallerLayer;
use crate::grpc::jobs::JobApi;
use crate::grpc::workers::WorkerApi;
use crate::store::Store;

/// Serves the control plane on `listener` until `shutdown` fires, then drains: worker streams
/// and watchers are closed, background tasks end, the database is closed.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = Store::connect(&config.database).await.map_err(|e| {
        anyhow::anyhow!("cannot open the database {}: {e}", redact(&config.database))
    })?;
    info!(backend = store.backend_name(), "store ready");
    let dispatcher = Dispatcher::start(store.clone(), config.timing(), shutdown.clone());

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<JobServiceServer<JobApi>>()
        .await;
    health_reporter
        .set_serving::<WorkerServiceServer<WorkerApi>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(presswork_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(presswork_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let jobs = JobApi {
        dispatcher: Arc::clone(&dispatcher),
        shutdown: shutdown.clone(),
    };
    let workers = WorkerApi {
        dispatcher: Arc::clone(&dispatcher),
    };
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            // Commands and cancels are small messages: send them without delay.
            let _ = stream.set_nodelay(true);
        })
    });

    let drain = {
        let dispatcher = Arc::clone(&dispatcher);
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            dispatcher.disconnect_all();
        }
    };
    tonic::transport::Server::builder()
        .layer(LocalCallerLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(JobServiceServer::new(jobs))
        .add_service(WorkerServiceServer::new(workers))
        .serve_with_incoming_shutdown(incoming, drain)
        .await?;
    dispatcher.disconnect_all();
    dispatcher.stopped().await;
    store.close().await;
    info!("control plane stopped");
    Ok(())
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}://{}:***{}",
                    &url[..scheme],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
