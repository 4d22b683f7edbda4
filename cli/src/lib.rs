//! The `presswork` command-line client of the Presswork control plane.
//!
//! `main` parses the command line and calls [`run`]; the commands live in [`jobs`], the
//! rendering for people and for machines in [`output`], and the exit-code mapping in
//! [`error`].

pub mod client;
pub mod error;
pub mod jobs;
pub mod output;
pub mod resume;

use std::io::Write;

use clap::{Parser, Subcommand};

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
        Talks gRPC to a Presswork control plane. Output is for people unless --json is \
        given; errors go to stderr with what happened and what to do.",
    after_help = "Run `presswork --help` for exit codes and environment variables.",
    after_long_help = error::EXIT_CODES_HELP
)]
pub struct Cli {
    /// The control plane URL.
    #[arg(long, global = true, env = "PRESSWORK_SERVER", value_name = "URL",
          default_value = DEFAULT_SERVER)]
    pub server: String,
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
    /// Work with report jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
}

/// Runs a parsed command line. `token` is the `PRESSWORK_TOKEN` value, if set; results go
/// to `out`, notes to `err`.
pub async fn run(
    cli: Cli,
    token: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let credentials = CallCredentials::from_token(token)?;
    let client = client::jobs_client(&cli.server, credentials)?;
    let mut ctx = Context {
        client,
        server: cli.server,
        json: cli.json,
        reconnect: ReconnectPolicy::default(),
        out,
        err,
    };
    match cli.command {
        Command::Jobs(command) => jobs::run(command, &mut ctx).await,
    }
}
