//! Rows as the database holds them, and their conversion to domain and wire types.

use std::collections::BTreeMap;

use presswork_proto::v1::{
    CancelResolution, CancelState, Job, JobStatus, LogEntry, LogLevel, Stage,
};

use super::StoreError;
use crate::job::{CancelRecord, JobRecord};

/// The columns of `jobs`, in [`JobRow`] order, as a literal for `concat!`.
macro_rules! job_columns {
    () => {
        "num, id, report, params, status, stage, progress, attempt, worker_id, version, \
         submitted_by, created_at, started_at, finished_at, error, output, \
         cancel_requested_by, cancel_reason, cancel_requested_at, cancel_deadline, \
         cancel_delivered_at, cancel_acknowledged_at, cancel_stopped_at, cancel_stopped_stage, \
         cancel_stop_duration_us, cancel_resolution, cancel_past_point_of_no_return"
    };
}
pub(crate) use job_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    num: i64,
    id: String,
    report: String,
    params: String,
    status: String,
    stage: String,
    progress: f64,
    attempt: i64,
    worker_id: String,
    version: i64,
    submitted_by: String,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    error: String,
    output: String,
    cancel_requested_by: String,
    cancel_reason: String,
    cancel_requested_at: i64,
    cancel_deadline: i64,
    cancel_delivered_at: i64,
    cancel_acknowledged_at: i64,
    cancel_stopped_at: i64,
    cancel_stopped_stage: String,
    cancel_stop_duration_us: i64,
    cancel_resolution: String,
    cancel_past_point_of_no_return: i64,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("job {}: {what}", row.id));
        let params: BTreeMap<String, String> =
            serde_json::from_str(&row.params).map_err(|e| corrupt(&format!("params: {e}")))?;
        let status = JobStatus::from_short_name(&row.status)
            .ok_or_else(|| corrupt(&format!("status {:?}", row.status)))?;
        let cancel = if row.cancel_resolution.is_empty() {
            None
        } else {
            Some(CancelRecord {
                requested_by: row.cancel_requested_by,
                reason: row.cancel_reason,
                requested_at: row.cancel_requested_at,
                deadline: row.cancel_deadline,
                delivered_at: row.cancel_delivered_at,
                acknowledged_at: row.cancel_acknowledged_at,
                stopped_at: row.cancel_stopped_at,
                stopped_stage: stage_from_column(&row.cancel_stopped_stage),
                stop_duration_us: u64::try_from(row.cancel_stop_duration_us).unwrap_or(0),
                resolution: CancelResolution::from_str_name(&row.cancel_resolution).ok_or_else(
                    || corrupt(&format!("cancel resolution {:?}", row.cancel_resolution)),
                )?,
                past_point_of_no_return: row.cancel_past_point_of_no_return != 0,
            })
        };
        Ok(JobRecord {
            num: row.num,
            status,
            stage: stage_from_column(&row.stage),
            progress: row.progress,
            attempt: u32::try_from(row.attempt).map_err(|_| corrupt("attempt"))?,
            params,
            id: row.id,
            report: row.report,
            worker_id: row.worker_id,
            version: row.version,
            submitted_by: row.submitted_by,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            error: row.error,
            output: row.output,
            cancel,
        })
    }
}

/// The cancel columns as bound by `UPDATE jobs` (empty values when there is no cancel).
pub(crate) struct JobColumns<'a> {
    pub cancel: CancelRecordColumns<'a>,
}

pub(crate) struct CancelRecordColumns<'a> {
    pub requested_by: &'a str,
    pub reason: &'a str,
    pub requested_at: i64,
    pub deadline: i64,
    pub delivered_at: i64,
    pub acknowledged_at: i64,
    pub stopped_at: i64,
    pub stopped_stage: &'static str,
    pub stop_duration_us: i64,
    pub resolution: &'static str,
    pub past_point_of_no_return: i64,
}

impl<'a> JobColumns<'a> {
    pub fn of(job: &'a JobRecord) -> Self {
        let cancel = match &job.cancel {
            Some(c) => CancelRecordColumns {
                requested_by: &c.requested_by,
                reason: &c.reason,
                requested_at: c.requested_at,
                deadline: c.deadline,
                delivered_at: c.delivered_at,
                acknowledged_at: c.acknowledged_at,
                stopped_at: c.stopped_at,
                stopped_stage: c.stopped_stage.short_name(),
                stop_duration_us: i64::try_from(c.stop_duration_us).unwrap_or(i64::MAX),
                resolution: c.resolution.as_str_name(),
                past_point_of_no_return: i64::from(c.past_point_of_no_return),
            },
            None => CancelRecordColumns {
                requested_by: "",
                reason: "",
                requested_at: 0,
                deadline: 0,
                delivered_at: 0,
                acknowledged_at: 0,
                stopped_at: 0,
                stopped_stage: "",
                stop_duration_us: 0,
                resolution: "",
                past_point_of_no_return: 0,
            },
        };
        JobColumns { cancel }
    }
}

fn stage_from_column(value: &str) -> Stage {
    Stage::from_short_name(value).unwrap_or(Stage::Unspecified)
}

#[derive(sqlx::FromRow)]
pub(crate) struct LogRow {
    id: i64,
    job_id: String,
    at: i64,
    level: String,
    event: String,
    actor: String,
    stage: String,
    attempt: i64,
    message: String,
}

/// The columns of `job_log`, in [`LogRow`] order.
macro_rules! log_columns {
    () => {
        "id, job_id, at, level, event, actor, stage, attempt, message"
    };
}
pub(crate) use log_columns;

impl From<LogRow> for LogEntry {
    fn from(row: LogRow) -> Self {
        LogEntry {
            id: u64::try_from(row.id).unwrap_or(0),
            job_id: row.job_id,
            at_unix_ms: row.at,
            level: LogLevel::from_str_name(&row.level).unwrap_or(LogLevel::Info) as i32,
            event: row.event,
            actor: row.actor,
            stage: stage_from_column(&row.stage) as i32,
            attempt: u32::try_from(row.attempt).unwrap_or(0),
            message: row.message,
        }
    }
}

/// The wire form of a job.
pub fn job_to_wire(job: &JobRecord) -> Job {
    Job {
        id: job.id.clone(),
        report: job.report.clone(),
        params: job.params.clone().into_iter().collect(),
        status: job.status as i32,
        stage: job.stage as i32,
        progress: job.progress,
        attempt: job.attempt,
        worker_id: job.worker_id.clone(),
        version: job.version,
        submitted_by: job.submitted_by.clone(),
        created_at_unix_ms: job.created_at,
        started_at_unix_ms: job.started_at,
        finished_at_unix_ms: job.finished_at,
        error: job.error.clone(),
        output: job.output.clone(),
        cancel: job.cancel.as_ref().map(|c| CancelState {
            requested_by: c.requested_by.clone(),
            reason: c.reason.clone(),
            requested_at_unix_ms: c.requested_at,
            deadline_unix_ms: c.deadline,
            delivered_at_unix_ms: c.delivered_at,
            acknowledged_at_unix_ms: c.acknowledged_at,
            stopped_at_unix_ms: c.stopped_at,
            stopped_stage: c.stopped_stage as i32,
            stop_duration_us: c.stop_duration_us,
            resolution: c.resolution as i32,
            past_point_of_no_return: c.past_point_of_no_return,
        }),
    }
}
