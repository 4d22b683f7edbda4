//! The Presswork control plane: the only writer of job state. It serves the gRPC API, hands
//! jobs to connected workers and streams cancels to them.

pub mod admin;
pub mod auth;
pub mod config;
pub mod dispatch;
pub mod echo;
pub mod grpc;
pub mod job;
pub mod listener;
pub mod reports;
pub mod store;
pub mod time;
pub mod web;

use std::sync::Arc;

use presswork_proto::v1::auth_service_server::AuthServiceServer;
use presswork_proto::v1::job_service_server::JobServiceServer;
use presswork_proto::v1::report_service_server::ReportServiceServer;
use presswork_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tracing::{info, warn};

pub use config::Config;

use crate::auth::{AuthLayer, Authenticator};
use crate::dispatch::Dispatcher;
use crate::grpc::auth::AuthApi;
use crate::grpc::jobs::{JobApi, JobLimits};
use crate::grpc::reports::ReportApi;
use crate::grpc::wire;
use crate::grpc::workers::WorkerApi;
use crate::store::Store;

/// The largest request each service decodes: a sign-in is a name and a password; a job
/// request at most its parameters' budget. Larger ones are refused with RESOURCE_EXHAUSTED
/// before they are read into memory (report configurations and worker messages keep tonic's
/// 4 MiB).
const MAX_AUTH_REQUEST: usize = 16 * 1024;
const MAX_JOB_REQUEST: usize = 256 * 1024;

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
    let auth_settings = config.auth().map_err(anyhow::Error::msg)?;
    if auth_settings.worker_tokens.is_empty() {
        warn!(
            "no worker credential configured (--worker-token / PRESSWORK_WORKER_TOKEN): no worker can connect"
        );
    }
    let auth = Authenticator::new(store.clone(), auth_settings)
        .await
        .map_err(|e| anyhow::anyhow!("cannot set up authentication: {e}"))?;
    let tls = tls_config(&config)?;
    let local = listener
        .local_addr()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false);
    if tls.is_none() && !local {
        warn!(
            "listening beyond loopback without TLS: tokens and passwords cross the network in clear text; set --tls-cert and --tls-key"
        );
    }
    // Ends with `shutdown`, or when this function returns early.
    let checkpoint_stop = shutdown.child_token();
    let checkpoints = {
        let store = store.clone();
        let stop = checkpoint_stop.clone();
        tokio::spawn(async move { store.checkpoint_until(stop).await })
    };
    let _stop_checkpoints = checkpoint_stop.clone().drop_guard();
    let dispatcher = Dispatcher::start(store.clone(), config.timing(), shutdown.clone());

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<JobServiceServer<JobApi>>()
        .await;
    health_reporter
        .set_serving::<WorkerServiceServer<WorkerApi>>()
        .await;
    health_reporter
        .set_serving::<ReportServiceServer<ReportApi>>()
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
        limits: Arc::new(JobLimits::new(
            config.max_watchers as usize,
            config.max_snapshot_readers as usize,
            config.submit_rate,
        )),
    };
    let workers = WorkerApi {
        dispatcher: Arc::clone(&dispatcher),
    };
    listener::raise_open_file_limit();
    let incoming = listener::incoming(listener, config.listener());

    let drain = {
        let dispatcher = Arc::clone(&dispatcher);
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            dispatcher.disconnect_all();
        }
    };
    let guard = AuthLayer::new(Arc::clone(&auth));
    let routes = Routes::new(web::guarded(&guard, health_service))
        .add_service(web::guarded(&guard, reflection_v1))
        .add_service(web::guarded(&guard, reflection_v1alpha))
        .add_service(web::guarded(
            &guard,
            wire::mapped(
                AuthServiceServer::new(AuthApi { auth })
                    .max_decoding_message_size(MAX_AUTH_REQUEST),
            ),
        ))
        .add_service(web::guarded(
            &guard,
            wire::mapped(JobServiceServer::new(jobs).max_decoding_message_size(MAX_JOB_REQUEST)),
        ))
        .add_service(web::guarded(
            &guard,
            wire::mapped(ReportServiceServer::new(ReportApi {
                store: store.clone(),
            })),
        ))
        .add_service(web::guarded(
            &guard,
            wire::mapped(WorkerServiceServer::new(workers)),
        ));
    let routes = web::with_dashboard(routes, &config.web_dir, config.web_csp.clone());
    // HTTP/1.1 for grpc-web and the dashboard's files; HTTP/2 for gRPC.
    let mut server = tonic::transport::Server::builder()
        .accept_http1(true)
        .http2_keepalive_interval(Some(listener::HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(listener::HTTP2_KEEPALIVE_TIMEOUT));
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        .layer(listener::ConnectionInfoLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, drain)
        .await?;
    dispatcher.disconnect_all();
    dispatcher.stopped().await;
    // The server can also end without `shutdown` (its listener failed): stop checkpointing.
    checkpoint_stop.cancel();
    let _ = checkpoints.await;
    store.close().await;
    info!("control plane stopped");
    Ok(())
}

fn tls_config(config: &Config) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e}; check --tls-cert / --tls-key",
                path.display()
            )
        })
    };
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    Ok(Some(
        tonic::transport::ServerTlsConfig::new().identity(identity),
    ))
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
