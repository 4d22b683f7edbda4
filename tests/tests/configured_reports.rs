//! Stored report configurations run end to end: a job submitted by a configuration's name
//! runs that configuration as it was at submission, on a real worker, and delivers its PDF;
//! a cancel mid-ingest of a large input stops it and leaves no file behind. Credentials are
//! secret references the worker resolves: never stored, never shown.

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

/// Serves `body` as CSV to requests whose query string has `token=TOKEN`, 403 to others.
async fn serve_csv(body: &'static str, token: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the CSV server");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let request_line = String::from_utf8_lossy(&head);
                let authorised = request_line
                    .lines()
                    .next()
                    .is_some_and(|line| line.contains(&format!("token={token} ")));
                let (status, body) = if authorised {
                    ("200 OK", body)
                } else {
                    ("403 Forbidden", "no")
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/csv\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn secret_references_are_resolved_by_the_worker_and_never_stored() {
    use presswork_tests::cluster::WORKER_BINARY;
    use presswork_tests::process::{Process, binary_path};

    let cluster = Cluster::builder().workers(0).start().await;
    let mut reports = ReportServiceClient::with_interceptor(
        cluster.channel(),
        Bearer::token(cluster.token("ada")),
    );
    let csv_server = serve_csv(
        "region,amount\nnorth,10\nsouth,32\nnorth,5\n",
        "s3cret-t0ken",
    )
    .await;

    // A worker whose environment holds the token, as an operator would start it.
    let output = cluster.dir().join("secrets-worker-output");
    let work = cluster.dir().join("secrets-worker-work");
    for dir in [&output, &work] {
        std::fs::create_dir_all(dir).expect("worker directories");
    }
    let args: Vec<String> = [
        "SALES_API_TOKEN=s3cret-t0ken".to_string(),
        binary_path(WORKER_BINARY).display().to_string(),
        "--control-plane".into(),
        cluster.url(),
        "--output-dir".into(),
        output.display().to_string(),
        "--work-dir".into(),
        work.display().to_string(),
        "--name".into(),
        "secrets-worker".into(),
        // The CSV server is on loopback, which workers do not reach by default.
        "--allow-hosts".into(),
        "127.0.0.1".into(),
        "--token".into(),
        cluster.worker_token().to_string(),
    ]
    .into();
    let _worker = Process::spawn(
        "secrets-worker",
        std::path::Path::new("/usr/bin/env"),
        &args,
        &cluster.dir().join("secrets-worker.log"),
    );

    // A token written out is refused, and nothing is stored.
    let source = |url: String| Connector {
        kind: "http".into(),
        params: [("url".to_string(), url)].into(),
    };
    let literal = reports
        .create_report(CreateReportRequest {
            report: Some(by_region(
                "api-sales",
                source(format!("http://{csv_server}/sales.csv?token=s3cret-t0ken")),
                "API sales",
            )),
        })
        .await
        .expect_err("a token written out is refused");
    assert_eq!(literal.code(), tonic::Code::InvalidArgument, "{literal:?}");
    assert!(
        literal.message().contains("${env:NAME} or ${file:NAME}")
            && !literal.message().contains("s3cret"),
        "{}",
        literal.message()
    );
    let postgres = by_region(
        "pg-sales",
        Connector {
            kind: "sql".into(),
            params: [
                (
                    "url".to_string(),
                    "postgres://u:pw@127.0.0.1/db".to_string(),
                ),
                ("query".to_string(), "select 1".to_string()),
            ]
            .into(),
        },
        "PG",
    );
    let refused = reports
        .create_report(CreateReportRequest {
            report: Some(postgres),
        })
        .await
        .expect_err("a password written out is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    // The reference is stored and shown as written; the worker puts the value in.
    let configured = source(format!(
        "http://{csv_server}/sales.csv?token=${{env:SALES_API_TOKEN}}"
    ));
    let created = reports
        .create_report(CreateReportRequest {
            report: Some(by_region("api-sales", configured.clone(), "API sales")),
        })
        .await
        .expect("a reference is accepted")
        .into_inner()
        .report
        .expect("report");
    assert_eq!(created.source, Some(configured));
    let job = cluster.submit("api-sales", &[]).await;
    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{done:?}");
    let pdf = std::fs::read(&done.output).expect("the delivered PDF");
    assert!(pdf.starts_with(b"%PDF-"));

    // A reference the worker cannot resolve fails the job, naming the reference.
    reports
        .create_report(CreateReportRequest {
            report: Some(by_region(
                "api-unset",
                source(format!(
                    "http://{csv_server}/sales.csv?token=${{env:PRESSWORK_TEST_NOT_SET}}"
                )),
                "Unset",
            )),
        })
        .await
        .expect("create");
    let job = cluster.submit("api-unset", &[]).await;
    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    assert_eq!(done.status(), JobStatus::Failed, "{done:?}");
    assert!(
        done.error
            .contains("the secret reference ${env:PRESSWORK_TEST_NOT_SET} cannot be resolved"),
        "{}",
        done.error
    );
}
