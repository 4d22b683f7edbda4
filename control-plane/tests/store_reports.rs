//! Store conformance for report configurations: the same behaviour on SQLite and PostgreSQL.

#[macro_use]
mod support;

use presswork_control_plane::store::{Store, StoreError};
use presswork_proto::v1::{Connector, ReportConfig};

fn config(name: &str, title: &str) -> ReportConfig {
    ReportConfig {
        name: name.into(),
        title: title.into(),
        source: Some(Connector {
            kind: "sample".into(),
            params: Default::default(),
        }),
        delivery: Some(Connector {
            kind: "directory".into(),
            params: [("file_name".to_string(), "x.pdf".to_string())].into(),
        }),
        // The server sets these; whatever a client sends is not stored.
        version: 42,
        updated_by: "mallory".into(),
        ..Default::default()
    }
}

async fn create_get_update_delete(store: Store) {
    let created = store
        .create_report(&config("sales", "Sales"), "ada", 1000)
        .await
        .unwrap();
    assert_eq!(
        (
            created.version,
            created.updated_by.as_str(),
            created.created_at_unix_ms,
            created.updated_at_unix_ms
        ),
        (1, "ada", 1000, 1000)
    );
    assert_eq!(created.title, "Sales");
    assert_eq!(created.delivery, config("sales", "").delivery);
    assert!(matches!(
        store.create_report(&config("sales", "Again"), "otto", 1001).await,
        Err(StoreError::ReportExists(name)) if name == "sales"
    ));
    assert_eq!(store.report("sales").await.unwrap(), Some(created.clone()));
    assert_eq!(store.report("nothing").await.unwrap(), None);

    // A blind update, then one that names the version it read.
    let v2 = store
        .update_report(&config("sales", "Sales v2"), None, "otto", 2000)
        .await
        .unwrap();
    assert_eq!(
        (v2.version, v2.title.as_str(), v2.updated_by.as_str()),
        (2, "Sales v2", "otto")
    );
    assert_eq!((v2.created_at_unix_ms, v2.updated_at_unix_ms), (1000, 2000));
    let v3 = store
        .update_report(&config("sales", "Sales v3"), Some(2), "ada", 3000)
        .await
        .unwrap();
    assert_eq!(v3.version, 3);
    // A stale version loses and changes nothing.
    assert!(matches!(
        store
            .update_report(&config("sales", "Lost"), Some(2), "otto", 4000)
            .await,
        Err(StoreError::ReportVersion { current: 3, .. })
    ));
    assert_eq!(store.report("sales").await.unwrap(), Some(v3));
    assert!(matches!(
        store
            .update_report(&config("nothing", "x"), None, "ada", 1)
            .await,
        Err(StoreError::ReportNotFound(_))
    ));

    store.delete_report("sales").await.unwrap();
    assert_eq!(store.report("sales").await.unwrap(), None);
    assert!(matches!(
        store.delete_report("sales").await,
        Err(StoreError::ReportNotFound(_))
    ));
}

async fn list_pages_by_name(store: Store) {
    for name in ["delta", "alpha", "echo", "charlie", "bravo"] {
        store
            .create_report(&config(name, name), "ada", 1)
            .await
            .unwrap();
    }
    let first = store.reports(None, 2).await.unwrap();
    let names = |page: &[ReportConfig]| page.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&first), ["alpha", "bravo"]);
    let second = store.reports(Some("bravo"), 2).await.unwrap();
    assert_eq!(names(&second), ["charlie", "delta"]);
    let last = store.reports(Some("delta"), 2).await.unwrap();
    assert_eq!(names(&last), ["echo"]);
    assert!(store.reports(Some("echo"), 2).await.unwrap().is_empty());
}

async fn concurrent_updates_of_one_version_have_one_winner(store: Store) {
    store
        .create_report(&config("race", "v1"), "ada", 1)
        .await
        .unwrap();
    let attempts = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .update_report(&config("race", &format!("writer {i}")), Some(1), "ada", 2)
                .await
        })
    });
    let mut won = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(stored) => {
                won += 1;
                assert_eq!(stored.version, 2);
            }
            Err(StoreError::ReportVersion { current: 2, .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one writer of version 1 wins");
    assert_eq!(store.report("race").await.unwrap().unwrap().version, 2);
}

conformance!(
    create_get_update_delete,
    list_pages_by_name,
    concurrent_updates_of_one_version_have_one_winner,
);
