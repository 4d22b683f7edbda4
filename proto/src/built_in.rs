//! The reports built into every worker and the parameters each accepts: one table that the
//! control plane (refusing a submit it can already tell is wrong) and the worker (running the
//! job) both read.

/// Parameters passed on to a source connector start with this (`source.rows=100` gives the
/// connector `rows=100`).
pub const SOURCE_PARAM_PREFIX: &str = "source.";

/// A report every worker has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltInReport {
    pub name: &'static str,
    /// The parameters it accepts (besides `source.KEY` for a report that runs the pipeline).
    pub params: &'static [&'static str],
    /// It runs the ingest → transform → generate → deliver pipeline.
    pub runs_pipeline: bool,
    /// Only workers started with `--enable-test-reports` run it.
    pub test_only: bool,
}

const fn report(
    name: &'static str,
    params: &'static [&'static str],
    runs_pipeline: bool,
    test_only: bool,
) -> BuiltInReport {
    BuiltInReport {
        name,
        params,
        runs_pipeline,
        test_only,
    }
}

pub const BUILT_IN_REPORTS: [BuiltInReport; 8] = [
    report("demo-fast", &["input", "source", "fail_stage"], true, false),
    report(
        "demo-slow",
        &["input", "source", "fail_stage", "slow_stage", "duration_ms"],
        true,
        false,
    ),
    report(
        "demo-stuck",
        &["input", "source", "fail_stage", "stuck_stage", "stuck_ms"],
        true,
        true,
    ),
    report("noop", &[], false, true),
    report("blocker", &["hold_ms"], false, true),
    report("coop", &["check_ms", "max_ms"], false, true),
    report("busy", &["grace_ms", "max_ms"], false, true),
    report("short", &["work_ms"], false, true),
];

/// The built-in report called `name`.
pub fn built_in(name: &str) -> Option<&'static BuiltInReport> {
    BUILT_IN_REPORTS.iter().find(|r| r.name == name)
}

impl BuiltInReport {
    /// Whether it accepts the parameter `name`: one of [`BuiltInReport::params`], or
    /// `source.KEY` for a report that runs the pipeline.
    pub fn accepts(&self, name: &str) -> bool {
        self.params.contains(&name)
            || (self.runs_pipeline
                && name
                    .strip_prefix(SOURCE_PARAM_PREFIX)
                    .is_some_and(|key| !key.is_empty()))
    }

    /// What it accepts, for messages: `none`, or the names (and `source.KEY`).
    pub fn accepted(&self) -> String {
        if self.params.is_empty() {
            "none".to_string()
        } else if self.runs_pipeline {
            format!("{}, source.KEY", self.params.join(", "))
        } else {
            self.params.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_accepts_its_own_parameters_and_source_keys_only_when_it_runs_the_pipeline() {
        let slow = built_in("demo-slow").unwrap();
        assert!(slow.accepts("slow_stage") && slow.accepts("source.rows"));
        assert!(!slow.accepts("stuck_ms") && !slow.accepts("source."));
        let coop = built_in("coop").unwrap();
        assert!(coop.accepts("check_ms") && !coop.accepts("source.rows"));
        assert_eq!(built_in("noop").unwrap().accepted(), "none");
        assert!(built_in("nightly-sales").is_none());
    }
}
