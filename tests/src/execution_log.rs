//! Reading a job's execution log and describing jobs in failure messages.

use presswork_proto::v1::{CancelResolution, Job, LogEntry, Stage};

/// The events that end a job; a job's log holds exactly one of them once it is terminal.
pub const TERMINAL_EVENTS: [&str; 3] = ["job.succeeded", "job.failed", "job.cancelled"];

/// Questions asked of one job's execution log.
pub trait ExecutionLog {
    fn events(&self) -> Vec<&str>;
    fn count(&self, event: &str) -> usize;
    fn has(&self, event: &str) -> bool {
        self.count(event) > 0
    }
    /// The first entry with this event.
    fn entry(&self, event: &str) -> Option<&LogEntry>;
    /// The entries that end the job (see [`TERMINAL_EVENTS`]).
    fn terminal_entries(&self) -> Vec<&LogEntry>;
    /// A readable listing, one entry a line.
    fn describe(&self) -> String;
}

impl ExecutionLog for [LogEntry] {
    fn events(&self) -> Vec<&str> {
        self.iter().map(|e| e.event.as_str()).collect()
    }

    fn count(&self, event: &str) -> usize {
        self.iter().filter(|e| e.event == event).count()
    }

    fn entry(&self, event: &str) -> Option<&LogEntry> {
        self.iter().find(|e| e.event == event)
    }

    fn terminal_entries(&self) -> Vec<&LogEntry> {
        self.iter()
            .filter(|e| TERMINAL_EVENTS.contains(&e.event.as_str()))
            .collect()
    }

    fn describe(&self) -> String {
        if self.is_empty() {
            return "    (empty log)".to_owned();
        }
        self.iter()
            .map(|e| {
                format!(
                    "    #{} at={} {} actor={} stage={} attempt={} {:?}",
                    e.id,
                    e.at_unix_ms,
                    e.event,
                    e.actor,
                    e.stage().short_name(),
                    e.attempt,
                    e.message
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One line with what matters about a job, for failure messages.
pub fn describe_job(job: &Job) -> String {
    let mut line = format!(
        "job {} report={} status={} stage={} attempt={} worker={:?} version={} error={:?} output={:?}",
        job.id,
        job.report,
        job.status().short_name(),
        job.stage().short_name(),
        job.attempt,
        job.worker_id,
        job.version,
        job.error,
        job.output
    );
    if let Some(cancel) = &job.cancel {
        line.push_str(&format!(
            " cancel{{by={:?} requested={} deadline={} delivered={} acknowledged={} stopped={} stopped_stage={} stop_us={} resolution={:?}}}",
            cancel.requested_by,
            cancel.requested_at_unix_ms,
            cancel.deadline_unix_ms,
            cancel.delivered_at_unix_ms,
            cancel.acknowledged_at_unix_ms,
            cancel.stopped_at_unix_ms,
            cancel.stopped_stage().short_name(),
            cancel.stop_duration_us,
            cancel.resolution()
        ));
    }
    line
}

/// The cancel resolution of a job, UNSPECIFIED when it has no cancel.
pub fn resolution(job: &Job) -> CancelResolution {
    job.cancel
        .as_ref()
        .map_or(CancelResolution::Unspecified, |c| c.resolution())
}

/// Whether the log shows a stage started (any stage, or `stage` when given).
pub fn stage_started(log: &[LogEntry], stage: Option<Stage>) -> bool {
    log.iter()
        .any(|e| e.event == "stage.started" && stage.is_none_or(|s| e.stage() == s))
}
