//! The built-in report kinds and their parameters.
//!
//! Every report runs the same pipeline over sales data (ingest → transform → generate →
//! deliver); the kinds differ in how one stage behaves, which makes them useful to watch and
//! to cancel:
//! - `demo-fast`: the pipeline over the sample data, well under a second.
//! - `demo-slow`: one stage (`slow_stage`, default ingest) spends `duration_ms` (default
//!   30000) working in 10 ms steps, watching its token and reporting progress.
//! - `demo-stuck` (test report, only with `--enable-test-reports`): one stage (`stuck_stage`,
//!   default transform) ignores its token for `stuck_ms` (default 600000); only a force stop
//!   ends it.
//!
//! The demo reports take `input=PATH` (a CSV file under the worker's `--data-dir`, refused
//! when it has none, lines of at most 1 MiB; default the bundled sample) or
//! `source=NAME` (a source connector registered on the worker, with its own parameters as
//! `source.KEY=VALUE`), and `fail_stage=STAGE` (that stage fails on request, for tests).
//!
//! Test workloads (only with `--enable-test-reports`; see [`crate::test_reports`]) skip the
//! pipeline and keep a timeline of when their code started and stopped, for benchmarks:
//! - `noop`: succeeds at once, without starting a stage.
//! - `blocker`: holds its slot until cancelled or `hold_ms` (default 60000) passes.
//! - `coop`: spins `check_ms` (default 10) of CPU, then checks its token, for up to `max_ms`
//!   (default 3000).
//! - `busy`: a child process that spins and ignores SIGTERM, for up to `max_ms` (default 3000).
//!   With `grace_ms`, a cancel sends SIGTERM to its process group and SIGKILL after the grace;
//!   without, the stage ignores its token and only a force stop ends it.
//! - `short`: 20 ms of work (`work_ms`), an await that watches its token.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use presswork_proto::v1::Stage;

use crate::plugin::Connectors;
use crate::stages::ingest::{Input, SourceConnector};
use crate::stages::{StageContext, StageError};
use crate::test_reports::{MAX_DURATION, Workload};

/// A built-in report kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    DemoFast,
    DemoSlow,
    DemoStuck,
    Noop,
    Blocker,
    Coop,
    Busy,
    Short,
}

impl ReportKind {
    /// Every kind, in the order they are listed.
    pub const ALL: [ReportKind; 8] = [
        ReportKind::DemoFast,
        ReportKind::DemoSlow,
        ReportKind::DemoStuck,
        ReportKind::Noop,
        ReportKind::Blocker,
        ReportKind::Coop,
        ReportKind::Busy,
        ReportKind::Short,
    ];

    /// The name jobs use.
    pub fn name(self) -> &'static str {
        match self {
            ReportKind::DemoFast => "demo-fast",
            ReportKind::DemoSlow => "demo-slow",
            ReportKind::DemoStuck => "demo-stuck",
            ReportKind::Noop => "noop",
            ReportKind::Blocker => "blocker",
            ReportKind::Coop => "coop",
            ReportKind::Busy => "busy",
            ReportKind::Short => "short",
        }
    }

    /// Whether the kind runs the report pipeline (and so reads `input` or `source`).
    pub fn runs_pipeline(self) -> bool {
        matches!(
            self,
            ReportKind::DemoFast | ReportKind::DemoSlow | ReportKind::DemoStuck
        )
    }

    /// Whether the kind accepts the parameter `name`: one of [`ReportKind::params`], or
    /// `source.KEY` for a kind that runs the pipeline.
    pub fn accepts(self, name: &str) -> bool {
        self.built_in().accepts(name)
    }

    /// Test reports run only on a worker started with `--enable-test-reports`.
    pub fn is_test_report(self) -> bool {
        self.built_in().test_only
    }

    /// The parameters the kind accepts.
    pub fn params(self) -> &'static [&'static str] {
        self.built_in().params
    }

    /// The control plane's and the worker's one description of this report.
    fn built_in(self) -> &'static presswork_proto::built_in::BuiltInReport {
        presswork_proto::built_in::built_in(self.name())
            .expect("every report kind is in presswork_proto::built_in::BUILT_IN_REPORTS")
    }
}

pub use presswork_proto::built_in::SOURCE_PARAM_PREFIX;

/// The report names a worker advertises.
pub fn available(enable_test_reports: bool) -> Vec<String> {
    ReportKind::ALL
        .into_iter()
        .filter(|kind| enable_test_reports || !kind.is_test_report())
        .map(|kind| kind.name().to_string())
        .collect()
}

/// How one job runs: its kind, input and per-stage behaviour, all validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportPlan {
    pub kind: ReportKind,
    pub input: Input,
    /// The stage that fails on request.
    pub fail_stage: Option<Stage>,
    /// The stage that takes its time (`demo-slow`), and how long.
    pub slow: Option<(Stage, Duration)>,
    /// The stage that ignores its token (`demo-stuck`), and for how long.
    pub stuck: Option<(Stage, Duration)>,
    /// A test workload, run instead of the pipeline.
    pub workload: Option<Workload>,
    /// The parameters as given, sorted by name (shown in the PDF).
    pub params: Vec<(String, String)>,
}

/// Validates a job's report and parameters against what this worker offers (test reports,
/// connectors). The error says what is wrong and what to do.
pub fn plan(
    report: &str,
    params: &HashMap<String, String>,
    enable_test_reports: bool,
    connectors: &Connectors,
) -> Result<ReportPlan, String> {
    let kind = ReportKind::ALL
        .into_iter()
        .find(|kind| kind.name() == report)
        .ok_or_else(|| {
            format!(
                "unknown report `{report}`; this worker runs {}",
                available(enable_test_reports).join(", ")
            )
        })?;
    if kind.is_test_report() && !enable_test_reports {
        return Err(format!(
            "report {} is a test report: start the worker with --enable-test-reports",
            kind.name()
        ));
    }
    let mut sorted: Vec<(String, String)> =
        params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    sorted.sort();
    if let Some((unknown, _)) = sorted.iter().find(|(name, _)| !kind.accepts(name)) {
        let accepted = if kind.params().is_empty() {
            "none".to_string()
        } else if kind.runs_pipeline() {
            format!("{}, source.KEY", kind.params().join(", "))
        } else {
            kind.params().join(", ")
        };
        return Err(format!(
            "unknown parameter `{unknown}` for report {}; it accepts {accepted}",
            kind.name(),
        ));
    }
    let get = |name: &str| params.get(name).map(String::as_str);
    let source_params: BTreeMap<String, String> = sorted
        .iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(SOURCE_PARAM_PREFIX)?;
            Some((key.to_string(), value.clone()))
        })
        .collect();
    let input = match (get("input"), get("source")) {
        (Some(_), Some(_)) => {
            return Err(
                "parameters input and source both say where the rows come from; give only one"
                    .into(),
            );
        }
        (None, None) if !source_params.is_empty() => {
            return Err(format!(
                "parameter {SOURCE_PARAM_PREFIX}{} is given without source=NAME; name the connector it is for",
                source_params.keys().next().map_or("", String::as_str)
            ));
        }
        (None, None) => Input::Sample,
        (Some(""), None) => return Err(
            "parameter input is empty; give a CSV file path or leave it out for the sample data"
                .into(),
        ),
        (Some(path), None) => Input::File(PathBuf::from(path)),
        (None, Some(name)) => {
            let program = connectors.get(name).ok_or_else(|| {
                let known = connectors.names();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                format!(
                    "unknown connector `{name}` (parameter source); this worker has {known}: register it with --connector {name}=PATH or pick another"
                )
            })?;
            Input::Connector(SourceConnector {
                program,
                params: source_params,
                grace: connectors.grace(),
            })
        }
    };
    let fail_stage = get("fail_stage")
        .map(|v| parse_stage("fail_stage", v))
        .transpose()?;
    let timed = |stage_param: &str, default_stage: Stage, ms_param: &str, default_ms: u64| {
        let stage = get(stage_param)
            .map(|v| parse_stage(stage_param, v))
            .transpose()?
            .unwrap_or(default_stage);
        let ms = get(ms_param)
            .map(|v| parse_ms(ms_param, v))
            .transpose()?
            .unwrap_or(default_ms);
        Ok::<_, String>(Some((stage, Duration::from_millis(ms))))
    };
    let duration = |param: &str, default_ms: u64| {
        let ms = get(param)
            .map(|v| parse_ms(param, v))
            .transpose()?
            .unwrap_or(default_ms);
        let duration = Duration::from_millis(ms);
        if duration > MAX_DURATION {
            return Err(format!(
                "parameter {param} is {ms}; test workloads run at most {} ms",
                MAX_DURATION.as_millis()
            ));
        }
        Ok(duration)
    };
    let workload = match kind {
        ReportKind::DemoFast | ReportKind::DemoSlow | ReportKind::DemoStuck => None,
        ReportKind::Noop => Some(Workload::Noop),
        ReportKind::Blocker => Some(Workload::Blocker {
            hold: duration("hold_ms", 60_000)?,
        }),
        ReportKind::Coop => Some(Workload::Coop {
            check_every: duration("check_ms", 10)?.max(Duration::from_millis(1)),
            max: duration("max_ms", 3_000)?,
        }),
        ReportKind::Busy => Some(Workload::Busy {
            grace: get("grace_ms")
                .is_some()
                .then(|| duration("grace_ms", 0))
                .transpose()?,
            max: duration("max_ms", 3_000)?,
        }),
        ReportKind::Short => Some(Workload::Short {
            work: duration("work_ms", 20)?,
        }),
    };
    let (slow, stuck) = match kind {
        ReportKind::DemoFast => (None, None),
        ReportKind::DemoSlow => (
            timed("slow_stage", Stage::Ingest, "duration_ms", 30_000)?,
            None,
        ),
        ReportKind::DemoStuck => (
            None,
            timed("stuck_stage", Stage::Transform, "stuck_ms", 600_000)?,
        ),
        ReportKind::Noop
        | ReportKind::Blocker
        | ReportKind::Coop
        | ReportKind::Busy
        | ReportKind::Short => (None, None),
    };
    Ok(ReportPlan {
        kind,
        input,
        fail_stage,
        slow,
        stuck,
        workload,
        params: sorted,
    })
}

fn parse_stage(param: &str, value: &str) -> Result<Stage, String> {
    Stage::from_short_name(value)
        .filter(|stage| *stage != Stage::Unspecified)
        .ok_or_else(|| {
            format!(
                "parameter {param} is `{value}`; use one of ingest, transform, generate, deliver"
            )
        })
}

fn parse_ms(param: &str, value: &str) -> Result<u64, String> {
    value.parse().map_err(|_| {
        format!("parameter {param} is `{value}`; use a whole number of milliseconds, e.g. 5000")
    })
}

impl ReportPlan {
    /// Applies the report's behaviour for the stage about to run: fail on request, take its
    /// time (watching the token), or ignore the token (a stuck stage).
    pub async fn before_stage(&self, ctx: &StageContext) -> Result<(), StageError> {
        let stage = ctx.stage();
        if self.fail_stage == Some(stage) {
            return Err(StageError::Failed(format!(
                "failed on request (fail_stage={})",
                stage.short_name()
            )));
        }
        if let Some((_, duration)) = self.slow.filter(|(slow, _)| *slow == stage) {
            ctx.log(format!(
                "{} takes {} ms ({})",
                stage.short_name(),
                duration.as_millis(),
                self.kind.name()
            ));
            pace(ctx, duration).await?;
        }
        if let Some((_, duration)) = self.stuck.filter(|(stuck, _)| *stuck == stage) {
            ctx.log(format!(
                "{} ignores cancellation for {} ms ({}); only a force stop ends it",
                stage.short_name(),
                duration.as_millis(),
                self.kind.name()
            ));
            stuck(duration).await;
        }
        Ok(())
    }
}

/// Works for `total` in 10 ms steps, reporting progress; returns `Cancelled` as soon as the
/// token fires.
pub async fn pace(ctx: &StageContext, total: Duration) -> Result<(), StageError> {
    const STEP: Duration = Duration::from_millis(10);
    let start = tokio::time::Instant::now();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= total {
            return Ok(());
        }
        ctx.progress(elapsed.as_secs_f64() / total.as_secs_f64());
        ctx.cancellable(tokio::time::sleep(STEP.min(total - elapsed)))
            .await?;
    }
}

/// Breaks the stage contract on purpose: sleeps without looking at any token.
async fn stuck(total: Duration) {
    let start = tokio::time::Instant::now();
    while start.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::CancelReason;
    use crate::stages::testing;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_parameters() {
        let fast = plan("demo-fast", &params(&[]), false, &Connectors::default()).expect("valid");
        assert_eq!(fast.input, Input::Sample);
        assert_eq!((fast.slow, fast.stuck, fast.fail_stage), (None, None, None));

        let slow = plan("demo-slow", &params(&[]), false, &Connectors::default()).expect("valid");
        assert_eq!(slow.slow, Some((Stage::Ingest, Duration::from_secs(30))));

        let slow = plan(
            "demo-slow",
            &params(&[
                ("slow_stage", "generate"),
                ("duration_ms", "250"),
                ("input", "/x.csv"),
            ]),
            false,
            &Connectors::default(),
        )
        .expect("valid");
        assert_eq!(
            slow.slow,
            Some((Stage::Generate, Duration::from_millis(250)))
        );
        assert_eq!(slow.input, Input::File("/x.csv".into()));

        let stuck = plan("demo-stuck", &params(&[]), true, &Connectors::default()).expect("valid");
        assert_eq!(
            stuck.stuck,
            Some((Stage::Transform, Duration::from_secs(600)))
        );
    }

    #[test]
    fn refusals_say_what_to_do() {
        let error = plan("demo-stuck", &params(&[]), false, &Connectors::default())
            .expect_err("test report");
        assert_eq!(
            error,
            "report demo-stuck is a test report: start the worker with --enable-test-reports"
        );
        let error =
            plan("nope", &params(&[]), false, &Connectors::default()).expect_err("unknown report");
        assert_eq!(
            error,
            "unknown report `nope`; this worker runs demo-fast, demo-slow"
        );
        let error = plan(
            "demo-fast",
            &params(&[("duration_ms", "5")]),
            false,
            &Connectors::default(),
        )
        .expect_err("not a demo-fast parameter");
        assert_eq!(
            error,
            "unknown parameter `duration_ms` for report demo-fast; it accepts input, source, fail_stage, source.KEY"
        );
        let error = plan(
            "demo-slow",
            &params(&[("duration_ms", "soon")]),
            false,
            &Connectors::default(),
        )
        .expect_err("not a number");
        assert!(error.contains("whole number of milliseconds"), "{error}");
        let error = plan(
            "demo-fast",
            &params(&[("fail_stage", "print")]),
            false,
            &Connectors::default(),
        )
        .expect_err("not a stage");
        assert!(error.contains("use one of ingest, transform"), "{error}");
    }

    #[test]
    fn a_source_connector_gets_its_prefixed_parameters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = dir.path().join("sales.py");
        std::fs::write(&program, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let connectors = Connectors::from_settings(
            &[format!("sales={}", program.display())],
            &[],
            Duration::from_secs(3),
        )
        .expect("valid");
        let planned = plan(
            "demo-slow",
            &params(&[
                ("source", "sales"),
                ("source.rows", "100"),
                ("source.path", "/data/x.csv"),
                ("duration_ms", "5"),
            ]),
            false,
            &connectors,
        )
        .expect("valid");
        let Input::Connector(source) = planned.input else {
            panic!("expected a connector, got {:?}", planned.input);
        };
        assert_eq!(source.program.name, "sales");
        assert_eq!(source.grace, Duration::from_secs(3));
        assert_eq!(
            source.params,
            BTreeMap::from([
                ("path".to_string(), "/data/x.csv".to_string()),
                ("rows".to_string(), "100".to_string())
            ])
        );

        let refuse = |pairs: &[(&str, &str)]| {
            plan("demo-fast", &params(pairs), false, &connectors).expect_err("refused")
        };
        assert_eq!(
            refuse(&[("source", "crm")]),
            "unknown connector `crm` (parameter source); this worker has sales: register it with --connector crm=PATH or pick another"
        );
        assert_eq!(
            refuse(&[("source", "sales"), ("input", "/x.csv")]),
            "parameters input and source both say where the rows come from; give only one"
        );
        assert_eq!(
            refuse(&[("source.rows", "5")]),
            "parameter source.rows is given without source=NAME; name the connector it is for"
        );
        assert!(refuse(&[("source.", "5")]).starts_with("unknown parameter `source.`"));
        let error = plan("noop", &params(&[("source.rows", "1")]), true, &connectors)
            .expect_err("test workloads read no rows");
        assert!(
            error.starts_with("unknown parameter `source.rows`"),
            "{error}"
        );
    }

    #[test]
    fn test_reports_are_advertised_only_when_enabled() {
        assert_eq!(available(false), vec!["demo-fast", "demo-slow"]);
        assert_eq!(
            available(true),
            vec![
                "demo-fast",
                "demo-slow",
                "demo-stuck",
                "noop",
                "blocker",
                "coop",
                "busy",
                "short"
            ]
        );
    }

    #[test]
    fn test_workloads_and_their_parameters() {
        let workload = |report: &str, pairs: &[(&str, &str)]| {
            plan(report, &params(pairs), true, &Connectors::default())
                .expect("valid")
                .workload
                .expect("a test workload")
        };
        assert_eq!(workload("noop", &[]), Workload::Noop);
        assert_eq!(
            workload("blocker", &[]),
            Workload::Blocker {
                hold: Duration::from_secs(60)
            }
        );
        assert_eq!(
            workload("coop", &[]),
            Workload::Coop {
                check_every: Duration::from_millis(10),
                max: Duration::from_secs(3)
            }
        );
        assert_eq!(
            workload("busy", &[]),
            Workload::Busy {
                grace: None,
                max: Duration::from_secs(3)
            }
        );
        assert_eq!(
            workload("busy", &[("grace_ms", "100"), ("max_ms", "2000")]),
            Workload::Busy {
                grace: Some(Duration::from_millis(100)),
                max: Duration::from_secs(2)
            }
        );
        assert_eq!(
            workload("short", &[]),
            Workload::Short {
                work: Duration::from_millis(20)
            }
        );
        assert_eq!(
            plan("demo-fast", &params(&[]), true, &Connectors::default())
                .unwrap()
                .workload,
            None
        );

        let error =
            plan("coop", &params(&[]), false, &Connectors::default()).expect_err("test report");
        assert_eq!(
            error,
            "report coop is a test report: start the worker with --enable-test-reports"
        );
        let error = plan(
            "noop",
            &params(&[("input", "/x.csv")]),
            true,
            &Connectors::default(),
        )
        .expect_err("no params");
        assert_eq!(
            error,
            "unknown parameter `input` for report noop; it accepts none"
        );
        let error = plan(
            "blocker",
            &params(&[("hold_ms", "9000000")]),
            true,
            &Connectors::default(),
        )
        .expect_err("too long");
        assert!(error.contains("at most 600000 ms"), "{error}");
    }

    #[tokio::test]
    async fn a_slow_stage_stops_when_its_token_fires() {
        tokio::time::pause();
        let dir = tempfile::tempdir().expect("tempdir");
        let (ctx, control, mut rx) = testing::context(Stage::Ingest, dir.path());
        let started = tokio::time::Instant::now();
        let work = tokio::spawn(async move { pace(&ctx, Duration::from_secs(30)).await });
        testing::next_progress(&mut rx).await;
        control.cancel(CancelReason::WorkerShutdown);
        let result = work.await.expect("the stage task ends");
        assert_eq!(result, Err(StageError::Cancelled));
        // Without the cancel it would have run 30 (virtual) seconds.
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn fail_stage_fails_only_that_stage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = plan(
            "demo-fast",
            &params(&[("fail_stage", "transform")]),
            false,
            &Connectors::default(),
        )
        .expect("valid");
        let (ingest, _, _rx) = testing::context(Stage::Ingest, dir.path());
        assert_eq!(plan.before_stage(&ingest).await, Ok(()));
        let (transform, _, _rx) = testing::context(Stage::Transform, dir.path());
        let error = plan.before_stage(&transform).await.expect_err("fails");
        assert_eq!(
            error,
            StageError::Failed("failed on request (fail_stage=transform)".into())
        );
    }
}
