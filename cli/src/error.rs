//! What can go wrong in a command, what the user is told, and the process exit code.
//!
//! Every gRPC status code is mapped explicitly (no catch-all), so a new code the control
//! plane starts sending is a decision made here, not a surprise.

use std::fmt;
use std::io;
use std::path::PathBuf;

use tonic::{Code, Status};

/// The documented process exit codes of `presswork`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// The command did what was asked.
    Success = 0,
    /// Anything not covered below: an internal server error, an unexpected answer, an
    /// output that could not be written.
    Generic = 1,
    /// The command line or environment is wrong (clap uses 2 for its own usage errors).
    Usage = 2,
    /// The job (or other thing named) does not exist.
    NotFound = 3,
    /// The job is not in a state that allows this, e.g. cancelling a finished job.
    FailedPrecondition = 4,
    /// The control plane could not be reached.
    Unavailable = 5,
    /// Not signed in (or wrong username or password), or the account may not do this.
    PermissionDenied = 6,
    /// The control plane rejected a value of the request.
    InvalidArgument = 7,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// The exit-code section of `presswork --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other error (internal server error, unexpected answer, output not writable)
  2  usage error (bad flag or value, bad --server URL, --tls-ca or PRESSWORK_TOKEN)
  3  not found (no such job)
  4  failed precondition (e.g. the job is not in a cancellable state)
  5  control plane unavailable (not running or not reachable at --server)
  6  permission denied or not authenticated (wrong username or password, no or
     expired token, a role that may not do this)
  7  invalid argument (the control plane rejected a value)

Environment:
  PRESSWORK_SERVER  control plane URL, as --server (default http://127.0.0.1:7070)
  PRESSWORK_TLS_CA  CA certificate (PEM) for an https:// server, as --tls-ca
  PRESSWORK_TOKEN   bearer token sent as `authorization: Bearer <token>` on every call;
                    when set and not empty it is used instead of the token that
                    `presswork login` stored in <config dir>/presswork/token";

/// The exit code for a gRPC status code. Exhaustive on purpose: no `_ =>`.
pub fn exit_code_for(code: Code) -> ExitCode {
    match code {
        Code::Ok => ExitCode::Success,
        Code::NotFound => ExitCode::NotFound,
        Code::FailedPrecondition => ExitCode::FailedPrecondition,
        Code::Unavailable => ExitCode::Unavailable,
        Code::PermissionDenied | Code::Unauthenticated => ExitCode::PermissionDenied,
        Code::InvalidArgument | Code::OutOfRange => ExitCode::InvalidArgument,
        Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::AlreadyExists
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss => ExitCode::Generic,
    }
}

/// The status message followed by its underlying causes (e.g. "tcp connect error:
/// Connection refused (os error 111)"), each only once.
pub fn status_detail(status: &Status) -> String {
    let detail = with_causes(
        status.message().to_owned(),
        std::error::Error::source(status),
    );
    if detail.is_empty() {
        "no detail given".to_owned()
    } else {
        detail
    }
}

/// An error's message followed by its underlying causes, each only once.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    with_causes(error.to_string(), error.source())
}

fn with_causes(mut detail: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !detail.contains(&text) {
            if detail.is_empty() {
                detail = text;
            } else {
                detail = format!("{detail}: {text}");
            }
        }
        source = cause.source();
    }
    detail
}

/// What a failed call was about, for its message.
#[derive(Debug)]
pub enum CallSubject {
    /// Nothing in particular (listing, watching, asking who am I).
    None,
    /// A job, by id.
    Job(String),
    /// Signing in as a user (`presswork login`).
    SignIn {
        /// The username given.
        username: String,
    },
}

/// A call to the control plane that failed, with what is needed to explain it.
#[derive(Debug)]
pub struct RpcError {
    /// The status the call ended with.
    pub status: Status,
    /// The control plane URL the call went to.
    pub server: String,
    /// What the call was about.
    pub subject: CallSubject,
}

/// How to get a token, said wherever one is missing or no longer good.
const SIGN_IN_HINT: &str = "Sign in with `presswork login --username <name>` \
    (or set PRESSWORK_TOKEN to a token).";

impl RpcError {
    /// What happened and what to do about it, for people.
    pub fn describe(&self) -> String {
        let detail = status_detail(&self.status);
        // The detail followed by more sentences: without its own full stop.
        let clause = detail.trim_end_matches('.');
        let server = &self.server;
        let job = match &self.subject {
            CallSubject::Job(id) => Some(id.as_str()),
            CallSubject::None | CallSubject::SignIn { .. } => None,
        };
        if let CallSubject::SignIn { username } = &self.subject {
            match self.status.code() {
                Code::Unauthenticated => {
                    return format!(
                        "wrong username or password for `{username}` at {server} (or the \
                         account is disabled). Check them and try again, or ask an \
                         administrator."
                    );
                }
                // Too many attempts: the control plane says how long to wait.
                Code::ResourceExhausted => return detail,
                _ => {}
            }
        }
        match self.status.code() {
            // rustls says "invalid peer certificate: UnknownIssuer", "…: NotValidForName", …
            Code::Unavailable
                if server.starts_with("https://") && detail.contains("certificate") =>
            {
                format!(
                    "cannot trust the control plane at {server}: {clause}. Check that --tls-ca / \
                     PRESSWORK_TLS_CA is the CA that signed its certificate, and that the \
                     certificate names the host in --server."
                )
            }
            Code::Unavailable => format!(
                "cannot reach the control plane at {server}: {clause}. Is it running? \
                 Start it with `presswork-control-plane` or set --server / PRESSWORK_SERVER."
            ),
            Code::NotFound => match job {
                Some(id) => format!(
                    "job {id} not found at {server}. Check the id with `presswork jobs list`."
                ),
                None => format!("not found: {detail}"),
            },
            Code::FailedPrecondition => match job {
                Some(id) => format!("job {id}: {detail}"),
                None => detail,
            },
            Code::PermissionDenied => format!(
                "permission denied: {clause}. `presswork whoami` shows who you are signed in \
                 as; sign in as a user whose role allows this with `presswork login --username \
                 <name>`."
            ),
            Code::Unauthenticated => format!("not authenticated: {clause}. {SIGN_IN_HINT}"),
            Code::InvalidArgument | Code::OutOfRange => {
                format!("the control plane rejected the request: {detail}")
            }
            Code::DeadlineExceeded => format!(
                "the control plane at {server} did not answer in time: {clause}. Try again."
            ),
            Code::ResourceExhausted => format!(
                "the control plane at {server} is overloaded or a limit was reached: {clause}. \
                 Try again later."
            ),
            Code::Unimplemented => format!(
                "the control plane at {server} does not support this call ({detail}); \
                 it may be older than this CLI."
            ),
            Code::Cancelled | Code::Aborted => {
                format!("the call was interrupted: {clause}. Try again.")
            }
            Code::AlreadyExists => format!("already exists: {detail}"),
            Code::Unknown | Code::Internal | Code::DataLoss => {
                format!("the control plane at {server} failed: {clause}. Check its logs.")
            }
            Code::Ok => format!("the control plane answered OK with an error: {detail}"),
        }
    }
}

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// The control plane answered with an error status (or could not be reached).
    Rpc(Box<RpcError>),
    /// The command line or environment cannot be used as given.
    Usage(String),
    /// Writing the output failed (a closed pipe is not reported: see [`CliError::is_quiet`]).
    Output(io::Error),
    /// The file that holds the token of `presswork login` could not be read or written.
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What was being done: "read", "write", "remove", ...
        action: &'static str,
        /// Why it failed.
        error: io::Error,
    },
}

impl CliError {
    /// A failed call to `server`, about `job_id` if given.
    pub fn rpc(status: Status, server: &str, job_id: Option<&str>) -> Self {
        let subject = match job_id {
            Some(id) => CallSubject::Job(id.to_owned()),
            None => CallSubject::None,
        };
        Self::call_failed(status, server, subject)
    }

    /// A failed call to `server`, about `subject`.
    pub fn call_failed(status: Status, server: &str, subject: CallSubject) -> Self {
        CliError::Rpc(Box::new(RpcError {
            status,
            server: server.to_owned(),
            subject,
        }))
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Rpc(error) => exit_code_for(error.status.code()),
            CliError::Usage(_) => ExitCode::Usage,
            CliError::Output(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                ExitCode::Success
            }
            CliError::Output(_) | CliError::TokenFile { .. } => ExitCode::Generic,
        }
    }

    /// True when nothing should be printed: the reader of our output went away
    /// (`presswork jobs watch | head`), which is how such a pipeline normally ends.
    pub fn is_quiet(&self) -> bool {
        matches!(self, CliError::Output(error) if error.kind() == io::ErrorKind::BrokenPipe)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Rpc(error) => f.write_str(&error.describe()),
            CliError::Usage(message) => f.write_str(message),
            CliError::Output(error) => write!(f, "cannot write the output: {error}"),
            CliError::TokenFile {
                path,
                action,
                error,
            } => write!(
                f,
                "cannot {action} the token file {}: {error}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for CliError {}

impl From<io::Error> for CliError {
    fn from(error: io::Error) -> Self {
        CliError::Output(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "http://127.0.0.1:7070";

    #[test]
    fn exit_codes_follow_the_documented_table() {
        assert_eq!(exit_code_for(Code::NotFound) as u8, 3);
        assert_eq!(exit_code_for(Code::FailedPrecondition) as u8, 4);
        assert_eq!(exit_code_for(Code::Unavailable) as u8, 5);
        assert_eq!(exit_code_for(Code::PermissionDenied) as u8, 6);
        assert_eq!(exit_code_for(Code::Unauthenticated) as u8, 6);
        assert_eq!(exit_code_for(Code::InvalidArgument) as u8, 7);
        assert_eq!(exit_code_for(Code::Internal) as u8, 1);
        assert_eq!(exit_code_for(Code::Unknown) as u8, 1);
        assert_eq!(
            CliError::Usage("bad".to_owned()).exit_code(),
            ExitCode::Usage
        );
        assert_eq!(ExitCode::Usage as u8, 2);
    }

    #[test]
    fn help_documents_every_exit_code() {
        for code in 0..=7 {
            assert!(
                EXIT_CODES_HELP.contains(&format!("\n  {code}  ")),
                "exit code {code} is not documented"
            );
        }
    }

    #[test]
    fn unavailable_says_where_and_what_to_do() {
        let error = CliError::rpc(Status::unavailable("tcp connect error"), SERVER, None);
        assert_eq!(
            error.to_string(),
            "cannot reach the control plane at http://127.0.0.1:7070: tcp connect error. \
             Is it running? Start it with `presswork-control-plane` or set --server / \
             PRESSWORK_SERVER."
        );
        assert_eq!(error.exit_code(), ExitCode::Unavailable);
    }

    #[test]
    fn an_untrusted_certificate_points_at_the_ca() {
        let status = Status::unavailable("invalid peer certificate: UnknownIssuer");
        let error = CliError::rpc(status, "https://cp.example:7070", None);
        assert!(
            error
                .to_string()
                .starts_with("cannot trust the control plane at https://cp.example:7070"),
            "{error}"
        );
        assert!(error.to_string().contains("--tls-ca"), "{error}");
        assert_eq!(error.exit_code(), ExitCode::Unavailable);
    }

    #[test]
    fn not_found_names_the_job() {
        let error = CliError::rpc(Status::not_found("no such job"), SERVER, Some("job-9"));
        assert!(
            error
                .to_string()
                .starts_with("job job-9 not found at http://127.0.0.1:7070."),
            "{error}"
        );
        assert_eq!(error.exit_code() as u8, 3);
    }

    #[test]
    fn failed_precondition_passes_the_server_message_on() {
        let error = CliError::rpc(
            Status::failed_precondition("Job is not in a cancellable state."),
            SERVER,
            Some("job-9"),
        );
        assert_eq!(
            error.to_string(),
            "job job-9: Job is not in a cancellable state."
        );
        assert_eq!(error.exit_code() as u8, 4);
    }

    #[test]
    fn permission_errors_say_how_to_sign_in() {
        for status in [
            Status::permission_denied("only administrators may cancel jobs"),
            Status::unauthenticated("missing token"),
        ] {
            let error = CliError::rpc(status, SERVER, Some("job-9"));
            assert!(
                error
                    .to_string()
                    .contains("presswork login --username <name>"),
                "{error}"
            );
            assert_eq!(error.exit_code() as u8, 6);
        }
        let error = CliError::rpc(
            Status::unauthenticated("the token has expired"),
            SERVER,
            None,
        );
        assert_eq!(
            error.to_string(),
            "not authenticated: the token has expired. Sign in with `presswork login \
             --username <name>` (or set PRESSWORK_TOKEN to a token)."
        );
    }

    #[test]
    fn a_server_message_ending_a_sentence_is_not_followed_by_a_second_full_stop() {
        let status = Status::permission_denied("Only administrators may cancel jobs.");
        let error = CliError::rpc(status, SERVER, Some("job-9"));
        assert!(
            error
                .to_string()
                .starts_with("permission denied: Only administrators may cancel jobs. `"),
            "{error}"
        );
    }

    #[test]
    fn a_refused_sign_in_says_wrong_username_or_password() {
        let sign_in = || CallSubject::SignIn {
            username: "ada".to_owned(),
        };
        let error = CliError::call_failed(
            Status::unauthenticated("wrong username or password"),
            SERVER,
            sign_in(),
        );
        assert!(
            error
                .to_string()
                .starts_with("wrong username or password for `ada`"),
            "{error}"
        );
        assert_eq!(error.exit_code(), ExitCode::PermissionDenied);

        let error = CliError::call_failed(
            Status::resource_exhausted("too many sign-in attempts: wait a minute"),
            SERVER,
            sign_in(),
        );
        assert_eq!(
            error.to_string(),
            "too many sign-in attempts: wait a minute"
        );
        assert_eq!(exit_code_for(Code::ResourceExhausted), ExitCode::Generic);
        assert_eq!(error.exit_code(), ExitCode::Generic);
    }

    #[test]
    fn a_closed_pipe_is_quiet_and_successful() {
        let error = CliError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(error.is_quiet());
        assert_eq!(error.exit_code(), ExitCode::Success);
        let error = CliError::from(io::Error::other("disk full"));
        assert!(!error.is_quiet());
        assert_eq!(error.exit_code(), ExitCode::Generic);
    }

    #[test]
    fn status_detail_includes_causes_once() {
        let status = Status::from_error(Box::new(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        )));
        assert!(
            status_detail(&status).contains("Connection refused (os error 111)"),
            "{}",
            status_detail(&status)
        );
        assert_eq!(status_detail(&Status::internal("")), "no detail given");
    }
}
