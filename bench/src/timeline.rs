//! What a test workload recorded about itself (`worker/src/test_reports.rs`): when its code
//! started and stopped, on `CLOCK_MONOTONIC`, in `<output dir>/<job id>-<attempt>.timeline`.
//! Neither the control plane nor the worker reads it: it is the job's own word.

use std::collections::HashMap;
use std::path::Path;

/// A job's timeline: the first time of each event, and the busy child's pid.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    events: HashMap<String, u64>,
    pub child_pid: Option<i32>,
}

impl Timeline {
    /// The job's timeline, or `None` when it has none (it never started).
    pub fn read(output_dir: &Path, job_id: &str, attempt: u32) -> Option<Timeline> {
        let text = std::fs::read_to_string(output_dir.join(format!("{job_id}-{attempt}.timeline")))
            .ok()?;
        Some(Timeline::parse(&text))
    }

    /// Whether any attempt of the job left a timeline (used for "it never ran").
    pub fn exists(output_dir: &Path, job_id: &str) -> bool {
        (1..=3).any(|attempt| {
            output_dir
                .join(format!("{job_id}-{attempt}.timeline"))
                .exists()
        })
    }

    fn parse(text: &str) -> Timeline {
        let mut timeline = Timeline::default();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(event), Some(at)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(at) = at.parse::<u64>() else { continue };
            timeline.events.entry(event.to_string()).or_insert(at);
            if event == "child" {
                timeline.child_pid = parts.next().and_then(|p| p.parse().ok());
            }
        }
        timeline
    }

    pub fn at(&self, event: &str) -> Option<u64> {
        self.events.get(event).copied()
    }

    /// When the job's token fired: the worker's `fired` line, or (from workers that write
    /// none) `stopped` less the stop duration the worker reported, which ends later than
    /// `stopped` and so makes this an early bound.
    pub fn fired(&self, stop_duration_us: u64) -> Option<u64> {
        self.at("fired").or_else(|| {
            self.at("stopped")
                .map(|stopped| stopped.saturating_sub(stop_duration_us.saturating_mul(1000)))
        })
    }

    /// When the job's code ended, however it ended.
    pub fn ended(&self) -> Option<u64> {
        ["stopped", "finished", "failed"]
            .into_iter()
            .filter_map(|e| self.at(e))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_events_and_the_child() {
        let t = Timeline::parse("started 10\nchild 12 4242\nterm 20\nkilled 30\nstopped 31\n");
        assert_eq!(t.at("started"), Some(10));
        assert_eq!(t.child_pid, Some(4242));
        assert_eq!(t.ended(), Some(31));
        assert_eq!(t.at("finished"), None);
        assert_eq!(Timeline::parse("started 5\n").ended(), None);
    }

    #[test]
    fn the_token_fired_as_the_worker_wrote_it_or_an_early_bound() {
        let t = Timeline::parse("started 1000\nfired 5000\nstopped 9000\n");
        assert_eq!(t.fired(7), Some(5000));
        // Without the line: `stopped` less the reported stop duration (in µs).
        let t = Timeline::parse("started 1000\nstopped 9000\n");
        assert_eq!(t.fired(7), Some(2000));
        assert_eq!(Timeline::parse("started 1000\n").fired(7), None);
    }
}
