-- A user's credential version: signed into every token, and raised when the password is set or
-- the account disabled or enabled, so that tokens issued before stop working at once.
ALTER TABLE users ADD COLUMN credential_version INTEGER NOT NULL DEFAULT 0;
