-- Report configurations. `body` is the encoded presswork.v1.ReportConfig without the fields
-- the server sets (version, updated_by, times), which are columns.
CREATE TABLE reports (
    name TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    body BYTEA NOT NULL,
    updated_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
