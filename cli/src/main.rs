//! `presswork`: parse the command line, run the command, turn its error into a message on
//! stderr and a documented exit code (see `presswork --help`).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use presswork_cli::Cli;
use presswork_cli::account::Environment;
use presswork_cli::token::TokenFile;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Read once here. Empty counts as unset; a value that is not text is refused later
    // (as any token that cannot be sent in a header).
    let token = std::env::var_os("PRESSWORK_TOKEN").map(|raw| raw.to_string_lossy().into_owned());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdin = std::io::stdin().lock();
    let env = Environment {
        token: token.as_deref(),
        token_file: TokenFile::in_config_dir(dirs::config_dir()),
        stdin: &mut stdin,
    };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    let result = runtime.block_on(presswork_cli::run(cli, env, &mut out, &mut err));
    let flushed = out.flush();
    match result.and(flushed.map_err(Into::into)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if !error.is_quiet() {
                let _ = writeln!(err, "error: {error}");
            }
            error.exit_code().into()
        }
    }
}
