//! Report configurations over the real control plane, through the `presswork` CLI: created,
//! read, listed, updated with a version check and deleted; validated on save with errors
//! naming the field; changed only by administrators, read by anyone signed in.

use presswork_tests::Cluster;
use presswork_tests::cluster::CLI_BINARY;
use presswork_tests::process::binary_path;

/// Runs `presswork --server URL ARGS…` as `user`, with `stdin`; returns (exit code, stdout,
/// stderr).
async fn presswork(
    cluster: &Cluster,
    user: &str,
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(binary_path(CLI_BINARY))
        .arg("--server")
        .arg(cluster.url())
        .args(args)
        .env_remove("PRESSWORK_SERVER")
        .env("PRESSWORK_TOKEN", cluster.token(user))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the presswork CLI");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let output = child.wait_with_output().await.expect("CLI output");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const SALES: &str = r#"{
    "name": "monthly-sales",
    "title": "Monthly sales",
    "source": {"kind": "csv", "params": {"path": "/srv/data/sales.csv"}},
    "transformation": {
        "filters": [{"column": "amount", "op": "gt", "value": 0}],
        "group_by": ["region"],
        "aggregates": [{"function": "sum", "column": "amount", "alias": "total"}],
        "sort": [{"column": "total", "descending": true}],
        "limit": 5
    },
    "template": {"subtitle": "By region", "totals": true, "page_size": "a4"},
    "delivery": {"kind": "directory", "params": {"file_name": "sales-{job_id}.pdf"}}
}"#;

#[tokio::test]
async fn report_configurations_are_managed_and_validated() {
    let cluster = Cluster::builder().workers(0).start().await;

    let (code, out, err) = presswork(
        &cluster,
        "ada",
        &["--json", "reports", "create", "--file", "-"],
        SALES,
    )
    .await;
    assert_eq!(code, 0, "create: {err}");
    let created: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (created["version"].as_i64(), created["updated_by"].as_str()),
        (Some(1), Some("ada"))
    );
    assert_eq!(created["transformation"]["aggregates"][0]["alias"], "total");

    // The same name again is refused, and says what to do.
    let (code, _, err) = presswork(
        &cluster,
        "ada",
        &["reports", "create", "--file", "-"],
        SALES,
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");

    // `get --json` prints what `update` reads: edit it and give it back.
    let (code, out, err) = presswork(
        &cluster,
        "vera",
        &["--json", "reports", "get", "monthly-sales"],
        "",
    )
    .await;
    assert_eq!(code, 0, "a viewer reads configurations: {err}");
    let mut edited: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    edited["title"] = "Sales by region".into();
    let (code, out, err) = presswork(
        &cluster,
        "ada",
        &[
            "--json",
            "reports",
            "update",
            "--file",
            "-",
            "--expected-version",
            "1",
        ],
        &edited.to_string(),
    )
    .await;
    assert_eq!(code, 0, "update: {err}");
    let updated: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (updated["version"].as_i64(), updated["title"].as_str()),
        (Some(2), Some("Sales by region"))
    );

    // An update based on version 1 now loses: nothing changes.
    edited["title"] = "Lost update".into();
    let (code, _, err) = presswork(
        &cluster,
        "ada",
        &[
            "reports",
            "update",
            "--file",
            "-",
            "--expected-version",
            "1",
        ],
        &edited.to_string(),
    )
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("changed by someone else") && err.contains("version 2"),
        "{err}"
    );

    // Validation names every wrong field.
    let broken = SALES
        .replace(r#""path": "/srv/data/sales.csv""#, r#""path": "sales.csv""#)
        .replace(
            r#""column": "total", "descending""#,
            r#""column": "product", "descending""#,
        );
    let (code, _, err) = presswork(
        &cluster,
        "ada",
        &["reports", "update", "--file", "-"],
        &broken,
    )
    .await;
    assert_eq!(code, 7, "invalid argument: {err}");
    assert!(
        err.contains("source.params.path") && err.contains("transformation.sort[0].column"),
        "{err}"
    );
    let (_, out, _) = presswork(
        &cluster,
        "ada",
        &["--json", "reports", "get", "monthly-sales"],
        "",
    )
    .await;
    assert!(
        out.contains("Sales by region"),
        "a refused update changed nothing: {out}"
    );

    // Only administrators change configurations.
    for user in ["otto", "vera"] {
        let (code, _, err) =
            presswork(&cluster, user, &["reports", "delete", "monthly-sales"], "").await;
        assert_eq!(code, 6, "{user} may not delete: {err}");
        let other = SALES.replace("monthly-sales", &format!("by-{user}"));
        let (code, _, err) = presswork(
            &cluster,
            user,
            &["reports", "create", "--file", "-"],
            &other,
        )
        .await;
        assert_eq!(code, 6, "{user} may not create: {err}");
    }

    let (code, out, err) = presswork(&cluster, "otto", &["reports", "list"], "").await;
    assert_eq!(code, 0, "list: {err}");
    assert!(
        out.contains("monthly-sales") && out.contains("csv") && out.contains("directory"),
        "{out}"
    );

    let (code, _, err) =
        presswork(&cluster, "ada", &["reports", "delete", "monthly-sales"], "").await;
    assert_eq!(code, 0, "delete: {err}");
    let (code, _, err) = presswork(&cluster, "ada", &["reports", "get", "monthly-sales"], "").await;
    assert_eq!(code, 3, "gone: {err}");
    let (_, out, _) = presswork(&cluster, "ada", &["reports", "list"], "").await;
    assert!(out.contains("no report configurations"), "{out}");
}

/// A configuration built to make a huge answer (every sort key unknown, each problem listing
/// every column) and a 1 MB name get short INVALID_ARGUMENT answers; a file name with a newline
/// is refused on save, by the rule the worker applies when it runs the report.
#[tokio::test]
async fn refusals_stay_small_and_file_names_follow_the_workers_rule() {
    use presswork_proto::v1::report_service_client::ReportServiceClient;
    use presswork_proto::v1::{
        Connector, CreateReportRequest, GetReportRequest, ReportConfig, SortKey, Transformation,
    };
    use presswork_tests::cluster::Bearer;

    let cluster = Cluster::builder().workers(0).start().await;
    let mut reports = ReportServiceClient::with_interceptor(
        cluster.channel(),
        Bearer::token(cluster.token("ada")),
    );
    let connector = |kind: &str, params: &[(&str, &str)]| Connector {
        kind: kind.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let base = ReportConfig {
        name: "bounded".into(),
        source: Some(connector("sample", &[])),
        delivery: Some(connector("directory", &[])),
        ..Default::default()
    };
    let columns: Vec<String> = (0..200)
        .map(|i| format!("column-number-{i:04}-of-many"))
        .collect();
    let quadratic = ReportConfig {
        transformation: Some(Transformation {
            group_by: columns.clone(),
            sort: columns
                .iter()
                .map(|c| SortKey {
                    column: format!("not-{c}"),
                    descending: false,
                })
                .collect(),
            ..Default::default()
        }),
        ..base.clone()
    };
    let long_name = ReportConfig {
        name: "n".repeat(1 << 20),
        ..base.clone()
    };
    for (what, report) in [("quadratic", quadratic), ("1 MB name", long_name)] {
        let refused = reports
            .create_report(CreateReportRequest {
                report: Some(report),
            })
            .await
            .expect_err(what);
        assert_eq!(
            refused.code(),
            tonic::Code::InvalidArgument,
            "{what}: {refused:?}"
        );
        assert!(
            refused.message().len() < 8 * 1024,
            "{what}: {} bytes",
            refused.message().len()
        );
    }
    let refused = reports
        .get_report(GetReportRequest {
            name: "N".repeat(1 << 20),
        })
        .await
        .expect_err("not a name");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().len() < 1024,
        "{} bytes",
        refused.message().len()
    );

    for bad in ["a\nb.pdf", "a\\b.pdf", "a\0b.pdf"] {
        let refused = reports
            .create_report(CreateReportRequest {
                report: Some(ReportConfig {
                    delivery: Some(connector("directory", &[("file_name", bad)])),
                    ..base.clone()
                }),
            })
            .await
            .expect_err(bad);
        assert_eq!(
            refused.code(),
            tonic::Code::InvalidArgument,
            "{bad:?}: {refused:?}"
        );
        assert!(
            refused.message().contains("delivery.params.file_name"),
            "{}",
            refused.message()
        );
    }
}
