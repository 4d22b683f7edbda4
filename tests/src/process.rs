//! One child process of a test cluster: where its binary is, how it is started with its output
//! captured in a file, and how it is stopped. Every process is killed and reaped on drop.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The path of a workspace binary built beside the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
///
/// Panics with the command to run when the binary is missing: `cargo test` does not build the
/// binaries of other packages.
pub fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "binary {name} not found at {}: run `cargo build --workspace --bins` first (scripts/test does it)",
        path.display()
    );
    path
}

/// A running child process whose stdout and stderr are appended to `log_path`.
pub struct Process {
    name: String,
    child: Child,
    log_path: PathBuf,
}

impl Process {
    /// Starts `program` with stdout and stderr appended to `log_path`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log_path: &Path) -> Self {
        let log = open_log(name, log_path);
        let stderr = log.try_clone().expect("clone the log file handle");
        let child = command(program, args)
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Self {
            name: name.to_owned(),
            child,
            log_path: log_path.to_owned(),
        }
    }

    /// Starts `program` with stderr appended to `log_path` and stdout handed back, so the caller
    /// can read what the process announces there (see [`forward_stdout`]).
    pub fn spawn_reading_stdout(
        name: &str,
        program: &Path,
        args: &[String],
        log_path: &Path,
    ) -> (Self, ChildStdout) {
        let log = open_log(name, log_path);
        let mut child = command(program, args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        let stdout = child.stdout.take().expect("stdout was piped");
        let process = Self {
            name: name.to_owned(),
            child,
            log_path: log_path.to_owned(),
        };
        (process, stdout)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"))
    }

    /// The exit status, if the process has already ended (it is then reaped).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends a signal to the process (SIGSTOP / SIGCONT to freeze and thaw it).
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal)
            .unwrap_or_else(|e| panic!("cannot send {signal} to {}: {e}", self.name));
    }

    /// SIGKILL, then reap. Safe to call on a process that already ended.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last `lines` lines of the process's log file.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command with only the given arguments as configuration: `PRESSWORK_*` variables of the
/// environment running the tests would otherwise change the processes under test.
fn command(program: &Path, args: &[String]) -> Command {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PRESSWORK_") {
            command.env_remove(name);
        }
    }
    command
}

fn open_log(name: &str, log_path: &Path) -> File {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
    let _ = writeln!(log, "===== {name} starting =====");
    log
}

/// Copies a child's stdout into `log_path` on a thread of its own, until the child closes it,
/// and sends the first line that starts with `announcement` through `announced`.
pub fn forward_stdout(
    stdout: ChildStdout,
    log_path: &Path,
    announcement: &'static str,
    announced: tokio::sync::oneshot::Sender<String>,
) {
    let mut log = OpenOptions::new()
        .append(true)
        .open(log_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
    std::thread::spawn(move || {
        let mut announced = Some(announced);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "[stdout] {line}");
            if line.starts_with(announcement)
                && let Some(sender) = announced.take()
            {
                let _ = sender.send(line);
            }
        }
    });
}

/// The last `lines` lines of a log file, or a note that it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::binary_path;

    #[test]
    #[should_panic(expected = "run `cargo build --workspace --bins` first (scripts/test does it)")]
    fn a_missing_binary_names_the_command_that_builds_it() {
        binary_path("presswork-no-such-binary");
    }
}
