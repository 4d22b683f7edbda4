//! Rendering of jobs, cancels and log entries for people (tables, key/value views, lines)
//! and for machines (JSON). Everything here is pure: callers pass the current time where a
//! value depends on it, so every function is unit-tested with fixed inputs.
//!
//! The JSON shape is written by hand rather than derived from the generated protobuf types,
//! so that it stays stable when the wire contract grows: enum values are short upper-case
//! names (`RUNNING`, `STOPPED`), stages are lower-case (`transform`) or `null`, times are
//! RFC 3339 strings in UTC or `null` when unset, and empty optional strings are `null`.

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use presswork_proto::v1::{
    CancelJobResponse, CancelOutcome, CancelResolution, CancelState, Job, JobStatus, LogEntry,
    LogLevel, Role, Stage, User, WatchJobsResponse, watch_jobs_response::Kind,
};
use serde_json::{Map, Value, json};

/// The name of a raw `JobStatus` value: `QUEUED`, `RUNNING`, `CANCELLING`, `SUCCEEDED`,
/// `FAILED`, `CANCELLED`; `UNSPECIFIED` for 0 and `UNKNOWN` for a value this CLI predates.
pub fn status_name(raw: i32) -> &'static str {
    JobStatus::try_from(raw).map_or("UNKNOWN", JobStatus::short_name)
}

/// The name of a raw `Stage` value (`ingest`, `transform`, `generate`, `deliver`), or `None`
/// when the job is not in a stage (or in one this CLI does not know).
pub fn stage_name(raw: i32) -> Option<&'static str> {
    match Stage::try_from(raw) {
        Ok(Stage::Unspecified) | Err(_) => None,
        Ok(stage) => Some(stage.short_name()),
    }
}

/// The short name of a raw `CancelResolution`: `PENDING`, `CANCELLED_WHILE_QUEUED`,
/// `STOPPED`, `FINISHED_FIRST`, `TIMED_OUT`, `WORKER_LOST` (`UNSPECIFIED` / `UNKNOWN` otherwise).
pub fn resolution_name(raw: i32) -> &'static str {
    match CancelResolution::try_from(raw) {
        Ok(CancelResolution::Unspecified) => "UNSPECIFIED",
        Ok(CancelResolution::Pending) => "PENDING",
        Ok(CancelResolution::CancelledWhileQueued) => "CANCELLED_WHILE_QUEUED",
        Ok(CancelResolution::Stopped) => "STOPPED",
        Ok(CancelResolution::FinishedFirst) => "FINISHED_FIRST",
        Ok(CancelResolution::TimedOut) => "TIMED_OUT",
        Ok(CancelResolution::WorkerLost) => "WORKER_LOST",
        Err(_) => "UNKNOWN",
    }
}

/// The short name of a raw `CancelOutcome`: `CANCELLED_WHILE_QUEUED`, `CANCELLING`,
/// `ALREADY_CANCELLING`, `ALREADY_FINISHED` (`UNSPECIFIED` / `UNKNOWN` otherwise).
pub fn outcome_name(raw: i32) -> &'static str {
    match CancelOutcome::try_from(raw) {
        Ok(CancelOutcome::Unspecified) => "UNSPECIFIED",
        Ok(CancelOutcome::CancelledWhileQueued) => "CANCELLED_WHILE_QUEUED",
        Ok(CancelOutcome::Cancelling) => "CANCELLING",
        Ok(CancelOutcome::AlreadyCancelling) => "ALREADY_CANCELLING",
        Ok(CancelOutcome::AlreadyFinished) => "ALREADY_FINISHED",
        Err(_) => "UNKNOWN",
    }
}

/// The short name of a raw `LogLevel`: `DEBUG`, `INFO`, `WARN`, `ERROR`.
pub fn level_name(raw: i32) -> &'static str {
    match LogLevel::try_from(raw) {
        Ok(LogLevel::Unspecified) => "UNSPECIFIED",
        Ok(LogLevel::Debug) => "DEBUG",
        Ok(LogLevel::Info) => "INFO",
        Ok(LogLevel::Warn) => "WARN",
        Ok(LogLevel::Error) => "ERROR",
        Err(_) => "UNKNOWN",
    }
}

/// The short name of a raw `Role`: `ADMINISTRATOR`, `OPERATOR`, `VIEWER`.
pub fn role_name(raw: i32) -> &'static str {
    match Role::try_from(raw) {
        Ok(Role::Unspecified) => "UNSPECIFIED",
        Ok(Role::Viewer) => "VIEWER",
        Ok(Role::Operator) => "OPERATOR",
        Ok(Role::Administrator) => "ADMINISTRATOR",
        Err(_) => "UNKNOWN",
    }
}

/// The short name of a raw `WatchJobsResponse.Kind`: `SNAPSHOT`, `SNAPSHOT_COMPLETE`, `CHANGE`.
pub fn watch_kind_name(raw: i32) -> &'static str {
    match Kind::try_from(raw) {
        Ok(Kind::Unspecified) => "UNSPECIFIED",
        Ok(Kind::Snapshot) => "SNAPSHOT",
        Ok(Kind::SnapshotComplete) => "SNAPSHOT_COMPLETE",
        Ok(Kind::Change) => "CHANGE",
        Err(_) => "UNKNOWN",
    }
}

// ---------------------------------------------------------------------------------------
// Times and durations
// ---------------------------------------------------------------------------------------

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Splits Unix epoch milliseconds into a UTC date, time of day and milliseconds.
fn utc_parts(unix_ms: i64) -> ((i64, i64, i64), (i64, i64, i64), i64) {
    let seconds = unix_ms.div_euclid(1_000);
    let millis = unix_ms.rem_euclid(1_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    (
        civil_from_days(days),
        (
            second_of_day / 3_600,
            second_of_day % 3_600 / 60,
            second_of_day % 60,
        ),
        millis,
    )
}

/// Unix epoch milliseconds as an RFC 3339 UTC timestamp with milliseconds
/// (`2023-11-14T22:13:20.000Z`), or `None` for 0, which the wire uses for "not yet".
pub fn rfc3339(unix_ms: i64) -> Option<String> {
    if unix_ms == 0 {
        return None;
    }
    let ((year, month, day), (hour, minute, second), millis) = utc_parts(unix_ms);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z"
    ))
}

/// Unix epoch milliseconds as a short UTC time for tables (`2023-11-14 22:13:20`), or `-`.
pub fn table_time(unix_ms: i64) -> String {
    if unix_ms == 0 {
        return "-".to_owned();
    }
    let ((year, month, day), (hour, minute, second), _) = utc_parts(unix_ms);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}")
}

/// A duration for people: `850ms`, `12.3s`, `4m05s`, `2h03m`, `1d02h`.
pub fn format_duration_ms(ms: u64) -> String {
    const SECOND: u64 = 1_000;
    const MINUTE: u64 = 60 * SECOND;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    if ms < SECOND {
        format!("{ms}ms")
    } else if ms < MINUTE {
        let tenths = ms / 100;
        format!("{}.{}s", tenths / 10, tenths % 10)
    } else if ms < HOUR {
        format!("{}m{:02}s", ms / MINUTE, ms % MINUTE / SECOND)
    } else if ms < DAY {
        format!("{}h{:02}m", ms / HOUR, ms % HOUR / MINUTE)
    } else {
        format!("{}d{:02}h", ms / DAY, ms % DAY / HOUR)
    }
}

/// How long a stop took, from microseconds measured on the worker: `0.4 ms`, `8.2 ms`,
/// `950.0 ms` under a second, then as [`format_duration_ms`].
pub fn format_stop_duration_us(us: u64) -> String {
    if us < 1_000_000 {
        let tenths_of_ms = us / 100;
        format!("{}.{} ms", tenths_of_ms / 10, tenths_of_ms % 10)
    } else {
        format_duration_ms(us / 1_000)
    }
}

/// How long a job has run: from its start to its end, or to `now_ms` while it is still
/// going. `None` when it never started (or finished without an end time).
pub fn job_duration_ms(job: &Job, now_ms: i64) -> Option<u64> {
    if job.started_at_unix_ms == 0 {
        return None;
    }
    let end = if job.finished_at_unix_ms != 0 {
        job.finished_at_unix_ms
    } else if status_is_terminal(job.status) {
        return None;
    } else {
        now_ms
    };
    Some(u64::try_from(end.saturating_sub(job.started_at_unix_ms)).unwrap_or(0))
}

fn status_is_terminal(raw: i32) -> bool {
    JobStatus::try_from(raw).is_ok_and(JobStatus::is_terminal)
}

/// Progress of the current stage as a whole percentage (`42%`), clamped to 0–100.
pub fn format_progress(progress: f64) -> String {
    if !progress.is_finite() {
        return "-".to_owned();
    }
    // Clamped to 0..=100 first, so the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let percent = (progress.clamp(0.0, 1.0) * 100.0).round() as u32;
    format!("{percent}%")
}

// ---------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------

fn string_or_null(value: &str) -> Value {
    if value.is_empty() {
        Value::Null
    } else {
        Value::String(value.to_owned())
    }
}

fn time_or_null(unix_ms: i64) -> Value {
    rfc3339(unix_ms).map_or(Value::Null, Value::String)
}

fn stage_or_null(raw: i32) -> Value {
    stage_name(raw).map_or(Value::Null, |name| Value::String(name.to_owned()))
}

/// A job as the stable JSON object of `--json` output:
///
/// ```json
/// { "id": "…", "report": "…", "params": {"k": "v"}, "status": "RUNNING",
///   "stage": "transform", "progress": 0.42, "attempt": 1, "worker_id": "w-1",
///   "version": 7, "submitted_by": "alice", "created_at": "2023-11-14T22:13:20.000Z",
///   "started_at": "…", "finished_at": null, "duration_ms": 1200, "error": null,
///   "output": null, "cancel": null }
/// ```
///
/// `duration_ms` is only set once the job has finished, so the object does not depend on
/// when it was printed.
pub fn job_to_json(job: &Job) -> Value {
    let params: Map<String, Value> = job
        .params
        .iter()
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect();
    let duration_ms = if job.finished_at_unix_ms != 0 {
        job_duration_ms(job, job.finished_at_unix_ms).map_or(Value::Null, Value::from)
    } else {
        Value::Null
    };
    json!({
        "id": job.id,
        "report": job.report,
        "params": params,
        "status": status_name(job.status),
        "stage": stage_or_null(job.stage),
        "progress": job.progress,
        "attempt": job.attempt,
        "worker_id": string_or_null(&job.worker_id),
        "version": job.version,
        "submitted_by": string_or_null(&job.submitted_by),
        "created_at": time_or_null(job.created_at_unix_ms),
        "started_at": time_or_null(job.started_at_unix_ms),
        "finished_at": time_or_null(job.finished_at_unix_ms),
        "duration_ms": duration_ms,
        "error": string_or_null(&job.error),
        "output": string_or_null(&job.output),
        "cancel": job.cancel.as_ref().map_or(Value::Null, cancel_to_json),
    })
}

/// A job's cancel as the `cancel` object of [`job_to_json`].
pub fn cancel_to_json(cancel: &CancelState) -> Value {
    json!({
        "requested_by": string_or_null(&cancel.requested_by),
        "reason": string_or_null(&cancel.reason),
        "requested_at": time_or_null(cancel.requested_at_unix_ms),
        "deadline": time_or_null(cancel.deadline_unix_ms),
        "delivered_at": time_or_null(cancel.delivered_at_unix_ms),
        "acknowledged_at": time_or_null(cancel.acknowledged_at_unix_ms),
        "stopped_at": time_or_null(cancel.stopped_at_unix_ms),
        "stopped_stage": stage_or_null(cancel.stopped_stage),
        "stop_duration_us": if cancel.stopped_at_unix_ms == 0 {
            Value::Null
        } else {
            Value::from(cancel.stop_duration_us)
        },
        "resolution": resolution_name(cancel.resolution),
        "past_point_of_no_return": cancel.past_point_of_no_return,
    })
}

/// The `--json` output of `jobs cancel`: `{ "outcome": "CANCELLING", "message": "…", "job": {…} }`.
pub fn cancel_response_to_json(response: &CancelJobResponse) -> Value {
    json!({
        "outcome": outcome_name(response.outcome),
        "message": response.message,
        "job": response.job.as_ref().map_or(Value::Null, job_to_json),
    })
}

/// One line of `jobs watch --json`: `{ "kind": "CHANGE", "sequence": 42, "job": {…} }`
/// (`job` is `null` for `SNAPSHOT_COMPLETE`).
pub fn watch_event_to_json(event: &WatchJobsResponse) -> Value {
    json!({
        "kind": watch_kind_name(event.kind),
        "sequence": event.sequence,
        "job": event.job.as_ref().map_or(Value::Null, job_to_json),
    })
}

/// One line of `jobs log --json`.
pub fn log_entry_to_json(entry: &LogEntry) -> Value {
    json!({
        "id": entry.id,
        "job_id": entry.job_id,
        "at": time_or_null(entry.at_unix_ms),
        "level": level_name(entry.level),
        "event": entry.event,
        "actor": string_or_null(&entry.actor),
        "stage": stage_or_null(entry.stage),
        "attempt": entry.attempt,
        "message": entry.message,
    })
}

/// Who is signed in and until when, for `login --json` and `whoami --json`:
/// `{ "username": "ada", "role": "ADMINISTRATOR", "token_expires_at": "2023-11-15T10:13:20.000Z" }`.
/// Never the token itself.
pub fn session_to_json(user: &User, token_expires_at_unix_ms: i64) -> Value {
    json!({
        "username": user.username,
        "role": role_name(user.role),
        "token_expires_at": time_or_null(token_expires_at_unix_ms),
    })
}

// ---------------------------------------------------------------------------------------
// People
// ---------------------------------------------------------------------------------------

/// A token expiry for people: `2023-11-15 10:13:20 UTC`, or `-` when unknown.
fn expiry(unix_ms: i64) -> String {
    if unix_ms == 0 {
        "-".to_owned()
    } else {
        format!("{} UTC", table_time(unix_ms))
    }
}

/// The answer to `presswork login`:
/// `signed in as ada (role administrator) until 2023-11-15 10:13:20 UTC`.
pub fn signed_in_line(user: &User, token_expires_at_unix_ms: i64) -> String {
    format!(
        "signed in as {} (role {}) until {}",
        user.username,
        role_name(user.role).to_ascii_lowercase(),
        expiry(token_expires_at_unix_ms)
    )
}

/// The lines of `presswork whoami`: the user, their role, when the token expires (and how
/// long that is from `now_ms`), and where the token came from (`token_source`).
pub fn whoami_details(
    user: &User,
    token_expires_at_unix_ms: i64,
    now_ms: i64,
    token_source: String,
) -> Vec<(&'static str, String)> {
    let remaining = match u64::try_from(token_expires_at_unix_ms.saturating_sub(now_ms)) {
        _ if token_expires_at_unix_ms == 0 => String::new(),
        Ok(ms) if ms > 0 => format!(" (in {})", format_duration_ms(ms)),
        _ => " (expired)".to_owned(),
    };
    vec![
        ("user", user.username.clone()),
        ("role", role_name(user.role).to_ascii_lowercase()),
        (
            "token expires",
            format!("{}{remaining}", expiry(token_expires_at_unix_ms)),
        ),
        ("token from", token_source),
    ]
}

/// The headers of [`job_table`], in order.
pub const JOB_TABLE_HEADERS: [&str; 8] = [
    "ID",
    "REPORT",
    "STATUS",
    "STAGE",
    "PROGRESS",
    "ATTEMPT",
    "SUBMITTED (UTC)",
    "DURATION",
];

/// One row of [`job_table`]: the cells of a job, as shown to people.
pub fn job_row(job: &Job, now_ms: i64) -> [String; 8] {
    let stage = stage_name(job.stage);
    [
        job.id.clone(),
        job.report.clone(),
        status_name(job.status).to_owned(),
        stage.unwrap_or("-").to_owned(),
        if stage.is_some() {
            format_progress(job.progress)
        } else {
            "-".to_owned()
        },
        job.attempt.to_string(),
        table_time(job.created_at_unix_ms),
        job_duration_ms(job, now_ms).map_or_else(|| "-".to_owned(), format_duration_ms),
    ]
}

/// The jobs as a borderless, aligned table with a header row.
pub fn job_table(jobs: &[Job], now_ms: i64) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(JOB_TABLE_HEADERS.to_vec());
    for job in jobs {
        table.add_row(job_row(job, now_ms).to_vec());
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    for index in [4, 5, 7] {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table.trim_fmt()
}

/// What a resolution means, for the key/value view.
fn resolution_description(raw: i32) -> &'static str {
    match CancelResolution::try_from(raw) {
        Ok(CancelResolution::Pending) => "waiting for the worker to confirm the stop",
        Ok(CancelResolution::CancelledWhileQueued) => "the job was still queued and never ran",
        Ok(CancelResolution::Stopped) => "the worker stopped the job",
        Ok(CancelResolution::FinishedFirst) => {
            "the job finished before the cancel took effect; the cancel was ignored"
        }
        Ok(CancelResolution::TimedOut) => {
            "no confirmation before the deadline; the job was failed and force-stopped"
        }
        Ok(CancelResolution::WorkerLost) => "the worker was lost before it confirmed the stop",
        Ok(CancelResolution::Unspecified) | Err(_) => "not reported by the control plane",
    }
}

/// A milestone reached at `at_ms`, or why it was not reached.
fn milestone(at_ms: i64, cancel: &CancelState) -> String {
    if at_ms != 0 {
        let time = rfc3339(at_ms).unwrap_or_default();
        return match u64::try_from(at_ms - cancel.requested_at_unix_ms) {
            Ok(after) if cancel.requested_at_unix_ms != 0 => {
                format!("{time} (+{} after the request)", format_duration_ms(after))
            }
            Ok(_) | Err(_) => time,
        };
    }
    match CancelResolution::try_from(cancel.resolution) {
        Ok(CancelResolution::Pending | CancelResolution::Unspecified) => "not yet".to_owned(),
        Ok(CancelResolution::CancelledWhileQueued) => "not needed: the job never ran".to_owned(),
        Ok(
            CancelResolution::Stopped
            | CancelResolution::FinishedFirst
            | CancelResolution::TimedOut
            | CancelResolution::WorkerLost,
        )
        | Err(_) => "never".to_owned(),
    }
}

/// The milestones of a cancel, as `(label, value)` lines: who asked, when and why, when the
/// cancel was delivered to and acknowledged by the worker, where and how fast the job
/// stopped, and how the cancel ended.
pub fn cancel_milestones(cancel: &CancelState) -> Vec<(&'static str, String)> {
    let mut lines = vec![
        (
            "cancel requested by",
            if cancel.requested_by.is_empty() {
                "-".to_owned()
            } else {
                cancel.requested_by.clone()
            },
        ),
        (
            "cancel requested at",
            rfc3339(cancel.requested_at_unix_ms).unwrap_or_else(|| "-".to_owned()),
        ),
        (
            "cancel reason",
            if cancel.reason.is_empty() {
                "(none given)".to_owned()
            } else {
                cancel.reason.clone()
            },
        ),
    ];
    if let Some(deadline) = rfc3339(cancel.deadline_unix_ms) {
        lines.push(("cancel deadline", deadline));
    }
    lines.push((
        "cancel delivered",
        milestone(cancel.delivered_at_unix_ms, cancel),
    ));
    lines.push((
        "cancel acknowledged",
        milestone(cancel.acknowledged_at_unix_ms, cancel),
    ));
    let stopped = if cancel.stopped_at_unix_ms == 0 {
        milestone(0, cancel)
    } else {
        let mut text = String::new();
        if let Some(stage) = stage_name(cancel.stopped_stage) {
            text.push_str("in ");
            text.push_str(stage);
            text.push(' ');
        }
        if cancel.stop_duration_us != 0 {
            text.push_str("after ");
            text.push_str(&format_stop_duration_us(cancel.stop_duration_us));
            text.push(' ');
        }
        text.push_str("at ");
        text.push_str(&milestone(cancel.stopped_at_unix_ms, cancel));
        text
    };
    lines.push(("cancel stopped", stopped));
    lines.push((
        "cancel resolution",
        format!(
            "{}: {}",
            resolution_name(cancel.resolution),
            resolution_description(cancel.resolution)
        ),
    ));
    if cancel.past_point_of_no_return {
        lines.push((
            "point of no return",
            "passed: the job had begun work that cannot be undone when the cancel arrived"
                .to_owned(),
        ));
    }
    lines
}

/// Everything about a job as `(label, value)` lines for `jobs get`.
pub fn job_details(job: &Job, now_ms: i64) -> Vec<(&'static str, String)> {
    let or_dash = |value: &str| {
        if value.is_empty() {
            "-".to_owned()
        } else {
            value.to_owned()
        }
    };
    let stage = match stage_name(job.stage) {
        Some(stage) => format!("{stage} ({})", format_progress(job.progress)),
        None => "-".to_owned(),
    };
    let mut params: Vec<_> = job.params.iter().collect();
    params.sort();
    let params = params
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ");
    let duration = match job_duration_ms(job, now_ms) {
        Some(ms) if job.finished_at_unix_ms == 0 => format!("{} so far", format_duration_ms(ms)),
        Some(ms) => format_duration_ms(ms),
        None => "-".to_owned(),
    };
    let time = |unix_ms: i64| rfc3339(unix_ms).unwrap_or_else(|| "-".to_owned());
    let mut lines = vec![
        ("id", job.id.clone()),
        ("report", job.report.clone()),
        ("params", or_dash(&params)),
        ("status", status_name(job.status).to_owned()),
        ("stage", stage),
        ("attempt", job.attempt.to_string()),
        ("worker", or_dash(&job.worker_id)),
        ("submitted by", or_dash(&job.submitted_by)),
        ("submitted at", time(job.created_at_unix_ms)),
        ("started at", time(job.started_at_unix_ms)),
        ("finished at", time(job.finished_at_unix_ms)),
        ("duration", duration),
        ("version", job.version.to_string()),
    ];
    if !job.error.is_empty() {
        lines.push(("error", job.error.clone()));
    }
    if !job.output.is_empty() {
        lines.push(("output", job.output.clone()));
    }
    match &job.cancel {
        Some(cancel) => lines.extend(cancel_milestones(cancel)),
        None => lines.push(("cancel", "not requested".to_owned())),
    }
    lines
}

/// `(label, value)` lines with the values aligned in one column.
pub fn render_key_values(lines: &[(&str, String)]) -> String {
    let width = lines
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    lines
        .iter()
        .map(|(label, value)| format!("{label:<width$}  {value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a cancel did, in one line for people.
pub fn cancel_outcome_line(response: &CancelJobResponse) -> String {
    let status = response
        .job
        .as_ref()
        .map_or("UNKNOWN", |job| status_name(job.status));
    match CancelOutcome::try_from(response.outcome) {
        Ok(CancelOutcome::CancelledWhileQueued) => {
            "cancelled while queued: the job will never run".to_owned()
        }
        Ok(CancelOutcome::Cancelling) => {
            "cancelling: the worker has been told to stop the job".to_owned()
        }
        Ok(CancelOutcome::AlreadyCancelling) => {
            "already cancelling: a cancel was already in progress; nothing new was done".to_owned()
        }
        Ok(CancelOutcome::AlreadyFinished) => {
            format!("already finished with status {status}: the cancel was ignored")
        }
        Ok(CancelOutcome::Unspecified) | Err(_) => {
            format!("outcome not reported by the control plane; the job is {status}")
        }
    }
}

/// One line of `jobs watch`: `time  id  report  STATUS  stage  progress`, where `time` is
/// when the change was received. `None` for messages without a job (`SNAPSHOT_COMPLETE`).
pub fn watch_line(event: &WatchJobsResponse, received_ms: i64) -> Option<String> {
    let job = event.job.as_ref()?;
    let stage = stage_name(job.stage);
    let progress = if stage.is_some() {
        format_progress(job.progress)
    } else {
        "-".to_owned()
    };
    Some(format!(
        "{}  {}  {}  {:<10}  {:<9}  {:>4}",
        rfc3339(received_ms).unwrap_or_else(|| "-".to_owned()),
        job.id,
        job.report,
        status_name(job.status),
        stage.unwrap_or("-"),
        progress,
    ))
}

/// One line of `jobs log`: `time level event actor [stage] message` (the stage only when
/// the entry has one).
pub fn log_line(entry: &LogEntry) -> String {
    let mut line = format!(
        "{} {:<5} {} {}",
        rfc3339(entry.at_unix_ms).unwrap_or_else(|| "-".to_owned()),
        level_name(entry.level),
        entry.event,
        if entry.actor.is_empty() {
            "-"
        } else {
            &entry.actor
        },
    );
    if let Some(stage) = stage_name(entry.stage) {
        line.push_str(" [");
        line.push_str(stage);
        line.push(']');
    }
    if !entry.message.is_empty() {
        line.push(' ');
        line.push_str(&entry.message);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ada() -> User {
        User {
            username: "ada".to_owned(),
            role: Role::Administrator as i32,
            disabled: false,
        }
    }

    #[test]
    fn sessions_show_user_role_and_expiry_but_no_token() {
        let expires = T0 + 12 * 3_600_000;
        assert_eq!(
            signed_in_line(&ada(), expires),
            "signed in as ada (role administrator) until 2023-11-15 10:13:20 UTC"
        );
        assert_eq!(
            session_to_json(&ada(), expires),
            json!({
                "username": "ada",
                "role": "ADMINISTRATOR",
                "token_expires_at": "2023-11-15T10:13:20.000Z",
            })
        );
        let lines = whoami_details(&ada(), expires, T0, "PRESSWORK_TOKEN".to_owned());
        assert_eq!(
            render_key_values(&lines),
            "user           ada\n\
             role           administrator\n\
             token expires  2023-11-15 10:13:20 UTC (in 12h00m)\n\
             token from     PRESSWORK_TOKEN"
        );
        let lines = whoami_details(&ada(), T0, T0 + 1, String::new());
        assert_eq!(lines[2].1, "2023-11-14 22:13:20 UTC (expired)");
        assert_eq!(role_name(Role::Viewer as i32), "VIEWER");
        assert_eq!(role_name(42), "UNKNOWN");
    }

    /// 2023-11-14T22:13:20.000Z
    const T0: i64 = 1_700_000_000_000;

    fn running_job() -> Job {
        Job {
            id: "job-1".to_owned(),
            report: "monthly-sales".to_owned(),
            params: HashMap::from([
                ("region".to_owned(), "eu".to_owned()),
                ("month".to_owned(), "2023-10".to_owned()),
            ]),
            status: JobStatus::Running as i32,
            stage: Stage::Transform as i32,
            progress: 0.424,
            attempt: 2,
            worker_id: "w-1".to_owned(),
            version: 7,
            submitted_by: "alice".to_owned(),
            created_at_unix_ms: T0,
            started_at_unix_ms: T0 + 1_500,
            finished_at_unix_ms: 0,
            error: String::new(),
            output: String::new(),
            cancel: None,
        }
    }

    fn stopped_cancel() -> CancelState {
        CancelState {
            requested_by: "admin".to_owned(),
            reason: "wrong month".to_owned(),
            requested_at_unix_ms: T0 + 10_000,
            deadline_unix_ms: T0 + 40_000,
            delivered_at_unix_ms: T0 + 10_002,
            acknowledged_at_unix_ms: T0 + 10_004,
            stopped_at_unix_ms: T0 + 10_012,
            stopped_stage: Stage::Transform as i32,
            stop_duration_us: 8_250,
            resolution: CancelResolution::Stopped as i32,
            past_point_of_no_return: false,
        }
    }

    #[test]
    fn status_names_are_the_short_upper_case_names() {
        let names: Vec<_> = (1..=6).map(status_name).collect();
        assert_eq!(
            names,
            [
                "QUEUED",
                "RUNNING",
                "CANCELLING",
                "SUCCEEDED",
                "FAILED",
                "CANCELLED"
            ]
        );
        assert_eq!(status_name(0), "UNSPECIFIED");
        assert_eq!(status_name(99), "UNKNOWN");
    }

    #[test]
    fn enum_short_names() {
        assert_eq!(stage_name(Stage::Deliver as i32), Some("deliver"));
        assert_eq!(stage_name(0), None);
        assert_eq!(stage_name(42), None);
        assert_eq!(
            resolution_name(CancelResolution::TimedOut as i32),
            "TIMED_OUT"
        );
        assert_eq!(
            resolution_name(CancelResolution::CancelledWhileQueued as i32),
            "CANCELLED_WHILE_QUEUED"
        );
        assert_eq!(
            outcome_name(CancelOutcome::AlreadyFinished as i32),
            "ALREADY_FINISHED"
        );
        assert_eq!(level_name(LogLevel::Warn as i32), "WARN");
        assert_eq!(
            watch_kind_name(Kind::SnapshotComplete as i32),
            "SNAPSHOT_COMPLETE"
        );
    }

    #[test]
    fn rfc3339_formats_utc_with_milliseconds_and_zero_is_unset() {
        assert_eq!(rfc3339(T0).as_deref(), Some("2023-11-14T22:13:20.000Z"));
        assert_eq!(
            rfc3339(T0 + 1_234).as_deref(),
            Some("2023-11-14T22:13:21.234Z")
        );
        // A leap day, and the last millisecond of a year.
        assert_eq!(
            rfc3339(951_782_400_000).as_deref(),
            Some("2000-02-29T00:00:00.000Z")
        );
        assert_eq!(
            rfc3339(1_704_067_199_999).as_deref(),
            Some("2023-12-31T23:59:59.999Z")
        );
        assert_eq!(rfc3339(-1).as_deref(), Some("1969-12-31T23:59:59.999Z"));
        assert_eq!(rfc3339(0), None);
        assert_eq!(table_time(T0), "2023-11-14 22:13:20");
        assert_eq!(table_time(0), "-");
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(format_duration_ms(0), "0ms");
        assert_eq!(format_duration_ms(850), "850ms");
        assert_eq!(format_duration_ms(1_000), "1.0s");
        assert_eq!(format_duration_ms(12_345), "12.3s");
        assert_eq!(format_duration_ms(59_999), "59.9s");
        assert_eq!(format_duration_ms(245_000), "4m05s");
        assert_eq!(format_duration_ms(7_380_000), "2h03m");
        assert_eq!(format_duration_ms(93_600_000), "1d02h");
        assert_eq!(format_stop_duration_us(400), "0.4 ms");
        assert_eq!(format_stop_duration_us(8_250), "8.2 ms");
        assert_eq!(format_stop_duration_us(2_500_000), "2.5s");
    }

    #[test]
    fn job_duration_runs_to_now_until_the_job_finishes() {
        let mut job = running_job();
        assert_eq!(job_duration_ms(&job, T0 + 4_000), Some(2_500));
        job.finished_at_unix_ms = T0 + 3_000;
        job.status = JobStatus::Succeeded as i32;
        assert_eq!(job_duration_ms(&job, T0 + 99_000), Some(1_500));
        job.started_at_unix_ms = 0;
        assert_eq!(job_duration_ms(&job, T0 + 99_000), None);
    }

    #[test]
    fn progress_is_a_clamped_whole_percentage() {
        assert_eq!(format_progress(0.424), "42%");
        assert_eq!(format_progress(0.995), "100%");
        assert_eq!(format_progress(1.7), "100%");
        assert_eq!(format_progress(-0.2), "0%");
        assert_eq!(format_progress(f64::NAN), "-");
    }

    #[test]
    fn job_to_json_has_stable_field_names_and_values() {
        let value = job_to_json(&running_job());
        let expected = json!({
            "id": "job-1",
            "report": "monthly-sales",
            "params": {"month": "2023-10", "region": "eu"},
            "status": "RUNNING",
            "stage": "transform",
            "progress": 0.424,
            "attempt": 2,
            "worker_id": "w-1",
            "version": 7,
            "submitted_by": "alice",
            "created_at": "2023-11-14T22:13:20.000Z",
            "started_at": "2023-11-14T22:13:21.500Z",
            "finished_at": null,
            "duration_ms": null,
            "error": null,
            "output": null,
            "cancel": null,
        });
        assert_eq!(value, expected);
    }

    #[test]
    fn job_to_json_maps_every_status_and_unset_fields_to_null() {
        for (status, name) in [
            (JobStatus::Queued, "QUEUED"),
            (JobStatus::Running, "RUNNING"),
            (JobStatus::Cancelling, "CANCELLING"),
            (JobStatus::Succeeded, "SUCCEEDED"),
            (JobStatus::Failed, "FAILED"),
            (JobStatus::Cancelled, "CANCELLED"),
        ] {
            let job = Job {
                id: "j".to_owned(),
                status: status as i32,
                ..Job::default()
            };
            let value = job_to_json(&job);
            assert_eq!(value["status"], name);
            assert_eq!(value["stage"], Value::Null);
            assert_eq!(value["created_at"], Value::Null);
            assert_eq!(value["worker_id"], Value::Null);
            assert_eq!(value["params"], json!({}));
        }
    }

    #[test]
    fn job_to_json_includes_the_cancel_and_final_duration() {
        let mut job = running_job();
        job.status = JobStatus::Cancelled as i32;
        job.finished_at_unix_ms = T0 + 10_013;
        job.cancel = Some(stopped_cancel());
        let value = job_to_json(&job);
        assert_eq!(value["duration_ms"], 8_513);
        assert_eq!(
            value["cancel"],
            json!({
                "requested_by": "admin",
                "reason": "wrong month",
                "requested_at": "2023-11-14T22:13:30.000Z",
                "deadline": "2023-11-14T22:14:00.000Z",
                "delivered_at": "2023-11-14T22:13:30.002Z",
                "acknowledged_at": "2023-11-14T22:13:30.004Z",
                "stopped_at": "2023-11-14T22:13:30.012Z",
                "stopped_stage": "transform",
                "stop_duration_us": 8_250,
                "resolution": "STOPPED",
                "past_point_of_no_return": false,
            })
        );
    }

    #[test]
    fn a_pending_cancel_has_null_milestones() {
        let cancel = CancelState {
            requested_by: "admin".to_owned(),
            requested_at_unix_ms: T0,
            resolution: CancelResolution::Pending as i32,
            ..CancelState::default()
        };
        let value = cancel_to_json(&cancel);
        assert_eq!(value["resolution"], "PENDING");
        assert_eq!(value["reason"], Value::Null);
        assert_eq!(value["delivered_at"], Value::Null);
        assert_eq!(value["stopped_stage"], Value::Null);
        assert_eq!(value["stop_duration_us"], Value::Null);
    }

    #[test]
    fn cancel_milestones_answer_did_my_cancel_work() {
        let lines = cancel_milestones(&stopped_cancel());
        let text = render_key_values(&lines);
        assert_eq!(
            text,
            "cancel requested by  admin\n\
             cancel requested at  2023-11-14T22:13:30.000Z\n\
             cancel reason        wrong month\n\
             cancel deadline      2023-11-14T22:14:00.000Z\n\
             cancel delivered     2023-11-14T22:13:30.002Z (+2ms after the request)\n\
             cancel acknowledged  2023-11-14T22:13:30.004Z (+4ms after the request)\n\
             cancel stopped       in transform after 8.2 ms at 2023-11-14T22:13:30.012Z (+12ms after the request)\n\
             cancel resolution    STOPPED: the worker stopped the job"
        );
    }

    #[test]
    fn cancel_milestones_say_not_yet_never_or_not_needed() {
        let pending = CancelState {
            requested_at_unix_ms: T0,
            resolution: CancelResolution::Pending as i32,
            ..CancelState::default()
        };
        let lines = cancel_milestones(&pending);
        assert!(lines.contains(&("cancel delivered", "not yet".to_owned())));
        assert!(lines.contains(&("cancel reason", "(none given)".to_owned())));

        let timed_out = CancelState {
            requested_at_unix_ms: T0,
            delivered_at_unix_ms: T0 + 1,
            resolution: CancelResolution::TimedOut as i32,
            past_point_of_no_return: true,
            ..CancelState::default()
        };
        let lines = cancel_milestones(&timed_out);
        assert!(lines.contains(&("cancel acknowledged", "never".to_owned())));
        assert!(lines.contains(&("cancel stopped", "never".to_owned())));
        assert!(lines.contains(&(
            "cancel resolution",
            "TIMED_OUT: no confirmation before the deadline; the job was failed and force-stopped"
                .to_owned()
        )));
        assert!(
            lines
                .iter()
                .any(|(label, _)| *label == "point of no return")
        );

        let queued = CancelState {
            requested_at_unix_ms: T0,
            resolution: CancelResolution::CancelledWhileQueued as i32,
            ..CancelState::default()
        };
        let lines = cancel_milestones(&queued);
        assert!(lines.contains(&("cancel stopped", "not needed: the job never ran".to_owned())));
    }

    #[test]
    fn job_details_show_progress_params_and_running_duration() {
        let lines = job_details(&running_job(), T0 + 4_000);
        let get = |label: &str| {
            lines
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("stage").as_deref(), Some("transform (42%)"));
        assert_eq!(get("params").as_deref(), Some("month=2023-10, region=eu"));
        assert_eq!(get("duration").as_deref(), Some("2.5s so far"));
        assert_eq!(get("finished at").as_deref(), Some("-"));
        assert_eq!(get("cancel").as_deref(), Some("not requested"));
    }

    #[test]
    fn job_table_has_a_header_and_one_aligned_row_per_job() {
        let mut queued = running_job();
        queued.id = "job-2".to_owned();
        queued.status = JobStatus::Queued as i32;
        queued.stage = 0;
        queued.started_at_unix_ms = 0;
        let table = job_table(&[running_job(), queued], T0 + 4_000);
        let lines: Vec<_> = table.lines().map(str::trim_end).collect();
        assert_eq!(lines.len(), 3, "{table}");
        let words: Vec<Vec<_>> = lines
            .iter()
            .map(|line| line.split_whitespace().collect())
            .collect();
        assert_eq!(
            words[0],
            [
                "ID",
                "REPORT",
                "STATUS",
                "STAGE",
                "PROGRESS",
                "ATTEMPT",
                "SUBMITTED",
                "(UTC)",
                "DURATION"
            ]
        );
        assert_eq!(
            words[1],
            [
                "job-1",
                "monthly-sales",
                "RUNNING",
                "transform",
                "42%",
                "2",
                "2023-11-14",
                "22:13:20",
                "2.5s"
            ]
        );
        assert_eq!(
            words[2],
            [
                "job-2",
                "monthly-sales",
                "QUEUED",
                "-",
                "-",
                "2",
                "2023-11-14",
                "22:13:20",
                "-"
            ]
        );
        // Columns line up: every row starts its status at the same offset.
        let offsets: Vec<_> = lines[1..]
            .iter()
            .map(|line| line.find("RUNNING").or_else(|| line.find("QUEUED")))
            .collect();
        assert_eq!(offsets[0], offsets[1]);
        assert_eq!(offsets[0], lines[0].find("STATUS"));
    }

    #[test]
    fn cancel_outcome_lines_name_what_happened() {
        let response = |outcome: CancelOutcome, status: JobStatus| CancelJobResponse {
            outcome: outcome as i32,
            job: Some(Job {
                status: status as i32,
                ..Job::default()
            }),
            message: String::new(),
        };
        assert_eq!(
            cancel_outcome_line(&response(
                CancelOutcome::CancelledWhileQueued,
                JobStatus::Cancelled
            )),
            "cancelled while queued: the job will never run"
        );
        assert_eq!(
            cancel_outcome_line(&response(CancelOutcome::Cancelling, JobStatus::Cancelling)),
            "cancelling: the worker has been told to stop the job"
        );
        assert!(
            cancel_outcome_line(&response(
                CancelOutcome::AlreadyCancelling,
                JobStatus::Cancelling
            ))
            .starts_with("already cancelling")
        );
        assert_eq!(
            cancel_outcome_line(&response(
                CancelOutcome::AlreadyFinished,
                JobStatus::Succeeded
            )),
            "already finished with status SUCCEEDED: the cancel was ignored"
        );
        let json =
            cancel_response_to_json(&response(CancelOutcome::AlreadyFinished, JobStatus::Failed));
        assert_eq!(json["outcome"], "ALREADY_FINISHED");
        assert_eq!(json["job"]["status"], "FAILED");
    }

    #[test]
    fn watch_output_has_kind_sequence_and_job() {
        let event = WatchJobsResponse {
            kind: Kind::Change as i32,
            sequence: 42,
            job: Some(running_job()),
        };
        let value = watch_event_to_json(&event);
        assert_eq!(value["kind"], "CHANGE");
        assert_eq!(value["sequence"], 42);
        assert_eq!(value["job"]["id"], "job-1");
        assert_eq!(
            watch_line(&event, T0).as_deref(),
            Some("2023-11-14T22:13:20.000Z  job-1  monthly-sales  RUNNING     transform   42%")
        );
        let complete = WatchJobsResponse {
            kind: Kind::SnapshotComplete as i32,
            sequence: 41,
            job: None,
        };
        assert_eq!(watch_line(&complete, T0), None);
        assert_eq!(watch_event_to_json(&complete)["job"], Value::Null);
    }

    #[test]
    fn log_lines_show_the_stage_only_when_there_is_one() {
        let mut entry = LogEntry {
            id: 9,
            job_id: "job-1".to_owned(),
            at_unix_ms: T0,
            level: LogLevel::Info as i32,
            event: "cancel.stopped".to_owned(),
            actor: "worker:w-1".to_owned(),
            stage: Stage::Transform as i32,
            attempt: 1,
            message: "stopped after 8 ms".to_owned(),
        };
        assert_eq!(
            log_line(&entry),
            "2023-11-14T22:13:20.000Z INFO  cancel.stopped worker:w-1 [transform] stopped after 8 ms"
        );
        let value = log_entry_to_json(&entry);
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["stage"], "transform");
        assert_eq!(value["at"], "2023-11-14T22:13:20.000Z");
        entry.stage = 0;
        entry.actor = "admin".to_owned();
        entry.event = "cancel.requested".to_owned();
        entry.message = String::new();
        assert_eq!(
            log_line(&entry),
            "2023-11-14T22:13:20.000Z INFO  cancel.requested admin"
        );
    }
}
