//! The `presswork` command-line client of the Presswork control plane.
//!
//! `main` parses the command line and calls [`run`]; signing in and out lives in
//! [`account`] (with the stored token in [`token`]), the job commands in [`jobs`], the
//! rendering for people and for machines in [`output`], and the exit-code mapping in
//! [`error`].

pub mod account;
pub mod client;
pub mod error;
pub mod health;
pub mod jobs;
pub mod output;
pub mod reports;
pub mod resume;
pub mod token;

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

use crate::account::{AccountCommand, Environment};
use crate::client::CallCredentials;
use crate::error::CliError;
use crate::jobs::{Context, JobsCommand};
use crate::resume::ReconnectPolicy;

/// The control plane address used when neither --server nor PRESSWORK_SERVER is set.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// The `presswork` command line.
#[derive(Debug, Parser)]
#[command(
    name = "presswork",
    version,
    about = "Submit, watch and cancel Presswork report jobs.",
    long_about = "Submit, watch and cancel Presswork report jobs.\n\n\
        Talks gRPC to a Presswork control plane. Sign in first with `presswork login \
        --username <name>`. Output is for people unless --json is given; errors go to \
        stderr with what happened and what to do.",
    after_help = "Run `presswork --help` for exit codes and environment variables.",
    after_long_help = error::EXIT_CODES_HELP
)]
pub struct Cli {
    /// The control plane URL (http:// or https://).
    #[arg(long, global = true, env = "PRESSWORK_SERVER", value_name = "URL",
          default_value = DEFAULT_SERVER)]
    pub server: String,
    /// The PEM certificate of the CA that signed the control plane's certificate; needed
    /// for an https:// server.
    #[arg(long, global = true, env = "PRESSWORK_TLS_CA", value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Machine output: JSON objects (one per line for watch and log) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// `login`, `logout`, `whoami`.
    #[command(flatten)]
    Account(AccountCommand),
    /// Work with report jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Manage report configurations (JSON documents; changes need an administrator).
    #[command(subcommand)]
    Reports(reports::ReportsCommand),
    /// Asks the server's gRPC health service whether it serves (no sign-in needed). Prints
    /// SERVING and exits 0, or exits 5 when it does not serve or cannot be reached; for
    /// container health checks.
    Health {
        /// The service to ask about, e.g. presswork.v1.JobService; empty: the server as a
        /// whole.
        #[arg(long, default_value = "")]
        service: String,
    },
}

/// Runs a parsed command line. `env` holds the token sources and standard input; results
/// go to `out`, notes to `err`.
pub async fn run<'a>(
    cli: Cli,
    env: Environment<'a>,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
) -> Result<(), CliError> {
    let command = match cli.command {
        Command::Account(command) => {
            let mut ctx = account::Context {
                server: cli.server,
                tls_ca: cli.tls_ca,
                json: cli.json,
                env,
                out,
                err,
            };
            return account::run(command, &mut ctx).await;
        }
        Command::Jobs(command) => command,
        Command::Health { service } => {
            return health::run(&cli.server, cli.tls_ca.as_deref(), &service, cli.json, out).await;
        }
        Command::Reports(command) => {
            let credentials = CallCredentials::from_token(env.token()?.as_ref())?;
            let channel = client::channel(&cli.server, cli.tls_ca.as_deref())?;
            let mut ctx = reports::Context {
                client: client::reports_client(channel, credentials),
                server: cli.server,
                json: cli.json,
                stdin: env.stdin,
                out,
            };
            return reports::run(command, &mut ctx).await;
        }
    };
    let credentials = CallCredentials::from_token(env.token()?.as_ref())?;
    let channel = client::channel(&cli.server, cli.tls_ca.as_deref())?;
    let mut ctx = Context {
        client: client::jobs_client(channel, credentials),
        server: cli.server,
        json: cli.json,
        reconnect: ReconnectPolicy::default(),
        out,
        err,
    };
    jobs::run(command, &mut ctx).await
}

/// Writes `value` as pretty-printed JSON and a line break (the `--json` output of a
/// command that prints one object).
pub(crate) fn write_json(out: &mut dyn Write, value: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::from)?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// The current time in Unix epoch milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
