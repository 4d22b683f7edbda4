//! Fresh stores for tests: a SQLite file in a temp dir, or a new PostgreSQL database created
//! from `PRESSWORK_TEST_POSTGRES_URL` (an account with CREATEDB; `scripts/test` sets it up).

#![allow(dead_code)]

use presswork_control_plane::store::Store;
use sqlx::Connection;

pub struct TestStore {
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    /// (admin URL, database name) of a PostgreSQL database to drop afterwards.
    postgres: Option<(String, String)>,
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("presswork.db").display());
    let store = Store::connect(&url).await.expect("open SQLite store");
    TestStore {
        store,
        _dir: Some(dir),
        postgres: None,
    }
}

pub async fn postgres() -> TestStore {
    let admin = std::env::var("PRESSWORK_TEST_POSTGRES_URL").expect(
        "PRESSWORK_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which starts PostgreSQL and sets it \
         (or point it at a postgres:// account with CREATEDB)",
    );
    let name = format!("presswork_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to PRESSWORK_TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    let store = Store::connect(&format!("{base}/{name}"))
        .await
        .expect("open PostgreSQL store");
    TestStore {
        store,
        _dir: None,
        postgres: Some((admin, name)),
    }
}

/// Runs each named `async fn(Store)` as two tests, `sqlite::NAME` and `postgres::NAME`, each on
/// a fresh store. Use with `#[macro_use] mod support;`.
#[allow(unused_macros)]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = crate::support::sqlite().await;
                super::$name(db.store.clone()).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = crate::support::postgres().await;
                super::$name(db.store.clone()).await;
            })*
        }
    };
}
