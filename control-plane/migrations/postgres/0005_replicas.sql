-- Scale-out: several control-plane replicas share this database.
--
-- Each connection of a replica's pool sets `presswork.replica` to the replica's id, so every
-- change event and log entry records which replica committed it (`origin`): a replica
-- publishes to its own watchers the rows the OTHER replicas committed, having published its
-- own right after commit.
ALTER TABLE job_events
    ADD COLUMN origin TEXT NOT NULL DEFAULT COALESCE(current_setting('presswork.replica', true), '');
ALTER TABLE job_log
    ADD COLUMN origin TEXT NOT NULL DEFAULT COALESCE(current_setting('presswork.replica', true), '');

-- Any transaction that appends an event or a log entry notifies `presswork_changes`. NOTIFY is
-- delivered at commit, and not at all on rollback; identical notifications of one transaction
-- are folded into one. The payload is empty: listeners read what is new from the tables
-- (which also covers a notification they missed).
CREATE FUNCTION presswork_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('presswork_changes', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
    FOR EACH STATEMENT EXECUTE FUNCTION presswork_notify_change();
CREATE TRIGGER job_log_notify AFTER INSERT ON job_log
    FOR EACH STATEMENT EXECUTE FUNCTION presswork_notify_change();
