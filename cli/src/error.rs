//! What can go wrong in a command, what the user is told, and the process exit code.
//!
//! Every gRPC status code is mapped explicitly (no catch-all), so a new code the control
//! plane starts sending is a decision made here, not a surprise.

use std::fmt;
use std::io;

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
    /// Not logged in, or the account may not do this.
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
  2  usage error (bad flag or value, bad --server URL or PRESSWORK_TOKEN)
  3  not found (no such job)
  4  failed precondition (e.g. the job is not in a cancellable state)
  5  control plane unavailable (not running or not reachable at --server)
  6  permission denied or not authenticated
  7  invalid argument (the control plane rejected a value)

Environment:
  PRESSWORK_SERVER  control plane URL, as --server (default http://127.0.0.1:7070)
  PRESSWORK_TOKEN   bearer token sent as `authorization: Bearer <token>` on every call";

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
    let mut detail = status.message().to_owned();
    let mut source = std::error::Error::source(status);
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
    if detail.is_empty() {
        "no detail given".to_owned()
    } else {
        detail
    }
}

/// A call to the control plane that failed, with what is needed to explain it.
#[derive(Debug)]
pub struct RpcError {
    /// The status the call ended with.
    pub status: Status,
    /// The control plane URL the call went to.
    pub server: String,
    /// The job the call was about, if any.
    pub job_id: Option<String>,
}

impl RpcError {
    /// What happened and what to do about it, for people.
    pub fn describe(&self) -> String {
        let detail = status_detail(&self.status);
        let server = &self.server;
        let job = self.job_id.as_deref();
        match self.status.code() {
            Code::Unavailable => format!(
                "cannot reach the control plane at {server}: {detail}. Is it running? \
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
                "permission denied: {detail}. Log in with an administrator account and set \
                 PRESSWORK_TOKEN to its token."
            ),
            Code::Unauthenticated => format!(
                "not authenticated: {detail}. Log in with an administrator account and set \
                 PRESSWORK_TOKEN to its token."
            ),
            Code::InvalidArgument | Code::OutOfRange => {
                format!("the control plane rejected the request: {detail}")
            }
            Code::DeadlineExceeded => format!(
                "the control plane at {server} did not answer in time: {detail}. Try again."
            ),
            Code::ResourceExhausted => format!(
                "the control plane at {server} is overloaded or a limit was reached: {detail}. \
                 Try again later."
            ),
            Code::Unimplemented => format!(
                "the control plane at {server} does not support this call ({detail}); \
                 it may be older than this CLI."
            ),
            Code::Cancelled | Code::Aborted => {
                format!("the call was interrupted: {detail}. Try again.")
            }
            Code::AlreadyExists => format!("already exists: {detail}"),
            Code::Unknown | Code::Internal | Code::DataLoss => {
                format!("the control plane at {server} failed: {detail}. Check its logs.")
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
}

impl CliError {
    /// A failed call to `server`, about `job_id` if given.
    pub fn rpc(status: Status, server: &str, job_id: Option<&str>) -> Self {
        CliError::Rpc(Box::new(RpcError {
            status,
            server: server.to_owned(),
            job_id: job_id.map(str::to_owned),
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
            CliError::Output(_) => ExitCode::Generic,
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
    fn permission_errors_say_to_log_in_as_administrator() {
        for status in [
            Status::permission_denied("only administrators may cancel jobs"),
            Status::unauthenticated("missing token"),
        ] {
            let error = CliError::rpc(status, SERVER, Some("job-9"));
            assert!(
                error
                    .to_string()
                    .contains("Log in with an administrator account"),
                "{error}"
            );
            assert_eq!(error.exit_code() as u8, 6);
        }
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
