//! The connector conformance kit (`presswork-worker connector-check`, docs/pdk.md) passes the
//! example connectors and fails deliberately broken ones on the rule they break.

use std::path::{Path, PathBuf};
use std::process::Command;

use presswork_tests::process::binary_path;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn misbehaving() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/misbehaving.py")
}

/// What the kit said: its exit success, and each rule's PASS (true) or FAIL (false).
struct KitReport {
    passed: bool,
    rules: Vec<(String, bool)>,
    text: String,
}

impl KitReport {
    fn rule(&self, id: &str) -> bool {
        self.rules
            .iter()
            .find(|(rule, _)| rule == id)
            .unwrap_or_else(|| panic!("no verdict for rule {id} in:\n{}", self.text))
            .1
    }

    /// Exactly `failed` fail; every other rule passes.
    fn assert_only_failing(&self, failed: &[&str]) {
        assert!(
            !self.passed,
            "the kit passed a broken connector:\n{}",
            self.text
        );
        for (rule, passed) in &self.rules {
            assert_eq!(
                *passed,
                !failed.contains(&rule.as_str()),
                "rule {rule}:\n{}",
                self.text
            );
        }
        assert_eq!(self.rules.len(), 5, "{}", self.text);
    }
}

fn connector_check(program: &Path, params: &[&str]) -> KitReport {
    let mut command = Command::new(binary_path("presswork-worker"));
    command.arg("connector-check").arg(program);
    for param in params {
        command.args(["--param", param]);
    }
    // The stop rule's limit is 1 s whatever the grace; a short grace keeps the test short.
    command.args(["--grace-ms", "1500"]);
    let output = command
        .output()
        .expect("run presswork-worker connector-check");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let text = format!(
        "{stdout}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rules = stdout
        .lines()
        .filter_map(|line| {
            let (mark, rest) = line.trim_start().split_once(' ')?;
            let rule = rest.split_once(':')?.0.to_owned();
            match mark {
                "PASS" => Some((rule, true)),
                "FAIL" => Some((rule, false)),
                _ => None,
            }
        })
        .collect();
    let report = KitReport {
        passed: output.status.success(),
        rules,
        text,
    };
    assert_eq!(
        report.passed,
        stdout.contains("result: PASS"),
        "the exit status and the printed result agree:\n{}",
        report.text
    );
    report
}

#[test]
fn the_python_example_passes() {
    let report = connector_check(
        &repo_path("examples/connectors/python/sales_source.py"),
        &["rows=3000", "delay_ms=5"],
    );
    assert!(report.passed, "{}", report.text);
    assert_eq!(report.rules.len(), 5, "{}", report.text);
}

#[test]
fn the_rust_example_passes() {
    let report = connector_check(
        &binary_path("presswork-example-connector"),
        &["rows=3000", "delay_ms=5"],
    );
    assert!(report.passed, "{}", report.text);
    assert_eq!(report.rules.len(), 5, "{}", report.text);
}

#[test]
fn a_connector_that_ignores_sigterm_fails_the_stop_rule() {
    let report = connector_check(&misbehaving(), &["misbehave=ignore-sigterm"]);
    report.assert_only_failing(&["stops-on-cancel"]);
    assert!(report.text.contains("killed (SIGKILL)"), "{}", report.text);
}

#[test]
fn a_connector_that_leaves_a_child_process_fails_the_process_rule() {
    let report = connector_check(&misbehaving(), &["misbehave=leave-child"]);
    report.assert_only_failing(&["no-processes-left"]);
    assert!(report.text.contains("(sleep)"), "{}", report.text);
}

#[test]
fn a_connector_that_leaves_a_file_fails_the_file_rule() {
    let report = connector_check(&misbehaving(), &["misbehave=leave-file"]);
    report.assert_only_failing(&["no-files-left"]);
    assert!(report.text.contains("partial.csv"), "{}", report.text);
}

#[test]
fn a_connector_that_writes_garbage_fails_the_protocol_rule() {
    let report = connector_check(&misbehaving(), &["misbehave=garbage"]);
    assert!(!report.rule("protocol"), "{}", report.text);
    assert!(
        report
            .text
            .contains("line 1 of its stdout is not a protocol message"),
        "{}",
        report.text
    );
    assert!(report.rule("no-files-left"), "{}", report.text);
}

#[test]
fn a_connector_that_exits_without_done_fails_the_completion_rule() {
    let report = connector_check(&misbehaving(), &["misbehave=exit-nonzero"]);
    report.assert_only_failing(&["completes"]);
    assert!(
        report.text.contains("exited with status 3"),
        "{}",
        report.text
    );
}
