-- Jobs of stored report configurations. `route` says which workers may claim a job: the
-- report's name for a built-in report, `config` for a configured one, and
-- `config+connector:NAME` when its source is the plug-in connector NAME. `job_configs` keeps the
-- configuration as it was when the job was submitted (encoded presswork.v1.ReportConfig).
ALTER TABLE jobs ADD COLUMN route TEXT NOT NULL DEFAULT '';
UPDATE jobs SET route = report;

CREATE TABLE job_configs (
    job_id TEXT PRIMARY KEY,
    body BLOB NOT NULL
);
