-- Jobs, their change events (for resumable watchers), their execution log, and workers.
CREATE TABLE jobs (
    num BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    report TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    attempt BIGINT NOT NULL DEFAULT 0,
    worker_id TEXT NOT NULL DEFAULT '',
    version BIGINT NOT NULL DEFAULT 1,
    submitted_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT NOT NULL DEFAULT 0,
    finished_at BIGINT NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    output TEXT NOT NULL DEFAULT '',
    cancel_requested_by TEXT NOT NULL DEFAULT '',
    cancel_reason TEXT NOT NULL DEFAULT '',
    cancel_requested_at BIGINT NOT NULL DEFAULT 0,
    cancel_deadline BIGINT NOT NULL DEFAULT 0,
    cancel_delivered_at BIGINT NOT NULL DEFAULT 0,
    cancel_acknowledged_at BIGINT NOT NULL DEFAULT 0,
    cancel_stopped_at BIGINT NOT NULL DEFAULT 0,
    cancel_stopped_stage TEXT NOT NULL DEFAULT '',
    cancel_stop_duration_us BIGINT NOT NULL DEFAULT 0,
    cancel_resolution TEXT NOT NULL DEFAULT '',
    cancel_past_point_of_no_return BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_status ON jobs (status, num);
CREATE INDEX jobs_by_worker ON jobs (worker_id, status);

CREATE TABLE job_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    at BIGINT NOT NULL,
    payload BYTEA NOT NULL
);

CREATE TABLE job_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    level TEXT NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    stage TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX job_log_by_job ON job_log (job_id, id);

CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    capacity BIGINT NOT NULL,
    connected_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
