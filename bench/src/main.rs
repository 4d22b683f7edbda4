//! `presswork-bench`: measures the real system — the release binaries of the control plane and
//! the workers as processes on loopback, on SQLite or PostgreSQL — and prints p50, p95, p99,
//! max and n per figure, with the DESIGN.md target beside it (PASS / SHORT, printed, never
//! asserted).
//!
//! ```text
//! cargo build --release --bins
//! cargo run -p presswork-bench --release -- --database sqlite,postgres --scenario all
//! ```
//!
//! Every timestamp is `CLOCK_MONOTONIC` on this host. Running jobs are test workloads
//! (`worker/src/test_reports.rs`) that write down when their code started and stopped, so the
//! bench compares what the system reported with what the job really did. See
//! docs/benchmarks.md for the method and the figures.

mod clock;
mod cluster;
mod observer;
mod procfs;
mod report;
mod scenarios;
mod timeline;

use std::path::PathBuf;

use clap::Parser;

use crate::cluster::{Backend, Environment};
use crate::report::Report;
use crate::scenarios::Settings;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    All,
    CancelQueued,
    CancelRunning,
    /// PostgreSQL only: two control-plane replicas, the cancel sent to the one without the
    /// worker's stream.
    CancelRunningReplicas,
    Throughput,
    Watchers,
    Unresponsive,
    Consistency,
    Footprint,
}

const ORDER: [Scenario; 8] = [
    Scenario::CancelQueued,
    Scenario::CancelRunning,
    Scenario::CancelRunningReplicas,
    Scenario::Throughput,
    Scenario::Watchers,
    Scenario::Unresponsive,
    Scenario::Consistency,
    Scenario::Footprint,
];

/// Benchmarks of the Presswork control plane and workers, run as real processes on loopback.
#[derive(Debug, Parser)]
#[command(name = "presswork-bench", version, about)]
struct Flags {
    /// Store engines to run on, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite")]
    database: Vec<Backend>,
    /// Scenarios to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    scenario: Vec<Scenario>,
    /// Admin URL of PostgreSQL (a role with CREATEDB); each scenario gets a fresh database.
    #[arg(long, env = "PRESSWORK_TEST_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Where presswork-control-plane and presswork-worker are [default: beside this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the run directory (databases, process logs, job timelines).
    #[arg(long)]
    keep: bool,
    /// Also write the tables, as Markdown, to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Also write every figure, as JSON, to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Smaller sizes everywhere: a smoke run of a few seconds per scenario (CI runs it, so the
    /// harness keeps working; any run fails when a scenario cannot run or a correctness count
    /// is not zero).
    #[arg(long)]
    quick: bool,
    /// Jobs kept queued while cancels are timed.
    #[arg(long, default_value_t = 10_000)]
    queued: usize,
    /// Cancels of queued jobs timed.
    #[arg(long, default_value_t = 1_000)]
    cancels: usize,
    /// Running `coop` jobs stopped (1,000 by default: with fewer, the p99 is one of the few
    /// slowest samples and moves by a millisecond or more from run to run).
    #[arg(long, default_value_t = 1_000)]
    stops: usize,
    /// `coop` jobs cancelled at once.
    #[arg(long, default_value_t = 1)]
    stop_concurrency: usize,
    /// CPU a `coop` job spins between two looks at its token, in ms; 0 runs `blocker` jobs
    /// (an await on the token) to see the delivery alone.
    #[arg(long, default_value_t = 10)]
    check_ms: u64,
    /// No-op jobs in the throughput scenario.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Slots of each of the two workers in the throughput scenario.
    #[arg(long, default_value_t = 16)]
    capacity: u32,
    /// Concurrent WatchJobs streams.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Jobs submitted and cancelled while the watchers watch (two changes each).
    #[arg(long, default_value_t = 500)]
    watched_jobs: usize,
    /// Changes per second fed to the watchers.
    #[arg(long, default_value_t = 200.0)]
    watch_rate: f64,
    /// `busy` jobs stopped per variant.
    #[arg(long, default_value_t = 30)]
    kills: usize,
    /// SIGTERM → SIGKILL grace of the `busy` child, in ms.
    #[arg(long, default_value_t = 100)]
    grace_ms: u64,
    /// The control plane's --cancel-timeout in the force-stop variant, in seconds.
    #[arg(long, default_value_t = 0.25)]
    force_timeout: f64,
    /// Races of each kind.
    #[arg(long, default_value_t = 200)]
    races: usize,
}

impl Flags {
    fn settings(&self) -> Settings {
        let settings = Settings {
            queued: self.queued,
            cancels: self.cancels,
            stops: self.stops,
            check_ms: self.check_ms,
            jobs: self.jobs,
            capacity: self.capacity.max(1),
            watchers: self.watchers.max(1),
            watched_jobs: self.watched_jobs.max(1),
            watch_rate: self.watch_rate.max(1.0),
            kills: self.kills.max(1),
            grace_ms: self.grace_ms,
            force_timeout: self.force_timeout,
            races: self.races,
        };
        if !self.quick {
            return settings;
        }
        Settings {
            queued: settings.queued.min(1_000),
            cancels: settings.cancels.min(100),
            stops: settings.stops.min(30),
            jobs: settings.jobs.min(1_000),
            watchers: settings.watchers.min(10),
            watched_jobs: settings.watched_jobs.min(50),
            kills: settings.kills.min(5),
            races: settings.races.min(24),
            ..settings
        }
    }

    fn scenarios(&self) -> Vec<Scenario> {
        if self.scenario.contains(&Scenario::All) {
            ORDER.to_vec()
        } else {
            ORDER
                .into_iter()
                .filter(|s| self.scenario.contains(s))
                .collect()
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let bin_dir = match &flags.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    };
    Environment::check_binaries(&bin_dir)?;
    if !bin_dir.ends_with("release") {
        eprintln!(
            "warning: measuring the binaries in {}, which is not a release directory; run `cargo run -p presswork-bench --release`",
            bin_dir.display()
        );
    }
    let run_dir = tempfile::Builder::new()
        .prefix("presswork-bench-")
        .tempdir()?;
    let settings = flags.settings();
    let header = machine_header(&flags);
    print!("{header}");

    // Ctrl-C or SIGTERM ends the scenario in progress: dropping it kills the processes it
    // started (a PostgreSQL database it made may be left behind, named presswork_bench_*).
    let interrupted = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let interrupted = interrupted.clone();
        async move {
            stopped_by_signal().await;
            interrupted.cancel();
        }
    });
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    'databases: for backend in dedup(&flags.database) {
        let env = Environment {
            bin_dir: bin_dir.clone(),
            run_dir: run_dir.path().to_path_buf(),
            backend,
            postgres_url: flags.postgres_url.clone(),
        };
        for scenario in flags.scenarios() {
            let started = std::time::Instant::now();
            eprintln!("running {scenario:?} on {} ...", backend.name());
            let before = CpuSample::now(backend);
            let result = tokio::select! {
                result = run(scenario, &env, &settings, &flags) => result,
                _ = interrupted.cancelled() => {
                    failures.push(format!("{scenario:?} on {}: interrupted", backend.name()));
                    break 'databases;
                }
            };
            let others = CpuSample::others_share(&before, &CpuSample::now(backend));
            match result {
                Ok(mut done) => {
                    for report in &mut done {
                        report.database = backend.name();
                        if let Some(share) = others {
                            report.note(format!(
                                "other processes on the machine (not this benchmark{}) used {:.0} % of its CPU during the scenario",
                                if backend == Backend::Postgres { " or PostgreSQL" } else { "" },
                                share * 100.0
                            ));
                        }
                        print!("{}", report.render());
                    }
                    eprintln!("  ({:.1} s)", started.elapsed().as_secs_f64());
                    reports.extend(done);
                }
                Err(e) => {
                    eprintln!("{scenario:?} on {} failed: {e:#}", backend.name());
                    failures.push(format!("{scenario:?} on {}: {e:#}", backend.name()));
                }
            }
        }
    }
    let summary = summary(&reports, &failures);
    print!("{summary}");
    if let Some(path) = &flags.markdown {
        let mut text = header.clone();
        for report in &reports {
            text.push_str(&report.render());
        }
        text.push_str(&summary);
        std::fs::write(path, text)?;
    }
    if let Some(path) = &flags.json {
        let json = serde_json::json!({
            "header": header.trim(),
            "quick": flags.quick,
            "reports": reports.iter().map(Report::to_json).collect::<Vec<_>>(),
            "failures": failures,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    // Performance targets are reported, never asserted; a wrong outcome is a bug.
    for report in &reports {
        for row in report.rows.iter().filter(|row| row.is_violation()) {
            failures.push(format!(
                "{} on {}: {} is not 0",
                report.scenario,
                report.database,
                row.name()
            ));
        }
    }
    if flags.keep || !failures.is_empty() {
        let kept = run_dir.keep();
        eprintln!("run directory kept: {}", kept.display());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} scenario(s) could not run or reported wrong outcomes:\n  {}",
            failures.len(),
            failures.join("\n  ")
        )
    }
}

async fn run(
    scenario: Scenario,
    env: &Environment,
    settings: &Settings,
    flags: &Flags,
) -> anyhow::Result<Vec<Report>> {
    Ok(match scenario {
        Scenario::All => Vec::new(),
        Scenario::CancelQueued => vec![scenarios::cancel_queued::run(env, settings).await?],
        Scenario::CancelRunning => {
            vec![scenarios::cancel_running::run(env, settings, flags.stop_concurrency).await?]
        }
        Scenario::CancelRunningReplicas => {
            scenarios::cancel_running_replicas::run(env, settings).await?
        }
        Scenario::Throughput => vec![scenarios::throughput::run(env, settings).await?],
        Scenario::Watchers => vec![scenarios::watchers::run(env, settings).await?],
        Scenario::Unresponsive => scenarios::unresponsive::run(env, settings).await?,
        Scenario::Consistency => vec![scenarios::consistency::run(env, settings).await?],
        Scenario::Footprint => vec![scenarios::footprint::run(env, settings).await?],
    })
}

fn dedup(backends: &[Backend]) -> Vec<Backend> {
    let mut seen = Vec::new();
    for backend in backends {
        if !seen.contains(backend) {
            seen.push(*backend);
        }
    }
    seen
}

/// Every figure that has a target, in one table.
fn summary(reports: &[Report], failures: &[String]) -> String {
    let mut out = String::from("\n## Summary: figures against their targets\n\n");
    out.push_str("| scenario | database | figure | verdict |\n|---|---|---|---|\n");
    for report in reports {
        for row in &report.rows {
            let verdict = match row.verdict() {
                Some(true) => "PASS",
                Some(false) => "SHORT",
                None => continue,
            };
            out.push_str(&format!(
                "| {} | {} | {} | {verdict} |\n",
                report.scenario,
                report.database,
                row.name()
            ));
        }
    }
    for failure in failures {
        out.push_str(&format!("\n- could not run: {failure}\n"));
    }
    out
}

/// Where and what was measured: date, machine, commit, command.
fn machine_header(flags: &Flags) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_default();
    let output = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let date = output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let commit = output("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = if output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (with uncommitted changes)"
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "# presswork-bench\n\n{date} · {cores} cores · {cpu} · Linux {kernel} · commit {commit}{dirty}\nflags: {}{}\n",
        if args.is_empty() {
            "(defaults)".to_string()
        } else {
            args.join(" ")
        },
        if flags.quick { " (quick sizes)" } else { "" }
    )
}

/// CPU time of the whole machine and of the system under test — this benchmark, the
/// processes it started (counted once reaped) and, on PostgreSQL, the server's processes —
/// in clock ticks.
struct CpuSample {
    machine_total: u64,
    machine_busy: u64,
    ours: u64,
}

impl CpuSample {
    fn now(backend: Backend) -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|t| t.parse().ok())
            .collect();
        let machine_total: u64 = ticks.iter().sum();
        let idle = ticks.get(3)? + ticks.get(4)?;
        let mut ours = procfs::stat_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        if backend == Backend::Postgres {
            ours += procfs::postgres_ticks();
        }
        Some(CpuSample {
            machine_total,
            machine_busy: machine_total - idle,
            ours,
        })
    }

    /// The share of the machine's CPU that other processes used from `before` to `now`.
    fn others_share(before: &Option<Self>, now: &Option<Self>) -> Option<f64> {
        let (before, now) = (before.as_ref()?, now.as_ref()?);
        let total = now.machine_total.checked_sub(before.machine_total)?;
        let busy = now.machine_busy.checked_sub(before.machine_busy)?;
        let ours = now.ours.checked_sub(before.ours)?;
        (total > 0).then(|| busy.saturating_sub(ours) as f64 / total as f64)
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn stopped_by_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
