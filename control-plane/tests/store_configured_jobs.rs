//! Jobs of stored report configurations, on SQLite and PostgreSQL: the job keeps the
//! configuration it was submitted with, and only a worker able to run it may claim it.

#[macro_use]
mod support;

use std::collections::BTreeMap;

use presswork_control_plane::store::{NewJob, Store, worker_routes};
use presswork_proto::v1::{Connector, ReportConfig};

fn config(name: &str, source: &str, connector: Option<&str>) -> ReportConfig {
    let mut params = std::collections::HashMap::new();
    if let Some(c) = connector {
        params.insert("name".to_string(), c.to_string());
    }
    ReportConfig {
        name: name.into(),
        title: format!("{name} v1"),
        source: Some(Connector {
            kind: source.into(),
            params,
        }),
        delivery: Some(Connector {
            kind: "directory".into(),
            params: Default::default(),
        }),
        ..Default::default()
    }
}

fn job(report: &str, config: Option<ReportConfig>) -> NewJob {
    NewJob {
        report: report.into(),
        params: BTreeMap::new(),
        submitted_by: "ada".into(),
        config,
    }
}

fn routes(reports: &[&str], configs: bool, connectors: &[&str]) -> Vec<String> {
    let reports: Vec<String> = reports.iter().map(|r| r.to_string()).collect();
    let connectors: Vec<String> = connectors.iter().map(|c| c.to_string()).collect();
    worker_routes(&reports, configs, &connectors)
}

async fn configured_jobs_go_only_to_workers_that_can_run_them(store: Store) {
    let sales = store
        .submit(job("sales", Some(config("sales", "csv", None))), 1)
        .await
        .unwrap();
    let warehouse = store
        .submit(
            job(
                "warehouse",
                Some(config("warehouse", "connector", Some("dwh"))),
            ),
            2,
        )
        .await
        .unwrap();
    let builtin = store.submit(job("demo-fast", None), 3).await.unwrap();

    // The snapshot is kept with the job; a built-in report has none.
    let snapshot = store
        .job_config(&sales.id)
        .await
        .unwrap()
        .expect("a configuration");
    assert_eq!(snapshot.title, "sales v1");
    assert_eq!(store.job_config(&builtin.id).await.unwrap(), None);

    // A worker of built-in reports only takes the built-in job.
    let claimed = store
        .claim_batch("old", &routes(&["demo-fast"], false, &[]), 10, 10)
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [builtin.id.as_str()]
    );
    // A worker running configurations without the connector takes only the csv one.
    let claimed = store
        .claim_batch("cfg", &routes(&["demo-fast"], true, &["other"]), 10, 11)
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [sales.id.as_str()]
    );
    // Only a worker with the `dwh` connector takes the last.
    let claimed = store
        .claim_batch("dwh", &routes(&[], true, &["dwh"]), 10, 12)
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [warehouse.id.as_str()]
    );
    assert_eq!(claimed[0].report, "warehouse");
    assert!(
        store
            .claim_batch("any", &routes(&["demo-fast"], true, &["dwh"]), 10, 13)
            .await
            .unwrap()
            .is_empty()
    );
}

conformance!(configured_jobs_go_only_to_workers_that_can_run_them);
