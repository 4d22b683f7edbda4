//! `presswork login`, `logout` and `whoami`: signing in and out, and who the token in use
//! belongs to. The password is read from the terminal (or, with `--password-stdin`, from
//! the first line of standard input), never from the command line; neither it nor the
//! token is ever printed.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Subcommand};
use presswork_proto::v1::{LoginRequest, User, WhoAmIRequest};
use serde_json::{Value, json};
use tonic::Status;

use crate::client::{self, CallCredentials};
use crate::error::{CallSubject, CliError};
use crate::output;
use crate::token::{self, TokenFile, TokenSource};

/// Signing in and out.
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Sign in: asks for the password and keeps the token for the next commands.
    ///
    /// The token is stored in <config dir>/presswork/token (e.g. ~/.config/presswork/token),
    /// readable by you alone. PRESSWORK_TOKEN, when set and not empty, is sent instead.
    Login(LoginArgs),
    /// Sign out: forgets the stored token.
    ///
    /// The token itself stays valid at the control plane until it expires.
    Logout,
    /// Show who the token in use belongs to, their role and when the token expires.
    Whoami,
}

/// Arguments of `login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The account to sign in as.
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub username: String,
    /// Read the password from the first line of standard input instead of asking for it
    /// (for scripts: `presswork login --username ci --password-stdin < secret-file`).
    #[arg(long)]
    pub password_stdin: bool,
}

/// What the process around a command provides; `main` reads it once, tests pass their own.
pub struct Environment<'a> {
    /// The `PRESSWORK_TOKEN` value, if set.
    pub token: Option<&'a str>,
    /// Where `login` keeps the token; `None` when the platform names no configuration
    /// directory (no home directory).
    pub token_file: Option<TokenFile>,
    /// Where `login --password-stdin` reads the password.
    pub stdin: &'a mut dyn BufRead,
}

impl Environment<'_> {
    /// The token to send: `PRESSWORK_TOKEN`, else the stored one, else none.
    pub fn token(&self) -> Result<Option<token::Token>, CliError> {
        token::resolve(self.token, self.token_file.as_ref())
    }

    fn token_file(&self) -> Result<&TokenFile, CliError> {
        self.token_file.as_ref().ok_or_else(|| {
            CliError::Usage(
                "cannot find your configuration directory (is HOME set?) to keep the token \
                 in; set PRESSWORK_TOKEN to a token instead"
                    .to_owned(),
            )
        })
    }

    /// Whether `PRESSWORK_TOKEN` is set (and not blank), so a stored token is not used.
    fn token_overridden(&self) -> bool {
        self.token.is_some_and(|token| !token.trim().is_empty())
    }
}

/// Everything `login`, `logout` and `whoami` need.
pub struct Context<'a> {
    /// The control plane URL.
    pub server: String,
    /// The CA certificate for an `https://` server.
    pub tls_ca: Option<PathBuf>,
    /// Machine output (`--json`) instead of text for people.
    pub json: bool,
    /// The token sources and standard input.
    pub env: Environment<'a>,
    /// Where results go.
    pub out: &'a mut dyn Write,
    /// Where notes go.
    pub err: &'a mut dyn Write,
}

impl Context<'_> {
    fn auth_client(&self, credentials: CallCredentials) -> Result<client::AuthClient, CliError> {
        let channel = client::channel(&self.server, self.tls_ca.as_deref())?;
        Ok(client::auth_client(channel, credentials))
    }

    fn print_json(&mut self, value: &Value) -> Result<(), CliError> {
        crate::write_json(self.out, value)
    }

    fn note_token_override(&mut self, what: &str) -> Result<(), CliError> {
        if self.env.token_overridden() {
            writeln!(
                self.err,
                "note: PRESSWORK_TOKEN is set, and commands send it rather than {what}; \
                 unset it to use the stored token"
            )?;
        }
        Ok(())
    }
}

/// The password from the first line of `input`, without its line ending.
pub fn password_from_lines(input: &mut dyn BufRead) -> Result<String, CliError> {
    let mut line = String::new();
    input.read_line(&mut line).map_err(|error| {
        CliError::Usage(format!(
            "cannot read the password from standard input: {error}"
        ))
    })?;
    let password = line.strip_suffix('\n').map_or(line.as_str(), |line| {
        line.strip_suffix('\r').unwrap_or(line)
    });
    Ok(password.to_owned())
}

fn read_password(args: &LoginArgs, stdin: &mut dyn BufRead) -> Result<String, CliError> {
    let password = if args.password_stdin {
        password_from_lines(stdin)?
    } else {
        rpassword::prompt_password(format!("Password for {}: ", args.username)).map_err(
            |error| {
                CliError::Usage(format!(
                    "cannot ask for the password on the terminal ({error}); pass \
                     --password-stdin to read it from standard input"
                ))
            },
        )?
    };
    if password.is_empty() {
        return Err(CliError::Usage("the password is empty".to_owned()));
    }
    Ok(password)
}

/// Runs one of `login`, `logout`, `whoami`.
pub async fn run(command: AccountCommand, ctx: &mut Context<'_>) -> Result<(), CliError> {
    match command {
        AccountCommand::Login(args) => login(ctx, args).await,
        AccountCommand::Logout => logout(ctx),
        AccountCommand::Whoami => whoami(ctx).await,
    }
}

/// `presswork login`: exchanges the password for a token and stores it.
pub async fn login(ctx: &mut Context<'_>, args: LoginArgs) -> Result<(), CliError> {
    // Check everything local before the password is asked for and sent.
    let token_file = ctx.env.token_file()?.clone();
    let mut client = ctx.auth_client(CallCredentials::default())?;
    let password = read_password(&args, ctx.env.stdin)?;
    let request = LoginRequest {
        username: args.username.clone(),
        password,
    };
    let failed = |status: Status, server: &str| {
        CliError::call_failed(
            status,
            server,
            CallSubject::SignIn {
                username: args.username.clone(),
            },
        )
    };
    let response = client
        .login(request)
        .await
        .map_err(|status| failed(status, &ctx.server))?
        .into_inner();
    if response.token.is_empty() {
        return Err(failed(
            Status::internal("the response to Login has no token"),
            &ctx.server,
        ));
    }
    token_file.save(&response.token)?;
    let user = response.user.unwrap_or_else(|| User {
        username: args.username,
        ..User::default()
    });
    if ctx.json {
        ctx.print_json(&output::session_to_json(&user, response.expires_at_unix_ms))?;
    } else {
        writeln!(
            ctx.out,
            "{}",
            output::signed_in_line(&user, response.expires_at_unix_ms)
        )?;
    }
    ctx.note_token_override("this sign-in")
}

/// `presswork logout`: forgets the stored token.
pub fn logout(ctx: &mut Context<'_>) -> Result<(), CliError> {
    let token_file = ctx.env.token_file.clone();
    let removed = match &token_file {
        Some(file) => file.remove()?,
        None => false,
    };
    if ctx.json {
        ctx.print_json(&json!({
            "removed": removed,
            "token_file": token_file.map(|file| file.path().display().to_string()),
        }))?;
    } else if removed {
        writeln!(ctx.out, "signed out")?;
    } else {
        writeln!(ctx.out, "not signed in: there was no stored token")?;
    }
    ctx.note_token_override("no token")
}

/// `presswork whoami`: the user behind the token in use, their role, and the token's expiry.
pub async fn whoami(ctx: &mut Context<'_>) -> Result<(), CliError> {
    let token = ctx.env.token()?;
    let credentials = CallCredentials::from_token(token.as_ref())?;
    let response = ctx
        .auth_client(credentials)?
        .who_am_i(WhoAmIRequest {})
        .await
        .map_err(|status| CliError::rpc(status, &ctx.server, None))?
        .into_inner();
    let user = response.user.ok_or_else(|| {
        CliError::rpc(
            Status::internal("the response to WhoAmI has no user"),
            &ctx.server,
            None,
        )
    })?;
    let expires = response.token_expires_at_unix_ms;
    if ctx.json {
        return ctx.print_json(&output::session_to_json(&user, expires));
    }
    let source = match token.map(|token| token.source) {
        Some(TokenSource::Environment) => "PRESSWORK_TOKEN".to_owned(),
        Some(TokenSource::File) | None => ctx
            .env
            .token_file
            .as_ref()
            .map_or_else(String::new, |file| file.path().display().to_string()),
    };
    let lines = output::whoami_details(&user, expires, crate::now_ms(), source);
    writeln!(ctx.out, "{}", output::render_key_values(&lines))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_the_first_line_without_its_line_ending() {
        for (input, expected) in [
            ("hunter2\n", "hunter2"),
            ("hunter2\r\nsecond line\n", "hunter2"),
            ("  spaced out  \n", "  spaced out  "),
            ("no newline", "no newline"),
            ("", ""),
        ] {
            let password = password_from_lines(&mut input.as_bytes()).unwrap();
            assert_eq!(password, expected, "{input:?}");
        }
    }

    #[test]
    fn an_empty_password_is_refused_before_anything_is_sent() {
        let args = LoginArgs {
            username: "ada".to_owned(),
            password_stdin: true,
        };
        let error = read_password(&args, &mut "\n".as_bytes()).unwrap_err();
        assert!(matches!(error, CliError::Usage(_)), "{error}");
    }
}
