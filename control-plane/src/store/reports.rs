//! Report configurations: one row per name, the configuration encoded as protobuf and the
//! server-set fields (version, who changed it, when) as columns.

use presswork_proto::v1::ReportConfig;
use prost::Message;

use super::backend::with_pool;
use super::{Store, StoreError};

#[derive(sqlx::FromRow)]
struct ReportRow {
    version: i64,
    body: Vec<u8>,
    updated_by: String,
    created_at: i64,
    updated_at: i64,
}

/// The columns every query reads back (a macro: sqlx takes only literal SQL).
macro_rules! columns {
    () => {
        "version, body, updated_by, created_at, updated_at"
    };
}

impl ReportRow {
    fn into_config(self) -> Result<ReportConfig, StoreError> {
        let mut config = ReportConfig::decode(self.body.as_slice())
            .map_err(|e| StoreError::Corrupt(format!("report configuration: {e}")))?;
        config.version = self.version;
        config.updated_by = self.updated_by;
        config.created_at_unix_ms = self.created_at;
        config.updated_at_unix_ms = self.updated_at;
        Ok(config)
    }
}

/// The stored body: the configuration without what the server sets.
fn body(config: &ReportConfig) -> Vec<u8> {
    ReportConfig {
        version: 0,
        updated_by: String::new(),
        created_at_unix_ms: 0,
        updated_at_unix_ms: 0,
        ..config.clone()
    }
    .encode_to_vec()
}

impl Store {
    /// Stores a new configuration at version 1, or fails with `ReportExists`.
    pub async fn create_report(
        &self,
        config: &ReportConfig,
        by: &str,
        now: i64,
    ) -> Result<ReportConfig, StoreError> {
        let row: Option<ReportRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(concat!(
                "INSERT INTO reports (name, version, body, updated_by, created_at, updated_at) \
                 VALUES ($1, 1, $2, $3, $4, $4) ON CONFLICT (name) DO NOTHING RETURNING ",
                columns!()
            ))
            .bind(&config.name)
            .bind(body(config))
            .bind(by)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        match row {
            Some(row) => row.into_config(),
            None => Err(StoreError::ReportExists(config.name.clone())),
        }
    }

    pub async fn report(&self, name: &str) -> Result<Option<ReportConfig>, StoreError> {
        let row: Option<ReportRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(concat!("SELECT ", columns!(), " FROM reports WHERE name = $1"))
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        row.map(ReportRow::into_config).transpose()
    }

    /// Up to `limit` configurations by name, after `after` (exclusive) when given.
    pub async fn reports(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReportConfig>, StoreError> {
        let rows: Vec<ReportRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM reports WHERE name > $1 ORDER BY name LIMIT $2"
            ))
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(ReportRow::into_config).collect()
    }

    /// Replaces a configuration and bumps its version, in one compare-and-set: with
    /// `expected_version`, only if the stored version is that one (`ReportVersion` if not).
    pub async fn update_report(
        &self,
        config: &ReportConfig,
        expected_version: Option<i64>,
        by: &str,
        now: i64,
    ) -> Result<ReportConfig, StoreError> {
        let row: Option<ReportRow> = with_pool!(&self.db, pool => {
            sqlx::query_as(concat!(
                "UPDATE reports SET version = version + 1, body = $2, updated_by = $3, updated_at = $4 \
                 WHERE name = $1 AND ($5 = 0 OR version = $5) RETURNING ",
                columns!()
            ))
            .bind(&config.name)
            .bind(body(config))
            .bind(by)
            .bind(now)
            .bind(expected_version.unwrap_or(0))
            .fetch_optional(pool)
            .await?
        });
        if let Some(row) = row {
            return row.into_config();
        }
        match self.report(&config.name).await? {
            None => Err(StoreError::ReportNotFound(config.name.clone())),
            Some(current) => Err(StoreError::ReportVersion {
                name: config.name.clone(),
                current: current.version,
            }),
        }
    }

    pub async fn delete_report(&self, name: &str) -> Result<(), StoreError> {
        let deleted = with_pool!(&self.db, pool => {
            sqlx::query("DELETE FROM reports WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if deleted == 0 {
            return Err(StoreError::ReportNotFound(name.to_owned()));
        }
        Ok(())
    }
}
