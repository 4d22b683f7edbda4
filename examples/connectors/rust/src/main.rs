//! An example Presswork source connector in Rust (docs/pdk.md).
//!
//! Sends `rows` (default 1000) generated sales rows in batches of `batch` (default 100), with
//! `delay_ms` (default 0) between batches, as JSON lines on stdout, then `done`.
//!
//! Cancellation, as the contract asks: one [`CancellationToken`] is fired by a
//! `{"type":"cancel"}` line on stdin, by the end of stdin (the worker is gone) and by SIGTERM.
//! Every wait is a `select!` on it and it is checked between batches, so the connector stops
//! within milliseconds. Its files are cleaned up by `Drop` however `main` returns.
//!
//! Try it: `presswork-worker connector-check target/debug/presswork-example-connector --param rows=5000 --param delay_ms=10`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A file in the work directory, removed when dropped: a stand-in for the temporary files a
/// real connector makes (a download, a spool).
struct Checkpoint(PathBuf);

impl Drop for Checkpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let start: Value = match stdin.next_line().await {
        Ok(Some(line)) => serde_json::from_str(&line).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    if start["type"] != "start" {
        eprintln!(
            "expected a start message on stdin; run me from a Presswork worker or connector-check"
        );
        return ExitCode::from(2);
    }

    let cancel = CancellationToken::new();
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(error) => {
            eprintln!("cannot listen for SIGTERM: {error}");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            loop {
                tokio::select! {
                    _ = terminate.recv() => break,
                    line = stdin.next_line() => match line {
                        Ok(Some(line)) if line.contains("\"cancel\"") => break,
                        Ok(Some(_)) => continue,
                        _ => break, // end of stdin: the worker is gone
                    },
                }
            }
            cancel.cancel();
        }
    });

    let param = |name: &str, default: u64| -> Result<u64, String> {
        match start["params"][name].as_str() {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("parameter {name} is `{text}`; use a whole number")),
        }
    };
    let (total, batch, delay) = match (
        param("rows", 1000),
        param("batch", 100),
        param("delay_ms", 0),
    ) {
        (Ok(total), Ok(batch), Ok(delay)) => (total, batch.max(1), Duration::from_millis(delay)),
        (Err(problem), _, _) | (_, Err(problem), _) | (_, _, Err(problem)) => {
            let _ = send(&json!({"type": "error", "message": problem})).await;
            return ExitCode::FAILURE;
        }
    };
    let work_dir = PathBuf::from(start["work_dir"].as_str().unwrap_or("."));
    let checkpoint = Checkpoint(work_dir.join("checkpoint.json"));

    let regions = ["North", "South", "East", "West", "Central"];
    let products = ["Widget", "Gadget", "Gizmo"];
    let mut sent = 0u64;
    while sent < total {
        if cancel.is_cancelled() {
            eprintln!("cancelled after {sent} rows; cleaned up");
            return ExitCode::SUCCESS; // `checkpoint` is removed on the way out
        }
        let rows: Vec<Value> = (sent..total.min(sent + batch))
            .map(|i| {
                json!({
                    "region": regions[(i % 5) as usize],
                    "product": products[(i % 3) as usize],
                    "quarter": format!("Q{}", i % 4 + 1),
                    "amount": 10.0 + (i * 37 % 990) as f64,
                })
            })
            .collect();
        sent += rows.len() as u64;
        let progress = sent as f64 / total as f64;
        if send(&json!({"type": "rows", "rows": rows})).await.is_err()
            || send(&json!({"type": "progress", "fraction": progress}))
                .await
                .is_err()
        {
            return ExitCode::SUCCESS; // the worker stopped reading: it is stopping us anyway
        }
        let _ = std::fs::write(&checkpoint.0, format!("{{\"sent\":{sent}}}"));
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
    let _ = send(&json!({"type": "done"})).await;
    ExitCode::SUCCESS
}

/// Writes one protocol message (one line) and flushes it.
async fn send(message: &Value) -> std::io::Result<()> {
    let mut line = message.to_string();
    line.push('\n');
    let mut stdout = tokio::io::stdout();
    stdout.write_all(line.as_bytes()).await?;
    stdout.flush().await
}
