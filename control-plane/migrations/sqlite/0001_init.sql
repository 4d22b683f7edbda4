-- Jobs, their change events (for resumable watchers), their execution log, and workers.
CREATE TABLE jobs (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    report TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    progress REAL NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    worker_id TEXT NOT NULL DEFAULT '',
    version INTEGER NOT NULL DEFAULT 1,
    submitted_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER NOT NULL DEFAULT 0,
    finished_at INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    output TEXT NOT NULL DEFAULT '',
    cancel_requested_by TEXT NOT NULL DEFAULT '',
    cancel_reason TEXT NOT NULL DEFAULT '',
    cancel_requested_at INTEGER NOT NULL DEFAULT 0,
    cancel_deadline INTEGER NOT NULL DEFAULT 0,
    cancel_delivered_at INTEGER NOT NULL DEFAULT 0,
    cancel_acknowledged_at INTEGER NOT NULL DEFAULT 0,
    cancel_stopped_at INTEGER NOT NULL DEFAULT 0,
    cancel_stopped_stage TEXT NOT NULL DEFAULT '',
    cancel_stop_duration_us INTEGER NOT NULL DEFAULT 0,
    cancel_resolution TEXT NOT NULL DEFAULT '',
    cancel_past_point_of_no_return INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_status ON jobs (status, num);
CREATE INDEX jobs_by_worker ON jobs (worker_id, status);

CREATE TABLE job_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    at INTEGER NOT NULL,
    payload BLOB NOT NULL
);

CREATE TABLE job_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    level TEXT NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    stage TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX job_log_by_job ON job_log (job_id, id);

CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    connected_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
