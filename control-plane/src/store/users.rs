//! Users and server-wide settings.

use presswork_proto::v1::Role;

use super::backend::with_pool;
use super::inline::{Binds, is_busy};
use super::{Store, StoreError};

/// A user as stored. The password hash is an Argon2id PHC string.
#[derive(Clone, Debug, PartialEq)]
pub struct UserRecord {
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    /// Raised by every change that must end the user's sessions (a new password, disabling
    /// or enabling the account); every token carries the version it was issued at.
    pub credential_version: i64,
}

const SELECT_USER: &str = "SELECT username, password_hash, role, disabled, credential_version FROM users WHERE username = $1";

#[derive(sqlx::FromRow)]
struct UserRow {
    username: String,
    password_hash: String,
    role: String,
    disabled: i64,
    credential_version: i64,
}

impl TryFrom<UserRow> for UserRecord {
    type Error = StoreError;
    fn try_from(row: UserRow) -> Result<Self, StoreError> {
        let role = crate::auth::role_from_name(&row.role).ok_or_else(|| {
            StoreError::Corrupt(format!("user {}: role {:?}", row.username, row.role))
        })?;
        Ok(UserRecord {
            username: row.username,
            password_hash: row.password_hash,
            role,
            disabled: row.disabled != 0,
            credential_version: row.credential_version,
        })
    }
}

impl Store {
    pub async fn add_user(&self, user: &UserRecord, now: i64) -> Result<(), StoreError> {
        let inserted = with_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO users (username, password_hash, role, disabled, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (username) DO NOTHING",
            )
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(crate::auth::role_name(user.role))
            .bind(i64::from(user.disabled))
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if inserted == 0 {
            return Err(StoreError::UserExists(user.username.clone()));
        }
        Ok(())
    }

    /// The user `username` as stored now: every authenticated call reads it (a disabled
    /// account is refused at once, whichever process disabled it). On SQLite the read runs on
    /// the calling thread (`store::inline`), unless the database is busy.
    pub async fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        if let Some(readers) = &self.readers {
            let read = readers.read(|conn| {
                Binds::default()
                    .bind(username)
                    .query_optional(conn, SELECT_USER, |row| {
                        Ok(UserRow {
                            username: row.get(0)?,
                            password_hash: row.get(1)?,
                            role: row.get(2)?,
                            disabled: row.get(3)?,
                            credential_version: row.get(4)?,
                        })
                    })
            });
            match read {
                Ok(row) => return row.map(UserRecord::try_from).transpose(),
                Err(e) if is_busy(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let row: Option<UserRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(SELECT_USER)
                .bind(username)
                .fetch_optional(pool)
                .await?
        });
        row.map(UserRecord::try_from).transpose()
    }

    pub async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows: Vec<UserRow> = with_pool!(&self.db, pool => {
            sqlx::query_as("SELECT username, password_hash, role, disabled, credential_version FROM users ORDER BY username")
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(UserRecord::try_from).collect()
    }

    pub async fn set_user_role(&self, username: &str, role: Role) -> Result<(), StoreError> {
        let updated = with_pool!(&self.db, pool => {
            sqlx::query("UPDATE users SET role = $2 WHERE username = $1")
                .bind(username)
                .bind(crate::auth::role_name(role))
                .execute(pool)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::UserNotFound(username.to_string()));
        }
        Ok(())
    }

    /// Disables or enables `username`, and ends every token issued before.
    pub async fn set_user_disabled(
        &self,
        username: &str,
        disabled: bool,
    ) -> Result<(), StoreError> {
        let updated = with_pool!(&self.db, pool => {
            sqlx::query("UPDATE users SET disabled = $2, credential_version = credential_version + 1 WHERE username = $1")
                .bind(username)
                .bind(i64::from(disabled))
                .execute(pool)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::UserNotFound(username.to_string()));
        }
        Ok(())
    }

    /// Sets `username`'s password hash, and ends every token issued before.
    pub async fn set_user_password(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        let updated = with_pool!(&self.db, pool => {
            sqlx::query("UPDATE users SET password_hash = $2, credential_version = credential_version + 1 WHERE username = $1")
                .bind(username)
                .bind(password_hash)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::UserNotFound(username.to_string()));
        }
        Ok(())
    }

    /// The setting `name`, set to `make()` first if it has none. Safe when several control
    /// planes start at once: the first value written wins and everyone reads it back.
    pub async fn setting_or_init(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        let value = make();
        let stored: String = with_pool!(&self.db, pool => {
            sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(&value)
                .execute(pool)
                .await?;
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1").bind(name).fetch_one(pool).await?
        });
        Ok(stored)
    }
}
