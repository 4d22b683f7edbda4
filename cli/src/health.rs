//! `presswork health`: asks a server's standard gRPC health service (`grpc.health.v1`)
//! whether it serves. Needs no sign-in, so container health checks can use it.

use std::io::Write;
use std::path::Path;

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::client;
use crate::error::CliError;

/// Checks `service` ("" for the server as a whole) at `server`. Prints the status; errors
/// unless it is SERVING.
pub async fn run(
    server: &str,
    tls_ca: Option<&Path>,
    service: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let channel = client::channel(server, tls_ca)?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|status| CliError::rpc(status, server, None))?;
    let status =
        ServingStatus::try_from(answer.into_inner().status).unwrap_or(ServingStatus::Unknown);
    let name = status.as_str_name();
    if json {
        crate::write_json(
            out,
            &serde_json::json!({ "server": server, "service": service, "status": name }),
        )?;
    } else {
        writeln!(out, "{name}")?;
    }
    if status == ServingStatus::Serving {
        return Ok(());
    }
    let what = if service.is_empty() {
        "the server".to_owned()
    } else {
        format!("service `{service}`")
    };
    Err(CliError::rpc(
        tonic::Status::new(
            Code::Unavailable,
            format!(
                "{what} at {server} answers {name}: it is starting, shutting down or has lost \
                 its database. Wait and try again, or check its log"
            ),
        ),
        server,
        None,
    ))
}
