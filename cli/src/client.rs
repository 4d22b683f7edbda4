//! The connection to the control plane: the endpoint built from `--server`, and the one
//! place where call metadata (the bearer token) is added to every request.

use std::time::Duration;

use presswork_proto::v1::job_service_client::JobServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::error::CliError;

/// The `JobService` client every command uses.
pub type JobsClient = JobServiceClient<InterceptedService<Channel, CallCredentials>>;

/// Adds `authorization: Bearer <token>` to every call when a token was given.
#[derive(Clone, Debug, Default)]
pub struct CallCredentials {
    authorization: Option<MetadataValue<Ascii>>,
}

impl CallCredentials {
    /// Credentials from the raw token (the `PRESSWORK_TOKEN` value). An unset or blank token
    /// sends nothing; a token that cannot be sent as a header value is a usage error.
    pub fn from_token(token: Option<&str>) -> Result<Self, CliError> {
        let Some(token) = token.map(str::trim).filter(|token| !token.is_empty()) else {
            return Ok(Self::default());
        };
        let value = format!("Bearer {token}").parse().map_err(|_| {
            CliError::Usage(
                "PRESSWORK_TOKEN contains characters that cannot be sent in a header; \
                 copy the token again, without line breaks or non-ASCII characters"
                    .to_owned(),
            )
        })?;
        Ok(Self {
            authorization: Some(value),
        })
    }
}

impl Interceptor for CallCredentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Checks a `--server` value and turns it into an endpoint with the CLI's timeouts and
/// keep-alives (so a watch notices a dead connection and reconnects).
pub fn endpoint(server: &str) -> Result<Endpoint, CliError> {
    let usage = |why: &str| {
        CliError::Usage(format!(
            "invalid --server / PRESSWORK_SERVER `{server}`: {why}. \
             Use a URL like http://127.0.0.1:7070"
        ))
    };
    if server.starts_with("https://") {
        return Err(usage(
            "TLS (https) is not supported by this build of presswork yet",
        ));
    }
    if !server.starts_with("http://") {
        return Err(usage("it must start with http://"));
    }
    let endpoint =
        Endpoint::from_shared(server.to_owned()).map_err(|error| usage(&error.to_string()))?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// A client for the control plane at `server`. It connects on the first call, so a control
/// plane that is down surfaces as an `UNAVAILABLE` call error, explained like every other.
pub fn jobs_client(server: &str, credentials: CallCredentials) -> Result<JobsClient, CliError> {
    let channel = endpoint(server)?.connect_lazy();
    Ok(JobServiceClient::with_interceptor(channel, credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_becomes_a_bearer_authorization_header() {
        let mut credentials = CallCredentials::from_token(Some(" s3cret\n")).unwrap();
        let request = credentials.call(Request::new(())).unwrap();
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok()),
            Some("Bearer s3cret")
        );
    }

    #[test]
    fn no_or_blank_token_sends_no_header() {
        for token in [None, Some(""), Some("   ")] {
            let mut credentials = CallCredentials::from_token(token).unwrap();
            let request = credentials.call(Request::new(())).unwrap();
            assert!(request.metadata().get("authorization").is_none());
        }
    }

    #[test]
    fn a_token_that_is_not_a_header_value_is_a_usage_error() {
        let error = CallCredentials::from_token(Some("abc\u{7f}def")).unwrap_err();
        assert!(matches!(error, CliError::Usage(_)), "{error}");
    }

    #[test]
    fn server_urls_must_be_http() {
        assert!(endpoint("http://127.0.0.1:7070").is_ok());
        for bad in [
            "127.0.0.1:7070",
            "https://cp.example:7070",
            "http://exa mple",
        ] {
            let error = endpoint(bad).unwrap_err();
            assert!(
                matches!(&error, CliError::Usage(message) if message.contains(bad)),
                "{bad}: {error}"
            );
        }
    }
}
