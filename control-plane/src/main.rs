//! `presswork-control-plane`: parse flags, init tracing, bind, and run the library.

use clap::Parser;
use presswork_control_plane::{Config, run};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Some(presswork_control_plane::config::Command::Users(users)) = config.command.clone() {
        return presswork_control_plane::admin::run_users(&config.database, users).await;
    }
    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {}: {e}. Is another control plane running? Pick another address with --listen.", config.listen)
    })?;
    let address = listener.local_addr()?;
    // Exactly one line on stdout, for people and for scripts that start us on port 0.
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    println!("presswork-control-plane listening on {scheme}://{address}");

    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        on_signal.cancel();
    });
    run(config, listener, shutdown).await
}
