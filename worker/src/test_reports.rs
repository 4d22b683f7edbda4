//! Test-only workloads for benchmarks and race tests (`bench/`, `tests/`), run only by a worker
//! started with `--enable-test-reports`. Each one runs in a single stage (ingest) instead of
//! the report pipeline, and keeps a *timeline* of its own: when its code started and when it
//! actually stopped, read on `CLOCK_MONOTONIC`, written to `<output dir>/<job id>-<attempt>.timeline`
//! before the stage returns. The timeline is outside the system under test: the worker and the
//! control plane never read it, so a benchmark can compare what the system reported with what
//! the job really did.
//!
//! Timeline lines are `<event> <monotonic ns> [detail]`:
//! `started`, `child <ns> <pid>` (busy), `term` / `killed` (busy: the child was sent SIGTERM /
//! SIGKILL), `fired` (coop: when the job's token fired, as the worker recorded it), then
//! exactly one of `finished` (the work completed) or `stopped` (the job saw its token, or was
//! force-stopped, and its code ended).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::Pid;

use crate::stages::{StageContext, StageError};

/// The longest any test workload may be told to run.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// What a test report does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Nothing: succeeds at once without starting a stage (no timeline).
    Noop,
    /// Holds its slot until its token fires (a cancel releases it) or `hold` passes.
    Blocker { hold: Duration },
    /// Spins the CPU for `check_every`, then checks its token; succeeds after `max`.
    Coop {
        check_every: Duration,
        max: Duration,
    },
    /// Runs a child process that spins and ignores SIGTERM. With `grace`, a cancel sends
    /// SIGTERM to its process group and SIGKILL after `grace`; without, the stage ignores its
    /// token and only a force stop (which kills the group) ends it before `max`.
    Busy {
        grace: Option<Duration>,
        max: Duration,
    },
    /// Waits `work` for something (an await that watches its token), then succeeds.
    Short { work: Duration },
}

impl Workload {
    /// Whether the workload runs a stage (and keeps a timeline).
    pub fn has_stage(self) -> bool {
        self != Workload::Noop
    }
}

/// Nanoseconds on `CLOCK_MONOTONIC`, comparable across processes of one host.
pub fn monotonic_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(now) => {
            u64::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(now.tv_nsec()).unwrap_or(0)
        }
        Err(_) => 0,
    }
}

/// Where the timeline of `job_id`'s `attempt` is written.
pub fn timeline_path(output_dir: &Path, job_id: &str, attempt: u32) -> PathBuf {
    output_dir.join(format!("{job_id}-{attempt}.timeline"))
}

/// Appends lines to a job's timeline. Writes are small and synchronous, so a line is on disk
/// before the stage goes on (and before it returns).
#[derive(Debug, Clone)]
struct Timeline {
    path: PathBuf,
}

impl Timeline {
    fn record(&self, event: &str, at_ns: u64, detail: &str) -> Result<(), StageError> {
        let line = if detail.is_empty() {
            format!("{event} {at_ns}\n")
        } else {
            format!("{event} {at_ns} {detail}\n")
        };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .map_err(|e| {
                StageError::Failed(format!(
                    "cannot write the timeline {}: {e}; check --output-dir",
                    self.path.display()
                ))
            })
    }

    fn now(&self, event: &str) -> Result<(), StageError> {
        self.record(event, monotonic_ns(), "")
    }

    /// Records how the stage ended (`finished` or `stopped`) and passes the result on.
    fn end(&self, result: Result<(), StageError>) -> Result<PathBuf, StageError> {
        self.end_at(result, monotonic_ns())
    }

    /// As [`Timeline::end`], for an end read on the clock at `at`.
    fn end_at(&self, result: Result<(), StageError>, at: u64) -> Result<PathBuf, StageError> {
        let event = match &result {
            Ok(()) => "finished",
            Err(StageError::Cancelled) => "stopped",
            Err(StageError::Failed(_)) => "failed",
        };
        self.record(event, at, "")?;
        result.map(|()| self.path.clone())
    }
}

/// Runs `workload` as the stage of `ctx`, keeping its timeline in `output_dir`. Returns the
/// timeline's path as the job's output.
pub async fn run(
    ctx: &StageContext,
    workload: Workload,
    output_dir: &Path,
) -> Result<PathBuf, StageError> {
    let timeline = Timeline {
        path: timeline_path(output_dir, ctx.job_id(), ctx.attempt()),
    };
    timeline.now("started")?;
    match workload {
        Workload::Noop => timeline.end(Ok(())),
        Workload::Blocker { hold } => timeline.end(ctx.cancellable(tokio::time::sleep(hold)).await),
        Workload::Short { work } => timeline.end(ctx.cancellable(tokio::time::sleep(work)).await),
        Workload::Coop { check_every, max } => {
            let token = ctx.token().clone();
            let cancelled_for = ctx.cancel_clock();
            // The end is written on the spinning thread itself, the moment it sees the token,
            // after when the token fired (read from the job's control block, on this clock).
            tokio::task::spawn_blocking(move || {
                let result = spin_checking(check_every, max, || token.is_cancelled());
                let at = monotonic_ns();
                if let Some(since) = cancelled_for() {
                    // Read after `since`, so that the difference is never before the firing.
                    let now = monotonic_ns();
                    let since = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
                    timeline.record("fired", now.saturating_sub(since), "")?;
                }
                timeline.end_at(result, at)
            })
            .await
            .unwrap_or_else(|e| {
                Err(StageError::Failed(format!(
                    "the spinning thread ended abnormally: {e}"
                )))
            })
        }
        Workload::Busy { grace, max } => {
            let result = busy(ctx, &timeline, grace, max).await;
            timeline.end(result)
        }
    }
}

/// Spins for `check_every` at a time and then asks `cancelled`, until `max` has passed.
fn spin_checking(
    check_every: Duration,
    max: Duration,
    cancelled: impl Fn() -> bool,
) -> Result<(), StageError> {
    let started = Instant::now();
    loop {
        let chunk = Instant::now();
        while chunk.elapsed() < check_every {
            std::hint::spin_loop();
        }
        if cancelled() {
            return Err(StageError::Cancelled);
        }
        if started.elapsed() >= max {
            return Ok(());
        }
    }
}

/// The child of `busy`: spins, ignores SIGTERM, and gives up by itself a little after `max`
/// so that nothing spins on if the worker itself is killed.
fn spinner(max: Duration) -> tokio::process::Command {
    let seconds = max.as_secs() + 2;
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(format!(
            "trap '' TERM; while (( SECONDS < {seconds} )); do :; done"
        ))
        .process_group(0)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// A child's process group, killed (SIGKILL) when dropped: a force stop aborts the stage and
/// drops this, so the spinning child ends with it. tokio reaps it.
struct ChildGroup {
    child: tokio::process::Child,
    group: Pid,
    timeline: Timeline,
    /// The stage has ended the child itself (or saw it end): nothing left for `drop`.
    settled: bool,
}

impl ChildGroup {
    fn signal(&mut self, signal: Signal) {
        let at = monotonic_ns();
        let _ = killpg(self.group, signal);
        if signal == Signal::SIGKILL {
            self.settled = true;
        }
        let event = if signal == Signal::SIGKILL {
            "killed"
        } else {
            "term"
        };
        let _ = self.timeline.record(event, at, "");
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        if !self.settled {
            // Aborted (force stop): the stage's code ends here, with its child.
            self.signal(Signal::SIGKILL);
            let _ = self.timeline.now("stopped");
        }
    }
}

async fn busy(
    ctx: &StageContext,
    timeline: &Timeline,
    grace: Option<Duration>,
    max: Duration,
) -> Result<(), StageError> {
    let child = spinner(max)
        .spawn()
        .map_err(|e| StageError::Failed(format!("cannot start bash for the busy child: {e}")))?;
    let pid = child.id().unwrap_or(0);
    timeline.record("child", monotonic_ns(), &pid.to_string())?;
    let mut group = ChildGroup {
        child,
        group: Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
        timeline: timeline.clone(),
        settled: false,
    };
    let Some(grace) = grace else {
        // Ignores its token on purpose: only a force stop (dropping `group`) ends it early.
        let _ = tokio::time::timeout(max, group.child.wait()).await;
        group.signal(Signal::SIGKILL);
        let _ = group.child.wait().await;
        return Ok(());
    };
    tokio::select! {
        biased;
        _ = ctx.token().cancelled() => {
            group.signal(Signal::SIGTERM);
            if tokio::time::timeout(grace, group.child.wait()).await.is_err() {
                group.signal(Signal::SIGKILL);
            }
            group.settled = true;
            let _ = group.child.wait().await;
            Err(StageError::Cancelled)
        }
        _ = tokio::time::sleep(max) => {
            group.signal(Signal::SIGKILL);
            let _ = group.child.wait().await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }

    /// The timeline of a cancelled `coop` job: when the token fired (as the worker's control
    /// block recorded it), then when the code stopped, in that order and on the same clock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_coop_job_records_when_its_token_fired_and_when_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, control, _rx) =
            crate::stages::testing::context(presswork_proto::v1::Stage::Ingest, dir.path());
        let workload = Workload::Coop {
            check_every: Duration::from_millis(5),
            max: Duration::from_secs(30),
        };
        let before = monotonic_ns();
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let fired = monotonic_ns();
            control.cancel(crate::cancel::CancelReason::ForceStopped);
            fired
        };
        let (result, fired) = tokio::join!(run(&ctx, workload, dir.path()), cancel);
        assert_eq!(result.unwrap_err(), StageError::Cancelled);
        let text = std::fs::read_to_string(timeline_path(dir.path(), "job-1", 1)).unwrap();
        let at = |event: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{event} ")))
                .unwrap_or_else(|| panic!("no {event} in {text:?}"))
                .parse()
                .unwrap()
        };
        let (recorded, stopped) = (at("fired"), at("stopped"));
        // The recorded firing is within the cancel call (read just before it) and the stop.
        assert!(
            before <= fired && fired <= recorded && recorded <= stopped,
            "cancel called at {fired}, recorded as fired at {recorded}, stopped at {stopped}"
        );
        assert!(
            recorded - fired < 1_000_000_000,
            "the firing was recorded {} ns after the cancel call",
            recorded - fired
        );
    }

    #[test]
    fn spinning_stops_at_the_first_check_after_the_cancel() {
        let checks = std::cell::Cell::new(0);
        let result = spin_checking(Duration::from_millis(1), Duration::from_secs(5), || {
            checks.set(checks.get() + 1);
            checks.get() == 3
        });
        assert_eq!(result, Err(StageError::Cancelled));
        assert_eq!(checks.get(), 3);
        let result = spin_checking(Duration::from_millis(1), Duration::from_millis(3), || false);
        assert_eq!(result, Ok(()));
    }
}
