//! Stored report configurations run end to end: a job submitted by a configuration's name
//! runs that configuration as it was at submission, on a real worker, and delivers its PDF;
//! a cancel mid-ingest of a large input stops it and leaves no file behind.

use presswork_proto::v1::aggregate::Function;
use presswork_proto::v1::report_service_client::ReportServiceClient;
use presswork_proto::v1::{
    Aggregate, Connector, CreateReportRequest, JobStatus, ReportConfig, SortKey, Stage, Template,
    Transformation, UpdateReportRequest,
};
use presswork_tests::cluster::Bearer;
use presswork_tests::{Cluster, LONG_WAIT};

fn by_region(name: &str, source: Connector, title: &str) -> ReportConfig {
    ReportConfig {
        name: name.into(),
        title: title.into(),
        source: Some(source),
        transformation: Some(Transformation {
            group_by: vec!["region".into()],
            aggregates: vec![Aggregate {
                function: Function::Sum as i32,
                column: "amount".into(),
                alias: "total".into(),
            }],
            sort: vec![SortKey {
                column: "total".into(),
                descending: true,
            }],
            ..Default::default()
        }),
        template: Some(Template {
            totals: true,
            ..Default::default()
        }),
        delivery: Some(Connector {
            kind: "directory".into(),
            params: [("file_name".to_string(), format!("{name}-{{job_id}}.pdf"))].into(),
        }),
        ..Default::default()
    }
}

fn sample() -> Connector {
    Connector {
        kind: "sample".into(),
        params: Default::default(),
    }
}

#[tokio::test]
async fn a_configured_report_runs_as_submitted_and_can_be_cancelled() {
    let cluster = Cluster::builder().workers(1).start().await;
    let mut reports = ReportServiceClient::with_interceptor(
        cluster.channel(),
        Bearer::token(cluster.token("ada")),
    );
    reports
        .create_report(CreateReportRequest {
            report: Some(by_region("regional", sample(), "Regional sales v1")),
        })
        .await
        .expect("create the configuration");

    let job = cluster.submit("regional", &[]).await;
    // Changed after the submit: the job still runs the configuration it was submitted with.
    reports
        .update_report(UpdateReportRequest {
            report: Some(by_region("regional", sample(), "Regional sales v2")),
            expected_version: 1,
        })
        .await
        .expect("update the configuration");
    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{done:?}");
    assert!(
        done.output.ends_with(&format!("regional-{}.pdf", job.id)),
        "{}",
        done.output
    );
    let pdf = std::fs::read(&done.output).expect("the delivered PDF");
    assert!(pdf.starts_with(b"%PDF-"));
    let has = |text: &str| pdf.windows(text.len()).any(|w| w == text.as_bytes());
    assert!(
        has("Regional sales v1") && !has("Regional sales v2"),
        "the submitted configuration ran"
    );
    assert!(
        has("(total)") && has("(Total)"),
        "the aggregate column and the totals line"
    );

    // A large input, cancelled while it is read: CANCELLED in ingest, and no file delivered.
    let big = cluster.dir().join("big.csv");
    let mut csv = String::from("region,amount\n");
    for i in 0..400_000 {
        csv.push_str(&format!("r{},{}.5\n", i % 97, i % 1000));
    }
    std::fs::write(&big, csv).expect("write the large input");
    let source = Connector {
        kind: "csv".into(),
        params: [("path".to_string(), big.display().to_string())].into(),
    };
    reports
        .create_report(CreateReportRequest {
            report: Some(by_region("big", source, "Big")),
        })
        .await
        .expect("create the large configuration");
    // Cancelled as soon as its ingest starts: the worker checks the token per batch of rows,
    // long before 400,000 rows are read.
    let job = cluster.submit("big", &[]).await;
    cluster.wait_for_stage_started(&job.id, Stage::Ingest).await;
    cluster
        .cancel(&job.id, "too big")
        .await
        .expect("cancel accepted");
    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    assert_eq!(done.status(), JobStatus::Cancelled, "{done:?}");
    let cancel = done.cancel.expect("cancel milestones");
    assert_eq!(cancel.stopped_stage(), Stage::Ingest, "{cancel:?}");
    let delivered: Vec<_> = std::fs::read_dir(cluster.output_dir(0))
        .expect("output dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("big-"))
        .collect();
    assert!(
        delivered.is_empty(),
        "a cancelled job leaves no report: {delivered:?}"
    );
}
