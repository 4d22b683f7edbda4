//! The conformance kit (`presswork-worker connector-check PATH`): runs a connector the way a
//! worker does and reports, rule by rule, whether it honours the plug-in contract of
//! docs/pdk.md.
//!
//! Two runs, each in a fresh work directory:
//! 1. the *complete* run: to the end, which must be `done` and exit status 0;
//! 2. the *cancel* run: cancelled (cancel message and SIGTERM at once, as a worker does) as
//!    soon as the first batch of rows arrives; it must exit within [`STOP_LIMIT`].
//!
//! After each run its process group must be empty and its work directory too.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::process::{ConnectorProgram, ConnectorRun, Ending, LineSink};
use super::protocol::{ConnectorMessage, PROTOCOL_VERSION, StartMessage, StartTag};

/// A connector must exit within this long of the cancel message or SIGTERM.
pub const STOP_LIMIT: Duration = Duration::from_secs(1);

/// What to check and how patiently.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub program: PathBuf,
    /// Given to the connector as a job's `source.KEY=VALUE` parameters are.
    pub params: BTreeMap<String, String>,
    /// How long after SIGTERM the kit waits before SIGKILL (a rule fails well before).
    pub grace: Duration,
    /// How long the complete run, and the wait for the first rows of the cancel run, may take.
    pub timeout: Duration,
}

/// The rules of the contract the kit checks, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Every stdout line is a protocol message.
    Protocol,
    /// A run ends with `done` and exit status 0.
    Completes,
    /// Cancelled, it exits within [`STOP_LIMIT`].
    StopsOnCancel,
    /// Nothing is left in its process group when it exits.
    NoProcessesLeft,
    /// Its work directory is empty when it exits.
    NoFilesLeft,
}

impl Rule {
    pub const ALL: [Rule; 5] = [
        Rule::Protocol,
        Rule::Completes,
        Rule::StopsOnCancel,
        Rule::NoProcessesLeft,
        Rule::NoFilesLeft,
    ];

    /// The rule's name in the report.
    pub fn id(self) -> &'static str {
        match self {
            Rule::Protocol => "protocol",
            Rule::Completes => "completes",
            Rule::StopsOnCancel => "stops-on-cancel",
            Rule::NoProcessesLeft => "no-processes-left",
            Rule::NoFilesLeft => "no-files-left",
        }
    }
}

/// One rule's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub rule: Rule,
    pub passed: bool,
    /// What was seen, and for a failure what to do.
    pub detail: String,
}

/// Every rule's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub program: PathBuf,
    pub verdicts: Vec<Verdict>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.passed)
    }

    pub fn verdict(&self, rule: Rule) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.rule == rule)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "connector-check {}", self.program.display())?;
        for verdict in &self.verdicts {
            let mark = if verdict.passed { "PASS" } else { "FAIL" };
            writeln!(f, "  {mark} {}: {}", verdict.rule.id(), verdict.detail)?;
        }
        let failed = self.verdicts.iter().filter(|v| !v.passed).count();
        if failed == 0 {
            write!(f, "result: PASS ({} rules)", self.verdicts.len())
        } else {
            write!(
                f,
                "result: FAIL ({failed} of {} rules failed; the rules are in docs/pdk.md)",
                self.verdicts.len()
            )
        }
    }
}

/// How reading a run's messages ended.
#[derive(Debug, Clone, PartialEq)]
enum RunEnd {
    Done,
    Reported(String),
    /// Stdout closed without `done`.
    Closed,
    Broken(String),
    TimedOut,
    /// The cancel run: the first rows arrived (and the kit cancelled).
    FirstRows,
}

/// What one run showed.
struct RunRecord {
    end: RunEnd,
    rows: usize,
    messages: usize,
    ending: Ending,
    files_left: Vec<String>,
}

/// Runs both runs and judges every rule. `stderr` receives the connector's stderr lines.
pub async fn check(options: &CheckOptions, stderr: LineSink) -> CheckReport {
    let program = ConnectorProgram {
        name: options
            .program
            .file_stem()
            .map_or("connector".into(), |stem| {
                stem.to_string_lossy().into_owned()
            }),
        path: std::path::absolute(&options.program).unwrap_or(options.program.clone()),
    };
    let report = |verdicts| CheckReport {
        program: options.program.clone(),
        verdicts,
    };
    let complete = match run_once(&program, options, false, prefixed(&stderr, "complete")).await {
        Ok(record) => record,
        Err(problem) => return report(cannot_start(&problem)),
    };
    let cancel = match run_once(&program, options, true, prefixed(&stderr, "cancel")).await {
        Ok(record) => record,
        Err(problem) => return report(cannot_start(&problem)),
    };
    report(judge(&complete, &cancel, options.grace))
}

fn prefixed(sink: &LineSink, run: &'static str) -> LineSink {
    let sink = sink.clone();
    Arc::new(move |line| sink(format!("[{run} run] {line}")))
}

fn cannot_start(problem: &str) -> Vec<Verdict> {
    Rule::ALL
        .into_iter()
        .map(|rule| Verdict {
            rule,
            passed: false,
            detail: format!("not checked: {problem}"),
        })
        .collect()
}

/// One run in a fresh work directory; `cancel`: cancel at the first rows.
async fn run_once(
    program: &ConnectorProgram,
    options: &CheckOptions,
    cancel: bool,
    stderr: LineSink,
) -> Result<RunRecord, String> {
    let work = tempfile::Builder::new()
        .prefix("presswork-connector-check-")
        .tempdir()
        .map_err(|e| format!("cannot create a work directory: {e}; check TMPDIR"))?;
    let start = StartMessage {
        kind: StartTag::Start,
        protocol: PROTOCOL_VERSION,
        connector: program.name.clone(),
        stage: "ingest".into(),
        job_id: format!(
            "connector-check-{}",
            if cancel { "cancel" } else { "complete" }
        ),
        attempt: 1,
        params: options.params.clone(),
        work_dir: work.path().display().to_string(),
    };
    let mut run = ConnectorRun::start(program, &start, stderr)
        .await?
        .quoting_bad_lines();
    let mut rows = 0;
    let mut messages = 0;
    let reading = async {
        loop {
            match run.next_message().await {
                Ok(Some(message)) => {
                    messages += 1;
                    match message {
                        ConnectorMessage::Rows { rows: batch } => {
                            rows += batch.len();
                            if cancel {
                                return RunEnd::FirstRows;
                            }
                        }
                        ConnectorMessage::Done => return RunEnd::Done,
                        ConnectorMessage::Error { message } => return RunEnd::Reported(message),
                        ConnectorMessage::Progress { .. } | ConnectorMessage::Log { .. } => {}
                    }
                }
                Ok(None) => return RunEnd::Closed,
                Err(problem) => return RunEnd::Broken(problem),
            }
        }
    };
    let end = tokio::time::timeout(options.timeout, reading)
        .await
        .unwrap_or(RunEnd::TimedOut);
    let ending = match end {
        RunEnd::FirstRows => run.cancel("connector-check", options.grace).await,
        RunEnd::Broken(_) | RunEnd::TimedOut => {
            run.cancel("connector-check: giving up", options.grace)
                .await
        }
        RunEnd::Done | RunEnd::Reported(_) | RunEnd::Closed => run.finish(options.grace).await,
    };
    let files_left = files_under(work.path());
    Ok(RunRecord {
        end,
        rows,
        messages,
        ending,
        files_left,
    })
}

/// Every path under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            found.push(
                path.strip_prefix(dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
            );
            if path.is_dir() {
                pending.push(path);
            }
        }
    }
    found.sort();
    found
}

fn judge(complete: &RunRecord, cancel: &RunRecord, grace: Duration) -> Vec<Verdict> {
    let verdict = |rule, passed, detail: String| Verdict {
        rule,
        passed,
        detail,
    };
    let broken: Vec<&str> = [complete, cancel]
        .iter()
        .filter_map(|run| match &run.end {
            RunEnd::Broken(problem) => Some(problem.as_str()),
            _ => None,
        })
        .collect();
    let protocol = match broken.first() {
        None => verdict(
            Rule::Protocol,
            true,
            format!(
                "{} messages over both runs, all valid",
                complete.messages + cancel.messages
            ),
        ),
        Some(problem) => verdict(Rule::Protocol, false, problem.to_string()),
    };

    let completes = match &complete.end {
        RunEnd::Done if complete.ending.succeeded() => verdict(
            Rule::Completes,
            true,
            format!(
                "sent {} rows and done, then {}",
                complete.rows,
                complete.ending.describe(grace)
            ),
        ),
        RunEnd::Done => verdict(
            Rule::Completes,
            false,
            format!(
                "it sent done, then {}; exit with status 0 after done",
                complete.ending.describe(grace)
            ),
        ),
        RunEnd::Reported(message) => verdict(
            Rule::Completes,
            false,
            format!(
                "it reported an error: {message}; give it what it needs with --param KEY=VALUE"
            ),
        ),
        RunEnd::Closed => verdict(
            Rule::Completes,
            false,
            format!(
                "it {} without sending done; send {{\"type\":\"done\"}} after the last rows",
                complete.ending.describe(grace)
            ),
        ),
        RunEnd::Broken(_) => verdict(
            Rule::Completes,
            false,
            "not reached: it broke the protocol (see protocol)".into(),
        ),
        RunEnd::TimedOut | RunEnd::FirstRows => verdict(
            Rule::Completes,
            false,
            "it did not finish in time; pass parameters that make a full run short, or raise --timeout-secs".into(),
        ),
    };

    let limit_ms = STOP_LIMIT.as_millis();
    let stops = match (&cancel.end, cancel.ending.killed, cancel.ending.stopped_after) {
        (RunEnd::FirstRows, true, _) => verdict(
            Rule::StopsOnCancel,
            false,
            format!(
                "it {}; stop within {limit_ms} ms of the cancel message or SIGTERM, whichever comes first",
                cancel.ending.describe(grace)
            ),
        ),
        (RunEnd::FirstRows, false, Some(after)) if after <= STOP_LIMIT => verdict(
            Rule::StopsOnCancel,
            true,
            format!(
                "exited {} ms after the cancel message and SIGTERM (limit {limit_ms} ms)",
                after.as_millis()
            ),
        ),
        (RunEnd::FirstRows, false, Some(after)) => verdict(
            Rule::StopsOnCancel,
            false,
            format!(
                "exited {} ms after the cancel message and SIGTERM, over the {limit_ms} ms limit; check for the cancel between batches and in every wait",
                after.as_millis()
            ),
        ),
        (RunEnd::Broken(_), _, _) => verdict(
            Rule::StopsOnCancel,
            false,
            "not reached: it broke the protocol (see protocol)".into(),
        ),
        (RunEnd::TimedOut, _, _) => verdict(
            Rule::StopsOnCancel,
            false,
            "not checked: it sent no rows in time to be cancelled; raise --timeout-secs".into(),
        ),
        _ => verdict(
            Rule::StopsOnCancel,
            false,
            "not checked: it ended before sending its first rows; pass parameters that make it send rows for longer (e.g. --param rows=100000)".into(),
        ),
    };

    let leftovers: Vec<String> = [("complete", complete), ("cancelled", cancel)]
        .iter()
        .filter(|(_, run)| !run.ending.leftovers.is_empty())
        .map(|(name, run)| {
            let list: Vec<String> = run
                .ending
                .leftovers
                .iter()
                .map(ToString::to_string)
                .collect();
            format!("after the {name} run: {}", list.join(", "))
        })
        .collect();
    let processes = if leftovers.is_empty() {
        verdict(
            Rule::NoProcessesLeft,
            true,
            "its process group was empty when it exited, after both runs".into(),
        )
    } else {
        verdict(
            Rule::NoProcessesLeft,
            false,
            format!(
                "processes still running in its process group when it exited ({}); stop and wait for every process you start before exiting, also when cancelled",
                leftovers.join("; ")
            ),
        )
    };

    let files: Vec<String> = [("complete", complete), ("cancelled", cancel)]
        .iter()
        .filter(|(_, run)| !run.files_left.is_empty())
        .map(|(name, run)| format!("after the {name} run: {}", run.files_left.join(", ")))
        .collect();
    let no_files = if files.is_empty() {
        verdict(
            Rule::NoFilesLeft,
            true,
            "its work directory was empty when it exited, after both runs".into(),
        )
    } else {
        verdict(
            Rule::NoFilesLeft,
            false,
            format!(
                "files left in its work directory ({}); delete what you create before exiting, also when cancelled",
                files.join("; ")
            ),
        )
    };
    vec![protocol, completes, stops, processes, no_files]
}
