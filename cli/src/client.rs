//! The connection to the control plane: the endpoint built from `--server` (and
//! `--tls-ca` for https), and the one place where call metadata (the bearer token) is added
//! to every request.

use std::path::Path;
use std::time::Duration;

use presswork_proto::v1::auth_service_client::AuthServiceClient;
use presswork_proto::v1::job_service_client::JobServiceClient;
use presswork_proto::v1::report_service_client::ReportServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::error::CliError;
use crate::token::{Token, TokenSource};

/// The `JobService` client every `jobs` command uses.
pub type JobsClient = JobServiceClient<InterceptedService<Channel, CallCredentials>>;

/// The `ReportService` client of the `reports` commands.
pub type ReportsClient = ReportServiceClient<InterceptedService<Channel, CallCredentials>>;

/// The `AuthService` client of `login` and `whoami`.
pub type AuthClient = AuthServiceClient<InterceptedService<Channel, CallCredentials>>;

/// Adds `authorization: Bearer <token>` to every call when a token was given.
#[derive(Clone, Debug, Default)]
pub struct CallCredentials {
    /// Marked sensitive, so that its `Debug` form does not show the token.
    authorization: Option<MetadataValue<Ascii>>,
}

impl CallCredentials {
    /// Credentials from the token to send, if any. A token that cannot be sent as a header
    /// value is a usage error that says where the token came from.
    pub fn from_token(token: Option<&Token>) -> Result<Self, CliError> {
        let Some(token) = token else {
            return Ok(Self::default());
        };
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.value.trim())
            .parse()
            .map_err(|_| {
                CliError::Usage(match token.source {
                    TokenSource::Environment => "PRESSWORK_TOKEN contains characters that \
                        cannot be sent in a header; copy the token again, without line breaks \
                        or non-ASCII characters"
                        .to_owned(),
                    TokenSource::File => "the stored token contains characters that cannot \
                        be sent in a header; sign in again with `presswork login --username \
                        <name>`"
                        .to_owned(),
                })
            })?;
        value.set_sensitive(true);
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
/// keep-alives (so a watch notices a dead connection and reconnects). An `https://` server
/// needs `tls_ca`, the PEM certificate of the CA that signed the control plane's
/// certificate; for `http://` it is not used.
pub fn endpoint(server: &str, tls_ca: Option<&Path>) -> Result<Endpoint, CliError> {
    let usage = |why: &str| {
        CliError::Usage(format!(
            "invalid --server / PRESSWORK_SERVER `{server}`: {why}. \
             Use a URL like http://127.0.0.1:7070 or https://cp.example:7070"
        ))
    };
    let tls = server.starts_with("https://");
    if !tls && !server.starts_with("http://") {
        return Err(usage("it must start with http:// or https://"));
    }
    let endpoint =
        Endpoint::from_shared(server.to_owned()).map_err(|error| usage(&error.to_string()))?;
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if !tls {
        return Ok(endpoint);
    }
    let Some(tls_ca) = tls_ca else {
        return Err(CliError::Usage(format!(
            "`{server}` is an https:// URL: pass --tls-ca PATH (or set PRESSWORK_TLS_CA) to \
             the PEM certificate of the CA that signed the control plane's certificate"
        )));
    };
    let ca_usage = |why: &str| {
        CliError::Usage(format!(
            "cannot use --tls-ca / PRESSWORK_TLS_CA `{}`: {why}",
            tls_ca.display()
        ))
    };
    let pem = std::fs::read(tls_ca).map_err(|error| ca_usage(&error.to_string()))?;
    if !pem
        .windows(CERTIFICATE_PEM_LABEL.len())
        .any(|window| window == CERTIFICATE_PEM_LABEL)
    {
        return Err(ca_usage(
            "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
    endpoint
        .tls_config(config)
        .map_err(|error| ca_usage(&crate::error::error_chain(&error)))
}

/// How a PEM certificate starts.
const CERTIFICATE_PEM_LABEL: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// A channel to the control plane at `server`. It connects on the first call, so a control
/// plane that is down surfaces as an `UNAVAILABLE` call error, explained like every other.
pub fn channel(server: &str, tls_ca: Option<&Path>) -> Result<Channel, CliError> {
    Ok(endpoint(server, tls_ca)?.connect_lazy())
}

/// A `JobService` client on `channel` that sends `credentials` with every call.
pub fn jobs_client(channel: Channel, credentials: CallCredentials) -> JobsClient {
    JobServiceClient::with_interceptor(channel, credentials)
}

/// A `ReportService` client on `channel` that sends `credentials` with every call.
pub fn reports_client(channel: Channel, credentials: CallCredentials) -> ReportsClient {
    ReportServiceClient::with_interceptor(channel, credentials)
}

/// An `AuthService` client on `channel` that sends `credentials` with every call.
pub fn auth_client(channel: Channel, credentials: CallCredentials) -> AuthClient {
    AuthServiceClient::with_interceptor(channel, credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(value: &str, source: TokenSource) -> Token {
        Token {
            value: value.to_owned(),
            source,
        }
    }

    #[test]
    fn a_token_becomes_a_bearer_authorization_header() {
        let token = token(" s3cret\n", TokenSource::Environment);
        let mut credentials = CallCredentials::from_token(Some(&token)).unwrap();
        let request = credentials.call(Request::new(())).unwrap();
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok()),
            Some("Bearer s3cret")
        );
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn no_token_sends_no_header() {
        let mut credentials = CallCredentials::from_token(None).unwrap();
        let request = credentials.call(Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn a_token_that_is_not_a_header_value_is_a_usage_error_naming_its_source() {
        for (source, named) in [
            (TokenSource::Environment, "PRESSWORK_TOKEN"),
            (TokenSource::File, "presswork login"),
        ] {
            let error =
                CallCredentials::from_token(Some(&token("abc\u{7f}def", source))).unwrap_err();
            assert!(
                matches!(&error, CliError::Usage(message) if message.contains(named)),
                "{error}"
            );
        }
    }

    #[test]
    fn server_urls_must_be_http_or_https() {
        assert!(endpoint("http://127.0.0.1:7070", None).is_ok());
        for bad in ["127.0.0.1:7070", "ftp://cp.example:7070", "http://exa mple"] {
            let error = endpoint(bad, None).unwrap_err();
            assert!(
                matches!(&error, CliError::Usage(message) if message.contains(bad)),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn an_https_server_needs_a_readable_ca_certificate() {
        let error = endpoint("https://cp.example:7070", None).unwrap_err();
        assert!(
            matches!(&error, CliError::Usage(message) if message.contains("--tls-ca")),
            "{error}"
        );

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = endpoint("https://cp.example:7070", Some(&missing)).unwrap_err();
        assert!(
            matches!(&error, CliError::Usage(message) if message.contains("missing.pem")),
            "{error}"
        );

        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let error = endpoint("https://cp.example:7070", Some(&not_pem)).unwrap_err();
        assert!(
            matches!(&error, CliError::Usage(message) if message.contains("no PEM certificate")),
            "{error}"
        );
    }
}
