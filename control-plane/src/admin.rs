//! `presswork-control-plane users …`: administering users straight on the database.

use std::io::{BufRead, IsTerminal, Write};

use crate::auth::{MIN_PASSWORD_LEN, hash_password, role_from_name, role_name};
use crate::config::UsersCommand;
use crate::store::{Store, UserRecord};
use crate::time::now_ms;

/// Runs one users command against the database at `database`. Output goes to stdout; when
/// stdout is closed early (`users list | head -1`), the command ends quietly with success.
pub async fn run_users(database: &str, command: UsersCommand) -> anyhow::Result<()> {
    let store = Store::connect(database).await.map_err(|e| {
        anyhow::anyhow!("cannot open the database {}: {e}", crate::redact(database))
    })?;
    let result = users(&store, command, &mut std::io::stdout().lock()).await;
    store.close().await;
    match result {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// Whether `error` is a write to a stdout whose reader has gone.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

async fn users(store: &Store, command: UsersCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        UsersCommand::Add { username, role } => {
            validate_username(&username)?;
            let role = parse_role(&role)?;
            let password = read_password(&format!("password for {username}: "))?;
            let password_hash = hash_password(&password).map_err(anyhow::Error::msg)?;
            store
                .add_user(
                    &UserRecord {
                        username: username.clone(),
                        password_hash,
                        role,
                        disabled: false,
                        credential_version: 0,
                    },
                    now_ms(),
                )
                .await?;
            writeln!(out, "added {username} ({})", role_name(role))?;
        }
        UsersCommand::List => {
            writeln!(out, "{:<32} {:<14} status", "username", "role")?;
            for user in store.users().await? {
                let status = if user.disabled { "disabled" } else { "enabled" };
                writeln!(
                    out,
                    "{:<32} {:<14} {status}",
                    user.username,
                    role_name(user.role)
                )?;
            }
        }
        UsersCommand::SetRole { username, role } => {
            let role = parse_role(&role)?;
            store.set_user_role(&username, role).await?;
            writeln!(out, "{username} is now {}", role_name(role))?;
        }
        UsersCommand::Disable { username } => {
            store.set_user_disabled(&username, true).await?;
            writeln!(out, "{username} is disabled; their tokens no longer work")?;
        }
        UsersCommand::Enable { username } => {
            store.set_user_disabled(&username, false).await?;
            writeln!(out, "{username} is enabled")?;
        }
        UsersCommand::SetPassword { username } => {
            let password = read_password(&format!("new password for {username}: "))?;
            let password_hash = hash_password(&password).map_err(anyhow::Error::msg)?;
            store.set_user_password(&username, &password_hash).await?;
            writeln!(
                out,
                "password of {username} changed; their earlier tokens no longer work"
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

fn parse_role(role: &str) -> anyhow::Result<presswork_proto::v1::Role> {
    role_from_name(role).ok_or_else(|| {
        anyhow::anyhow!("unknown role {role:?}: use administrator, operator or viewer")
    })
}

fn validate_username(username: &str) -> anyhow::Result<()> {
    let ok = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    anyhow::ensure!(
        ok,
        "username {username:?} must be 1 to 64 letters, digits, '-', '_', '.' or '@'"
    );
    Ok(())
}

/// From a prompt on a terminal, else the first line of stdin. Never from the command line.
fn read_password(prompt: &str) -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt)?
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    anyhow::ensure!(
        password.chars().count() >= MIN_PASSWORD_LEN,
        "the password must be at least {MIN_PASSWORD_LEN} characters"
    );
    Ok(password)
}
