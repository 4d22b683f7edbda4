//! One run of a connector: a child process in a process group of its own, spoken to over its
//! pipes (the JSON-lines protocol of [`super::protocol`]), stopped with the cancel message and
//! SIGTERM, then SIGKILL after the grace period, and always reaped.
//!
//! Whatever way a run ends — the connector finished, failed, was cancelled, or the stage was
//! aborted (a force stop, the worker shutting down) — its process group is killed and its
//! pipes are closed: [`ConnectorRun::cancel`] and [`ConnectorRun::finish`] do it in order
//! and report what they did; dropping an unfinished run SIGKILLs the group (tokio reaps the
//! child).
//!
//! A connector dies with its worker: it is started with `PR_SET_PDEATHSIG` = SIGKILL, so a
//! worker killed with SIGKILL (which runs none of the above) leaves no connector behind. The
//! kernel sends that signal when the *thread* that forked the child exits, not the process,
//! so connectors are forked from one thread kept for the life of the worker
//! ([`spawn_tied_to_worker`]), never from a runtime's thread that may end (docs/decisions.md).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::protocol::{
    BoundedLines, CancelMessage, ConnectorMessage, MAX_MESSAGE_BYTES, StartMessage,
};

/// Longest stderr line copied (longer lines are cut).
pub const MAX_STDERR_LINE: usize = 2000;
/// Stderr lines copied per run; the rest are read and counted, not copied.
pub const MAX_STDERR_LINES: usize = 200;
/// How long writing a message to the connector's stdin may block (it must read its stdin).
const STDIN_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the copy of stderr may go on after the connector's group is gone.
const STDERR_SETTLE: Duration = Duration::from_secs(1);

/// A connector program registered on the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorProgram {
    /// The name jobs use (`source=NAME`).
    pub name: String,
    /// The executable (absolute).
    pub path: PathBuf,
}

impl ConnectorProgram {
    /// `connector `NAME``, how messages name it.
    fn label(&self) -> String {
        format!("connector `{}`", self.name)
    }

    /// An error about the connector's behaviour, with what to do about it.
    pub fn protocol_error(&self, what: &str) -> String {
        format!(
            "{} broke the connector protocol: {what}; fix the connector (see docs/pdk.md) and check it with `presswork-worker connector-check {}`",
            self.label(),
            self.path.display()
        )
    }
}

/// Where a connector's stderr lines go (the job's execution log, or the conformance kit's
/// report), at most [`MAX_STDERR_LINES`] of them.
pub type LineSink = Arc<dyn Fn(String) + Send + Sync>;

/// A live process of a connector's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub pid: i32,
    pub command: String,
}

impl fmt::Display for GroupMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.command)
    }
}

/// The live (not zombie) processes whose process group is `group`, read from `/proc`.
/// Empty where there is no `/proc`.
pub fn live_group_members(group: i32) -> Vec<GroupMember> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut members: Vec<GroupMember> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (command, state, pgrp) = parse_stat(&stat)?;
            (pgrp == group && !matches!(state, 'Z' | 'X')).then(|| GroupMember {
                pid,
                command: command.to_string(),
            })
        })
        .collect();
    members.sort_by_key(|m| m.pid);
    members
}

/// (command, state, process group) from a `/proc/<pid>/stat` line:
/// `pid (command) state ppid pgrp …` (the command may hold spaces and parentheses).
fn parse_stat(stat: &str) -> Option<(&str, char, i32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let command = stat.get(open + 1..close)?;
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let _ppid = rest.next()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some((command, state, pgrp))
}

/// How a connector run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// Its exit status (`None` if it could not be read).
    pub status: Option<ExitStatus>,
    /// After a cancel (or a connector that would not exit): from the cancel message and
    /// SIGTERM to its exit.
    pub stopped_after: Option<Duration>,
    /// It did not exit within the grace period after SIGTERM and was SIGKILLed.
    pub killed: bool,
    /// Processes of its group still alive after it exited; the worker killed them.
    pub leftovers: Vec<GroupMember>,
    /// Stderr lines read but not copied (over [`MAX_STDERR_LINES`]).
    pub stderr_dropped: usize,
}

impl Ending {
    /// Exited by itself with status 0.
    pub fn succeeded(&self) -> bool {
        !self.killed && self.status.is_some_and(|s| s.success())
    }

    /// What happened, for the job log: "exited with status 0", "killed (SIGKILL) …".
    pub fn describe(&self, grace: Duration) -> String {
        let mut text = if self.killed {
            format!(
                "did not stop within the {} ms grace after SIGTERM: killed (SIGKILL)",
                grace.as_millis()
            )
        } else {
            let status = match self.status {
                Some(status) => describe_status(status),
                None => "exited (status unknown)".to_string(),
            };
            match self.stopped_after {
                Some(after) => format!("{status} {} ms after SIGTERM", after.as_millis()),
                None => status,
            }
        };
        if !self.leftovers.is_empty() {
            let list: Vec<String> = self.leftovers.iter().map(ToString::to_string).collect();
            text.push_str(&format!(
                "; it left {} process(es) in its process group, killed by the worker: {}",
                self.leftovers.len(),
                list.join(", ")
            ));
        }
        if self.stderr_dropped > 0 {
            text.push_str(&format!(
                "; {} more stderr line(s) were not copied (at most {MAX_STDERR_LINES} per run)",
                self.stderr_dropped
            ));
        }
        text
    }
}

/// "exited with status 3", "killed by signal 9 (SIGKILL)".
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(name) => format!("killed by signal {signal} ({name})"),
            Err(_) => format!("killed by signal {signal}"),
        },
        (None, None) => format!("ended ({status})"),
    }
}

/// A running connector. See the module documentation.
pub struct ConnectorRun {
    program: ConnectorProgram,
    child: Child,
    group: Pid,
    stdin: Option<ChildStdin>,
    stdout: BoundedLines<ChildStdout>,
    stderr_copy: Option<AbortOnDropHandle<usize>>,
    lines_read: u64,
    /// Protocol errors quote the bad line and the parser's reason (the conformance kit);
    /// otherwise they go to the worker's log only, as the line may hold a row's values and a
    /// job's error is shown to every viewer.
    quote_bad_lines: bool,
    /// The group was killed and the child reaped: nothing left for `drop`.
    ended: bool,
}

/// A command to start, the runtime its child belongs to, and where to send the child.
type SpawnRequest = (
    tokio::process::Command,
    tokio::runtime::Handle,
    tokio::sync::oneshot::Sender<std::io::Result<Child>>,
);

/// Starts `command` with `PR_SET_PDEATHSIG` = SIGKILL, from the worker's spawner thread: a
/// thread started at the first call that lives as long as the process, so the signal fires
/// when the worker dies, not when some thread exits. The child belongs to the caller's runtime
/// (which reaps it).
async fn spawn_tied_to_worker(mut command: tokio::process::Command) -> std::io::Result<Child> {
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<SpawnRequest>>> =
        std::sync::OnceLock::new();
    let worker = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: prctl(2) and getppid(2) are system calls, and it
    // allocates nothing (the error is a raw OS error).
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))?;
            // The worker died between the fork and the prctl: the signal will never come.
            if nix::unistd::getppid() != worker {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = std::sync::mpsc::channel::<SpawnRequest>();
        let started = std::thread::Builder::new()
            .name("presswork-connector-spawner".into())
            .spawn(move || {
                for (mut command, runtime, reply) in incoming {
                    let _entered = runtime.enter();
                    let _ = reply.send(command.spawn());
                }
            });
        if let Err(error) = started {
            tracing::error!(%error, "cannot start the connector spawner thread; connectors cannot run");
        }
        std::sync::Mutex::new(requests)
    });
    let (reply, child) = tokio::sync::oneshot::channel();
    let sent = match spawner.lock() {
        Ok(requests) => requests.send((command, tokio::runtime::Handle::current(), reply)),
        Err(poisoned) => {
            poisoned
                .into_inner()
                .send((command, tokio::runtime::Handle::current(), reply))
        }
    };
    if sent.is_err() {
        return Err(std::io::Error::other(
            "the worker's connector spawner thread is gone (see the worker's log)",
        ));
    }
    child.await.map_err(|_| {
        std::io::Error::other("the worker's connector spawner thread stopped while starting it")
    })?
}

impl ConnectorRun {
    /// Quotes a bad stdout line and why it is refused in protocol errors (for the conformance
    /// kit, whose report goes to the connector's developer, not to a job's viewers).
    pub fn quoting_bad_lines(mut self) -> Self {
        self.quote_bad_lines = true;
        self
    }

    /// Starts `program` in a new process group, in `start.work_dir`, without the worker's
    /// `PRESSWORK_*` environment (its credential), and writes `start` to its stdin. Its
    /// stderr lines go to `stderr`.
    pub async fn start(
        program: &ConnectorProgram,
        start: &StartMessage,
        stderr: LineSink,
    ) -> Result<ConnectorRun, String> {
        let mut command = tokio::process::Command::new(&program.path);
        command
            .process_group(0)
            .kill_on_drop(true)
            .current_dir(&start.work_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PRESSWORK_") {
                command.env_remove(name);
            }
        }
        let mut child = spawn_tied_to_worker(command).await.map_err(|e| {
            format!(
                "cannot start {} ({}): {e}; check that the file exists, is executable (chmod +x) and that its interpreter (#! line) is installed",
                program.label(),
                program.path.display()
            )
        })?;
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| {
                format!(
                    "{} ended before its process id could be read",
                    program.label()
                )
            })?;
        let (Some(stdin), Some(stdout), Some(stderr_pipe)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            unreachable!("all three pipes were requested");
        };
        let mut run = ConnectorRun {
            program: program.clone(),
            child,
            group: Pid::from_raw(pid),
            stdin: Some(stdin),
            stdout: BoundedLines::new(stdout, MAX_MESSAGE_BYTES).cut_at_limit(),
            stderr_copy: Some(AbortOnDropHandle::new(tokio::spawn(copy_stderr(
                stderr_pipe,
                stderr,
            )))),
            lines_read: 0,
            quote_bad_lines: false,
            ended: false,
        };
        let line = serde_json::to_string(start).expect("a start message serialises");
        run.write_line(&line).await?;
        Ok(run)
    }

    /// The connector's process id, which is also its process group id.
    pub fn pid(&self) -> i32 {
        self.group.as_raw()
    }

    pub fn program(&self) -> &ConnectorProgram {
        &self.program
    }

    /// Writes one line to the connector's stdin. A connector that already closed its stdin
    /// (or exited) is not an error here: its exit status tells the story.
    async fn write_line(&mut self, line: &str) -> Result<(), String> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Ok(());
        };
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        let write = async {
            stdin.write_all(&bytes).await?;
            stdin.flush().await
        };
        match tokio::time::timeout(STDIN_WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                self.stdin = None;
                Ok(())
            }
            Ok(Err(error)) => Err(format!(
                "cannot write to the stdin of {}: {error}",
                self.program.label()
            )),
            Err(_) => Err(self.program.protocol_error(&format!(
                "it did not read its stdin for {} s",
                STDIN_WRITE_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The next message on the connector's stdout; `None` once it closed stdout (it exited).
    /// Blank lines are skipped. Cancel-safe.
    pub async fn next_message(&mut self) -> Result<Option<ConnectorMessage>, String> {
        loop {
            let line =
                self.stdout.next_line().await.map_err(|e| {
                    format!("cannot read the stdout of {}: {e}", self.program.label())
                })?;
            let Some(line) = line else {
                return Ok(None);
            };
            self.lines_read += 1;
            if line.truncated {
                return Err(self.program.protocol_error(&format!(
                    "line {} of its stdout is longer than {} bytes; send rows in smaller batches",
                    self.lines_read, MAX_MESSAGE_BYTES
                )));
            }
            if line.bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return ConnectorMessage::parse(&line.bytes).map(Some).map_err(|e| {
                let why = if self.quote_bad_lines {
                    format!(" ({e})")
                } else {
                    tracing::warn!(connector = %self.program.name, line = self.lines_read, reason = %e, "a connector's stdout line is not a protocol message");
                    String::new()
                };
                self.program.protocol_error(&format!(
                    "line {} of its stdout is not a protocol message{why}",
                    self.lines_read
                ))
            });
        }
    }

    /// Cancels the run: writes the cancel message and closes stdin, sends SIGTERM to the
    /// process group, waits up to `grace` for the connector to exit (reading and dropping its
    /// output, so it cannot block on a full pipe), SIGKILLs the group if it did not, reaps it,
    /// and kills whatever is left in its group.
    pub async fn cancel(mut self, reason: &str, grace: Duration) -> Ending {
        let message = serde_json::to_string(&CancelMessage::new(reason))
            .expect("a cancel message serialises");
        let at = Instant::now();
        // Bounded by its own timeout; SIGTERM follows either way.
        let _ = tokio::time::timeout(Duration::from_millis(100), self.write_line(&message)).await;
        self.stdin = None;
        self.terminate(at, grace).await
    }

    /// Ends a run whose connector said `done` or `error`, or closed its stdout: closes its
    /// stdin and waits up to `grace` for it to exit (then SIGTERM and, after another `grace`,
    /// SIGKILL), reaps it, and kills whatever is left in its group.
    pub async fn finish(mut self, grace: Duration) -> Ending {
        self.stdin = None;
        match self.wait_exit(grace).await {
            Some(status) => self.settle(Some(status), None, false).await,
            None => self.terminate(Instant::now(), grace).await,
        }
    }

    /// SIGTERM to the group, then SIGKILL after `grace`; `since` is when the stop began.
    async fn terminate(mut self, since: Instant, grace: Duration) -> Ending {
        let _ = killpg(self.group, Signal::SIGTERM);
        match self.wait_exit(grace).await {
            Some(status) => {
                let after = since.elapsed();
                self.settle(Some(status), Some(after), false).await
            }
            None => {
                let _ = killpg(self.group, Signal::SIGKILL);
                let status = self.child.wait().await.ok();
                self.settle(status, None, true).await
            }
        }
    }

    /// Waits up to `limit` for the connector to exit, reading and dropping its stdout.
    async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let mut stdout_open = true;
        loop {
            tokio::select! {
                status = self.child.wait() => return status.ok(),
                line = self.stdout.next_line(), if stdout_open => {
                    stdout_open = matches!(line, Ok(Some(_)));
                }
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// After the connector exited and was reaped: kills what is left of its group and lets
    /// the stderr copy finish.
    async fn settle(
        mut self,
        status: Option<ExitStatus>,
        stopped_after: Option<Duration>,
        killed: bool,
    ) -> Ending {
        let leftovers = live_group_members(self.group.as_raw());
        // Also reaches members /proc could not show; ESRCH when the group is empty.
        let _ = killpg(self.group, Signal::SIGKILL);
        self.ended = true;
        let stderr_dropped = match self.stderr_copy.take() {
            Some(copy) => tokio::time::timeout(STDERR_SETTLE, copy)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0),
            None => 0,
        };
        Ending {
            status,
            stopped_after,
            killed,
            leftovers,
            stderr_dropped,
        }
    }
}

impl Drop for ConnectorRun {
    fn drop(&mut self) {
        if !self.ended {
            // Aborted (force stop, shutdown) or an early return: nothing of the group may
            // outlive the run. `kill_on_drop` has tokio reap the child.
            let _ = killpg(self.group, Signal::SIGKILL);
        }
    }
}

/// Copies stderr lines to `sink` (at most [`MAX_STDERR_LINES`], each cut to
/// [`MAX_STDERR_LINE`] bytes) and keeps reading the rest, so the connector never blocks on
/// it. Returns how many lines were not copied.
async fn copy_stderr(stderr: ChildStderr, sink: LineSink) -> usize {
    let mut lines = BoundedLines::new(stderr, MAX_STDERR_LINE);
    let mut copied = 0;
    let mut dropped = 0;
    while let Ok(Some(line)) = lines.next_line().await {
        if copied < MAX_STDERR_LINES {
            let mut text = String::from_utf8_lossy(&line.bytes).into_owned();
            if line.truncated {
                text.push_str(" […]");
            }
            sink(text);
            copied += 1;
        } else {
            dropped += 1;
        }
    }
    dropped
}

/// Whether `path` is a regular file someone may execute.
pub fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;

    use crate::plugin::protocol::{PROTOCOL_VERSION, StartTag};

    /// Waits (up to 10 s) until nothing is left in `group`: a SIGKILLed process is gone only
    /// once the kernel has run its exit, a moment after the signal was sent.
    async fn assert_group_empties(group: i32) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = live_group_members(group);
            if left.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "processes left in group {group}: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A connector written as a shell script in `dir`.
    fn script(dir: &Path, name: &str, body: &str) -> ConnectorProgram {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        ConnectorProgram {
            name: name.to_string(),
            path,
        }
    }

    fn start_message(work_dir: &Path) -> StartMessage {
        StartMessage {
            kind: StartTag::Start,
            protocol: PROTOCOL_VERSION,
            connector: "test".into(),
            stage: "ingest".into(),
            job_id: "job-1".into(),
            attempt: 1,
            params: BTreeMap::new(),
            work_dir: work_dir.display().to_string(),
        }
    }

    /// Starts `program` in `dir`, its stderr dropped.
    async fn start(program: &ConnectorProgram, dir: &Path) -> ConnectorRun {
        let (sink, _) = collecting();
        ConnectorRun::start(program, &start_message(dir), sink)
            .await
            .expect("starts")
    }

    fn collecting() -> (LineSink, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let lines = lines.clone();
            Arc::new(move |line: String| lines.lock().expect("lock").push(line)) as LineSink
        };
        (sink, lines)
    }

    #[test]
    fn stat_lines_with_odd_commands_parse() {
        assert_eq!(
            parse_stat("42 (my (odd) cmd) S 1 40 40 0 -1"),
            Some(("my (odd) cmd", 'S', 40))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[tokio::test]
    async fn a_run_reads_messages_and_copies_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = script(
            dir.path(),
            "echoes",
            r#"read start
echo "got: $start" >&2
echo '{"type":"rows","rows":[{"a":1}]}'
echo
echo '{"type":"done"}'"#,
        );
        let (sink, stderr) = collecting();
        let mut run = ConnectorRun::start(&program, &start_message(dir.path()), sink)
            .await
            .expect("starts");
        let mut kinds = Vec::new();
        while let Some(message) = run.next_message().await.expect("valid") {
            kinds.push(message.kind());
        }
        assert_eq!(kinds, ["rows", "done"]);
        let ending = run.finish(Duration::from_secs(5)).await;
        assert!(ending.succeeded(), "{ending:?}");
        assert_eq!(ending.describe(Duration::ZERO), "exited with status 0");
        let stderr = stderr.lock().expect("lock").clone();
        assert_eq!(stderr.len(), 1, "{stderr:?}");
        assert!(
            stderr[0].starts_with(r#"got: {"type":"start","protocol":1"#),
            "{stderr:?}"
        );
    }

    #[tokio::test]
    async fn garbage_on_stdout_is_a_protocol_error_naming_the_connector() {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = script(dir.path(), "noisy", "echo 'Starting up...'; sleep 5");
        let mut run = start(&program, dir.path()).await;
        let group = run.pid();
        let error = run.next_message().await.expect_err("garbage");
        assert!(error.starts_with("connector `noisy` broke the connector protocol: line 1 of its stdout is not a protocol message"), "{error}");
        assert!(
            !error.contains("Starting up"),
            "the line (it may hold a row's values) is not quoted: {error}"
        );
        assert!(error.contains("connector-check"), "{error}");
        let ending = run.cancel("protocol error", Duration::from_secs(5)).await;
        assert!(!ending.killed, "{ending:?}");
        assert_group_empties(group).await;
    }

    #[tokio::test]
    async fn a_connector_that_ignores_sigterm_is_killed_after_the_grace_with_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Ignores SIGTERM and leaves a grandchild (sleep) in its group.
        let program = script(
            dir.path(),
            "stubborn",
            r#"trap '' TERM
sleep 300 &
echo '{"type":"progress","fraction":0.1}'
while :; do sleep 1; done"#,
        );
        let mut run = start(&program, dir.path()).await;
        let group = run.pid();
        assert_eq!(
            run.next_message().await.expect("valid"),
            Some(ConnectorMessage::Progress { fraction: 0.1 })
        );
        assert!(
            live_group_members(group).len() >= 2,
            "the script and its sleep run"
        );
        let ending = run.cancel("test", Duration::from_millis(300)).await;
        assert!(ending.killed, "{ending:?}");
        assert!(
            ending.describe(Duration::from_millis(300)).starts_with(
                "did not stop within the 300 ms grace after SIGTERM: killed (SIGKILL)"
            ),
            "{ending:?}"
        );
        assert_group_empties(group).await;
    }

    #[tokio::test]
    async fn leftovers_after_a_clean_exit_are_named_and_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = script(
            dir.path(),
            "leaves-a-child",
            r#"sleep 300 &
echo '{"type":"done"}'"#,
        );
        let mut run = start(&program, dir.path()).await;
        let group = run.pid();
        assert_eq!(
            run.next_message().await.expect("valid"),
            Some(ConnectorMessage::Done)
        );
        let ending = run.finish(Duration::from_secs(5)).await;
        assert!(ending.succeeded(), "{ending:?}");
        // The backgrounded `sleep` (its command may still read as the script's until exec).
        assert_eq!(ending.leftovers.len(), 1, "{ending:?}");
        assert!(
            ending
                .describe(Duration::ZERO)
                .contains("it left 1 process(es) in its process group, killed by the worker"),
            "{ending:?}"
        );
        assert_group_empties(group).await;
    }

    #[tokio::test]
    async fn dropping_a_run_kills_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = script(
            dir.path(),
            "forever",
            r#"trap '' TERM
sleep 300 &
echo '{"type":"progress","fraction":0.5}'
wait"#,
        );
        let mut run = start(&program, dir.path()).await;
        let group = run.pid();
        run.next_message().await.expect("valid");
        drop(run);
        // SIGKILL is delivered asynchronously: wait (bounded) until the group is gone.
        let gone = async {
            while !live_group_members(group).is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("the group is killed when the run is dropped");
    }

    #[tokio::test]
    async fn a_missing_program_says_what_to_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = ConnectorProgram {
            name: "ghost".into(),
            path: dir.path().join("ghost"),
        };
        let (sink, _) = collecting();
        let error = ConnectorRun::start(&program, &start_message(dir.path()), sink)
            .await
            .err()
            .expect("cannot start");
        assert!(
            error.starts_with("cannot start connector `ghost`"),
            "{error}"
        );
        assert!(error.contains("is executable"), "{error}");
    }

    #[test]
    fn exit_statuses_read_well() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_status(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
    }
}
