//! Figures and how they are printed: a table per scenario with p50, p95, p99, max and n, the
//! target beside each figure and PASS or SHORT, as Markdown and as JSON. Performance targets
//! are reported, never asserted; only the correctness counts (target 0: inconsistent outcomes,
//! missed changes, unreaped children) fail the run (see `main`).

use std::fmt::Write as _;

/// What a figure is held to.
#[derive(Clone, Debug)]
pub enum Target {
    /// p99 at most this many nanoseconds (`label` says where the target comes from).
    P99AtMost { ns: i64, label: String },
    /// A rate at least this high.
    AtLeast { value: f64, label: String },
    /// A count that must be zero.
    Zero,
}

impl Target {
    pub fn p99_ms(ms: f64, label: &str) -> Self {
        Target::P99AtMost {
            ns: (ms * 1e6) as i64,
            label: label.to_string(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::P99AtMost { label, .. } => format!("p99 ≤ {label}"),
            Target::AtLeast { label, .. } => format!("≥ {label}"),
            Target::Zero => "0".to_string(),
        }
    }
}

/// One line of a table.
#[derive(Clone, Debug)]
pub enum Row {
    /// A distribution of durations in nanoseconds (may be negative for margins).
    Latency {
        name: String,
        values: Vec<i64>,
        target: Option<Target>,
    },
    /// One number with a unit.
    Figure {
        name: String,
        value: f64,
        unit: &'static str,
        target: Option<Target>,
    },
}

impl Row {
    pub fn latency(name: &str, values: Vec<i64>, target: Option<Target>) -> Self {
        Row::Latency {
            name: name.to_string(),
            values,
            target,
        }
    }

    pub fn figure(name: &str, value: f64, unit: &'static str, target: Option<Target>) -> Self {
        Row::Figure {
            name: name.to_string(),
            value,
            unit,
            target,
        }
    }

    pub fn count(name: &str, value: usize, target: Option<Target>) -> Self {
        Row::figure(name, value as f64, "", target)
    }

    /// `Some(true)` PASS, `Some(false)` SHORT, `None` no target (or no data).
    pub fn verdict(&self) -> Option<bool> {
        match self {
            Row::Latency {
                values,
                target: Some(Target::P99AtMost { ns, .. }),
                ..
            } => {
                let p = Percentiles::of(values)?;
                Some(p.p99 <= *ns)
            }
            Row::Figure {
                value,
                target: Some(target),
                ..
            } => match target {
                Target::AtLeast {
                    value: at_least, ..
                } => Some(*value >= *at_least),
                Target::Zero => Some(*value == 0.0),
                Target::P99AtMost { ns, .. } => Some(*value * 1e6 <= *ns as f64),
            },
            _ => None,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Row::Latency { name, .. } | Row::Figure { name, .. } => name,
        }
    }

    pub fn target(&self) -> Option<&Target> {
        match self {
            Row::Latency { target, .. } | Row::Figure { target, .. } => target.as_ref(),
        }
    }
}

/// Nearest-rank percentiles of a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentiles {
    pub n: usize,
    pub p50: i64,
    pub p95: i64,
    pub p99: i64,
    pub max: i64,
}

impl Percentiles {
    pub fn of(values: &[i64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let rank = |q: f64| {
            let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[index]
        };
        Some(Percentiles {
            n: sorted.len(),
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// The figures of one scenario on one database.
#[derive(Clone, Debug)]
pub struct Report {
    pub scenario: &'static str,
    pub database: &'static str,
    /// What was run, in one line.
    pub setup: String,
    pub rows: Vec<Row>,
    /// Anything the reader must know to trust the figures (inconsistencies found, caveats).
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str, database: &'static str, setup: String) -> Self {
        Report {
            scenario,
            database,
            setup,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The "inconsistent outcomes" row (target zero): the samples found wrong, whose first
    /// five reasons become notes, plus `more` found otherwise (a state changed after it was
    /// terminal).
    pub fn inconsistent<'a>(&mut self, wrong: impl IntoIterator<Item = &'a String>, more: usize) {
        let wrong: Vec<&String> = wrong.into_iter().collect();
        self.push(Row::count(
            "inconsistent outcomes",
            wrong.len() + more,
            Some(Target::Zero),
        ));
        for why in wrong.iter().take(5) {
            self.note(why.as_str());
        }
    }

    /// The table, as printed and as pasted into docs/benchmarks.md.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n## {} · {}\n{}\n",
            self.scenario, self.database, self.setup
        );
        let _ = writeln!(
            out,
            "| {:<48} | {:>6} | {:>10} | {:>10} | {:>10} | {:>10} | {:<28} | {:<5} |",
            "figure", "n", "p50", "p95", "p99", "max", "target", ""
        );
        let _ = writeln!(
            out,
            "|{}|{}:|{}:|{}:|{}:|{}:|{}|{}|",
            "-".repeat(50),
            "-".repeat(7),
            "-".repeat(11),
            "-".repeat(11),
            "-".repeat(11),
            "-".repeat(11),
            "-".repeat(30),
            "-".repeat(7)
        );
        for row in &self.rows {
            let target = row.target().map(Target::describe).unwrap_or_default();
            let verdict = match row.verdict() {
                Some(true) => "PASS",
                Some(false) => "SHORT",
                None => "",
            };
            match row {
                Row::Latency { name, values, .. } => match Percentiles::of(values) {
                    Some(p) => {
                        let _ = writeln!(
                            out,
                            "| {:<48} | {:>6} | {:>10} | {:>10} | {:>10} | {:>10} | {:<28} | {:<5} |",
                            name,
                            p.n,
                            ms(p.p50),
                            ms(p.p95),
                            ms(p.p99),
                            ms(p.max),
                            target,
                            verdict
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "| {:<48} | {:>6} | {:>10} | {:>10} | {:>10} | {:>10} | {:<28} | {:<5} |",
                            name, 0, "-", "-", "-", "-", target, "n/a"
                        );
                    }
                },
                Row::Figure {
                    name, value, unit, ..
                } => {
                    let shown = if value.fract() == 0.0 && value.abs() < 1e15 {
                        format!("{value:.0}{unit}")
                    } else {
                        format!("{value:.1}{unit}")
                    };
                    let _ = writeln!(
                        out,
                        "| {:<48} | {:>6} | {:>10} | {:>10} | {:>10} | {:>10} | {:<28} | {:<5} |",
                        name, "", shown, "", "", "", target, verdict
                    );
                }
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "\n- {note}");
        }
        out
    }
}

impl Row {
    /// The row as JSON: durations in milliseconds, the verdict as "PASS", "SHORT" or null.
    pub fn to_json(&self) -> serde_json::Value {
        let verdict = match self.verdict() {
            Some(true) => serde_json::json!("PASS"),
            Some(false) => serde_json::json!("SHORT"),
            None => serde_json::Value::Null,
        };
        let target = self.target().map(Target::describe);
        match self {
            Row::Latency { name, values, .. } => {
                let p = Percentiles::of(values);
                let ms = |f: fn(&Percentiles) -> i64| p.as_ref().map(|p| f(p) as f64 / 1e6);
                serde_json::json!({
                    "figure": name,
                    "n": values.len(),
                    "p50_ms": ms(|p| p.p50),
                    "p95_ms": ms(|p| p.p95),
                    "p99_ms": ms(|p| p.p99),
                    "max_ms": ms(|p| p.max),
                    "target": target,
                    "verdict": verdict,
                })
            }
            Row::Figure {
                name, value, unit, ..
            } => serde_json::json!({
                "figure": name,
                "value": value,
                "unit": unit.trim(),
                "target": target,
                "verdict": verdict,
            }),
        }
    }

    /// A correctness count (target 0) that is not zero.
    pub fn is_violation(&self) -> bool {
        matches!(self.target(), Some(Target::Zero)) && self.verdict() == Some(false)
    }
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "scenario": self.scenario,
            "database": self.database,
            "setup": self.setup,
            "rows": self.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

/// Milliseconds with a precision that suits the size.
pub fn ms(ns: i64) -> String {
    let ms = ns as f64 / 1e6;
    if ms.abs() >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms.abs() >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<i64> = (1..=100).collect();
        let p = Percentiles::of(&values).unwrap();
        assert_eq!((p.n, p.p50, p.p95, p.p99, p.max), (100, 50, 95, 99, 100));
        let p = Percentiles::of(&[7]).unwrap();
        assert_eq!((p.p50, p.p99, p.max), (7, 7, 7));
        assert_eq!(Percentiles::of(&[]), None);
    }

    #[test]
    fn verdicts_hold_figures_to_their_targets() {
        let fast = Row::latency("x", vec![1_000_000; 10], Some(Target::p99_ms(3.0, "3 ms")));
        assert_eq!(fast.verdict(), Some(true));
        let slow = Row::latency("x", vec![4_000_000; 10], Some(Target::p99_ms(3.0, "3 ms")));
        assert_eq!(slow.verdict(), Some(false));
        let rate = Row::figure(
            "r",
            1400.0,
            " jobs/s",
            Some(Target::AtLeast {
                value: 1500.0,
                label: "1500 jobs/s".into(),
            }),
        );
        assert_eq!(rate.verdict(), Some(false));
        assert_eq!(Row::count("c", 0, Some(Target::Zero)).verdict(), Some(true));
        assert_eq!(Row::count("c", 2, None).verdict(), None);
    }

    #[test]
    fn only_nonzero_correctness_counts_are_violations() {
        assert!(Row::count("c", 1, Some(Target::Zero)).is_violation());
        assert!(!Row::count("c", 0, Some(Target::Zero)).is_violation());
        let slow = Row::latency("x", vec![4_000_000; 10], Some(Target::p99_ms(3.0, "3 ms")));
        assert!(
            !slow.is_violation(),
            "a performance target is reported, not asserted"
        );
    }

    #[test]
    fn json_rows_carry_percentiles_in_ms_and_the_verdict() {
        let row = Row::latency(
            "x",
            vec![1_000_000, 2_000_000],
            Some(Target::p99_ms(3.0, "3 ms")),
        );
        let json = row.to_json();
        assert_eq!(json["n"], 2);
        assert_eq!(json["p50_ms"], 1.0);
        assert_eq!(json["p99_ms"], 2.0);
        assert_eq!(json["verdict"], "PASS");
        let count = Row::count("c", 0, Some(Target::Zero)).to_json();
        assert_eq!(
            (count["value"].as_f64(), count["target"].as_str()),
            (Some(0.0), Some("0"))
        );
    }
}
