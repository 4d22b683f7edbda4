//! The store a test cluster runs on: a SQLite file in the test's directory, or a fresh
//! PostgreSQL database made for the test from `PRESSWORK_TEST_POSTGRES_URL`.

use std::path::Path;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Names the admin URL the PostgreSQL tests create their databases with.
pub const POSTGRES_URL_ENV: &str = "PRESSWORK_TEST_POSTGRES_URL";

/// Which store engine a cluster runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database of one cluster. A PostgreSQL database is dropped with it, failed test or not:
/// the failure message and the kept cluster directory hold what there is to see.
pub struct TestDatabase {
    url: String,
    postgres: Option<PostgresDatabase>,
}

impl TestDatabase {
    pub async fn create(backend: Backend, dir: &Path) -> Self {
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}", dir.join("presswork.db").display()),
                postgres: None,
            },
            Backend::Postgres => {
                let postgres = PostgresDatabase::create().await;
                Self {
                    url: postgres.url.clone(),
                    postgres: Some(postgres),
                }
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

struct PostgresDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PostgresDatabase {
    async fn create() -> Self {
        let admin_url = std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| {
            panic!(
                "{POSTGRES_URL_ENV} is not set: the PostgreSQL tests need an admin URL with \
                 CREATEDB. Run `scripts/test`, which starts PostgreSQL 15 and sets it."
            )
        });
        // Its own prefix, so a leftover (a test run killed midway) is easy to attribute.
        let name = format!("presswork_e2e_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("cannot connect to PostgreSQL at {admin_url} ({POSTGRES_URL_ENV}): {e}; `scripts/test` starts it")
        });
        // The name is generated above from a UUID: a safe identifier.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name} at {admin_url}: {e}"));
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        Self {
            admin_url,
            name,
            url,
        }
    }

    /// Drops the database from a thread of its own: `Drop` cannot await on the test's runtime.
    fn drop_blocking(&self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(postgres) = &self.postgres {
            postgres.drop_blocking();
        }
    }
}

/// `admin_url` with its database name replaced by `database`, keeping any `?options`.
pub fn with_database(admin_url: &str, database: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_name_of_an_admin_url() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/postgres", "t1"),
            "postgres://u:p@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@db/postgres?sslmode=disable", "t1"),
            "postgres://u:p@db/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://db:5432", "t1"),
            "postgres://db:5432/t1"
        );
    }
}
