//! What a job may reach and how much it may read, on the real worker against a scripted
//! control plane: records and lines are bounded (an endless `/dev/zero` fails the job, the
//! worker stays up), `input=` stays under `--data-dir`, files and deliveries stay in their
//! directories, HTTP reaches public addresses only unless `--allow-hosts` says otherwise
//! (redirects too), and PostgreSQL sources refuse privileged roles and cancel their query on
//! the server.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use presswork_proto::v1::connect_response::Msg as ControlMsg;
use presswork_proto::v1::job_finished::Result as Outcome;
use presswork_proto::v1::{Connector, JobFinished, ReportConfig, Stage, Template, Transformation};
use presswork_worker::reach::{AllowedHosts, Reach};
use sqlx::Connection;

use support::http::TestServer;
use support::*;

fn connector(kind: &str, params: &[(&str, &str)]) -> Connector {
    Connector {
        kind: kind.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A report that reads `source` and publishes its rows as they are.
fn report(source: Connector, delivery: Connector) -> ReportConfig {
    ReportConfig {
        name: "reach".into(),
        title: "Reach".into(),
        source: Some(source),
        transformation: Some(Transformation::default()),
        template: Some(Template::default()),
        delivery: Some(delivery),
        ..Default::default()
    }
}

fn failed(finished: &JobFinished) -> (i32, String) {
    match &finished.result {
        Some(Outcome::Failed(failed)) => (failed.stage, failed.error.clone()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn succeeded(finished: &JobFinished) -> String {
    match &finished.result {
        Some(Outcome::Succeeded(done)) => done.output.clone(),
        other => panic!("expected success, got {other:?}"),
    }
}

async fn started(reach: Reach) -> (Harness, Stream) {
    let mut h = start_with(false, reach).await;
    let (stream, _) = h.next_stream().await;
    stream.send(welcome(60_000));
    (h, stream)
}

/// Runs job `id` to its outcome and acknowledges it.
async fn run(stream: &mut Stream, id: &str, msg: ControlMsg) -> JobFinished {
    stream.send(msg);
    let finished = stream.outcome().await;
    assert_eq!(finished.job.as_ref().map(|j| j.job_id.as_str()), Some(id));
    stream.send(outcome_ack(id));
    finished
}

fn data_dir(dir: &Path) -> Reach {
    Reach {
        data_dir: Some(dir.to_path_buf()),
        ..Reach::default()
    }
}

#[tokio::test]
async fn an_endless_input_fails_at_the_limit_and_the_worker_stays_up() {
    // /dev/zero is one line without end: unbounded, the worker grew ~250 MB/s until it aborted.
    let (h, mut stream) = started(Reach {
        data_dir: Some(PathBuf::from("/dev")),
        ..Reach::default()
    })
    .await;
    let csv = report(
        connector("csv", &[("path", "/dev/zero")]),
        connector("directory", &[]),
    );
    let finished = run(&mut stream, "zero-csv", assign_config("zero-csv", csv)).await;
    let (stage, error) = failed(&finished);
    assert_eq!(stage, Stage::Ingest as i32);
    assert!(
        error.starts_with(
            "cannot read CSV file /dev/zero: record 1 (from line 1) is longer than the 1 MiB limit"
        ),
        "{error}"
    );
    let jsonl = report(
        connector("jsonl", &[("path", "/dev/zero")]),
        connector("directory", &[]),
    );
    let (_, error) = failed(
        &run(
            &mut stream,
            "zero-jsonl",
            assign_config("zero-jsonl", jsonl),
        )
        .await,
    );
    assert!(error.contains("line 1 is longer than"), "{error}");
    let finished = run(
        &mut stream,
        "zero-demo",
        assign("zero-demo", "demo-fast", &[("input", "/dev/zero")]),
    )
    .await;
    let (stage, error) = failed(&finished);
    assert_eq!(stage, Stage::Ingest as i32);
    assert!(
        error.starts_with("cannot read /dev/zero: line 1 is longer than the 1 MiB limit"),
        "{error}"
    );
    // The worker is still up and runs the next job.
    let finished = run(&mut stream, "after", assign("after", "demo-fast", &[])).await;
    succeeded(&finished);
    h.stop().await;
}

#[tokio::test]
async fn a_10_mib_line_fails_the_demo_report_naming_the_line() {
    let data = tempfile::tempdir().expect("tempdir");
    let long = format!(
        "region,product,quarter,amount\nnorth,pens,Q1,{}\n",
        "1".repeat(10 << 20)
    );
    std::fs::write(data.path().join("long.csv"), long).expect("write");
    let (h, mut stream) = started(data_dir(data.path())).await;
    let finished = run(
        &mut stream,
        "long",
        assign("long", "demo-fast", &[("input", "long.csv")]),
    )
    .await;
    let (_, error) = failed(&finished);
    assert!(
        error.contains("long.csv: line 2 is longer than the 1 MiB limit"),
        "{error}"
    );
    h.stop().await;
}

#[tokio::test]
async fn input_outside_the_data_directory_is_refused() {
    let data = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        data.path().join("sales.csv"),
        "region,product,quarter,amount\nnorth,pens,Q1,2\n",
    )
    .expect("write");
    let (h, mut stream) = started(data_dir(data.path())).await;
    let inside = run(
        &mut stream,
        "inside",
        assign("inside", "demo-fast", &[("input", "sales.csv")]),
    )
    .await;
    succeeded(&inside);
    for (id, input, expected) in [
        ("parent", "../x", "contains `..`"),
        (
            "passwd",
            "/etc/passwd",
            "is outside the directories this worker allows",
        ),
    ] {
        let finished = run(
            &mut stream,
            id,
            assign(id, "demo-fast", &[("input", input)]),
        )
        .await;
        let (_, error) = failed(&finished);
        assert!(error.contains(expected), "{input}: {error}");
        assert!(
            !error.contains("root:"),
            "nothing of the file is shown: {error}"
        );
    }
    h.stop().await;

    // Without a data directory, input= is refused altogether.
    let (h, mut stream) = started(Reach::default()).await;
    let path = data.path().join("sales.csv");
    let finished = run(
        &mut stream,
        "no-data-dir",
        assign(
            "no-data-dir",
            "demo-fast",
            &[("input", path.to_str().unwrap())],
        ),
    )
    .await;
    let (_, error) = failed(&finished);
    assert!(
        error.contains("parameter input is refused: this worker has no data directory"),
        "{error}"
    );
    h.stop().await;
}

#[tokio::test]
async fn file_sources_and_deliveries_stay_in_the_allowed_directories() {
    let data = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let csv = "region,amount\nnorth,1\n";
    std::fs::write(data.path().join("in.csv"), csv).expect("write");
    std::fs::write(elsewhere.path().join("out.csv"), csv).expect("write");
    let (h, mut stream) = started(data_dir(data.path())).await;
    let allowed = data.path().join("in.csv");
    let outside = elsewhere.path().join("out.csv");
    let config = |path: &Path, delivery: Connector| {
        report(
            connector("csv", &[("path", path.to_str().unwrap())]),
            delivery,
        )
    };
    let finished = run(
        &mut stream,
        "in",
        assign_config("in", config(&allowed, connector("directory", &[]))),
    )
    .await;
    succeeded(&finished);
    let finished = run(
        &mut stream,
        "out",
        assign_config("out", config(&outside, connector("directory", &[]))),
    )
    .await;
    let (stage, error) = failed(&finished);
    assert_eq!(stage, Stage::Ingest as i32);
    assert!(
        error.contains("is outside the directories this worker allows"),
        "{error}"
    );
    let sqlite = format!("sqlite://{}/x.db", elsewhere.path().display());
    std::fs::write(elsewhere.path().join("x.db"), b"").expect("write");
    let finished = run(
        &mut stream,
        "sqlite",
        assign_config(
            "sqlite",
            report(
                connector("sql", &[("url", &sqlite), ("query", "SELECT 1")]),
                connector("directory", &[]),
            ),
        ),
    )
    .await;
    let (_, error) = failed(&finished);
    assert!(
        error.contains("is outside the directories this worker allows"),
        "{error}"
    );
    let to = elsewhere.path().to_str().unwrap();
    let finished = run(
        &mut stream,
        "deliver-out",
        assign_config(
            "deliver-out",
            config(&allowed, connector("directory", &[("path", to)])),
        ),
    )
    .await;
    let (stage, error) = failed(&finished);
    assert_eq!(stage, Stage::Deliver as i32);
    assert!(
        error.contains("is outside the directories this worker allows"),
        "{error}"
    );
    assert_eq!(
        entries(elsewhere.path()).len(),
        2,
        "no report was delivered there"
    );
    h.stop().await;
}

#[tokio::test]
async fn http_reaches_loopback_only_when_allowed_and_redirects_are_checked() {
    let server = TestServer::start().await;
    server.put_file("a.csv", "region,amount\nnorth,1\n");
    let port = server.addr.port();
    let (h, mut stream) = started(Reach::default()).await;
    let url = server.url("/files/a.csv");
    let finished = run(
        &mut stream,
        "loopback",
        assign_config(
            "loopback",
            report(
                connector("http", &[("url", &url)]),
                connector("directory", &[]),
            ),
        ),
    )
    .await;
    let (stage, error) = failed(&finished);
    assert_eq!(stage, Stage::Ingest as i32);
    assert!(
        error.contains("the worker may not connect to 127.0.0.1")
            && error.contains("--allow-hosts"),
        "{error}"
    );
    // localhost is a name: refused when it is resolved.
    let by_name = format!("http://localhost:{port}/files/a.csv");
    let finished = run(
        &mut stream,
        "localhost",
        assign_config(
            "localhost",
            report(
                connector("http", &[("url", &by_name)]),
                connector("directory", &[]),
            ),
        ),
    )
    .await;
    let (_, error) = failed(&finished);
    assert!(error.contains("may not connect to localhost"), "{error}");
    // An upload to loopback is refused too.
    let upload = server.url("/upload/ok");
    let finished = run(
        &mut stream,
        "upload",
        assign_config(
            "upload",
            report(
                connector("sample", &[]),
                connector("http", &[("url", &upload)]),
            ),
        ),
    )
    .await;
    let (stage, error) = failed(&finished);
    assert_eq!(stage, Stage::Deliver as i32);
    assert!(error.contains("may not connect to 127.0.0.1"), "{error}");
    assert_eq!(server.attempts("ok"), 0);
    h.stop().await;

    // localhost allowed by name, 127.0.0.1 not: the name works, a redirect from it to the
    // address is refused.
    let (h, mut stream) = started(Reach {
        allow_hosts: AllowedHosts::parse(&["localhost".into()]).expect("valid"),
        ..Reach::default()
    })
    .await;
    let finished = run(
        &mut stream,
        "allowed",
        assign_config(
            "allowed",
            report(
                connector("http", &[("url", &by_name)]),
                connector("directory", &[]),
            ),
        ),
    )
    .await;
    succeeded(&finished);
    let redirect = format!("http://localhost:{port}/redirect/{port}/a.csv");
    let finished = run(
        &mut stream,
        "redirect",
        assign_config(
            "redirect",
            report(
                connector("http", &[("url", &redirect)]),
                connector("directory", &[]),
            ),
        ),
    )
    .await;
    let (_, error) = failed(&finished);
    assert!(
        error.contains("a redirect was refused: the worker may not connect to 127.0.0.1"),
        "{error}"
    );
    h.stop().await;
}

/// Runs `sql` as root's `postgres` user (peer authentication), or says why it cannot.
fn as_postgres_superuser(sql: &str) -> Result<(), String> {
    let output = std::process::Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            "psql",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .map_err(|e| format!("cannot run runuser: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Against PostgreSQL when PRESSWORK_TEST_POSTGRES_URL is set and the test may act as the
/// `postgres` OS user (root): a superuser role of its own is refused, then allowed with
/// --allow-privileged-sql-roles.
#[tokio::test]
async fn a_privileged_postgres_role_is_refused_unless_allowed() {
    let Ok(url) = std::env::var("PRESSWORK_TEST_POSTGRES_URL") else {
        eprintln!("PRESSWORK_TEST_POSTGRES_URL is not set; skipping");
        return;
    };
    let role = format!("presswork_super_{}", uuid::Uuid::new_v4().simple());
    if let Err(why) = as_postgres_superuser(&format!(
        "CREATE ROLE {role} SUPERUSER LOGIN PASSWORD 'test-password'"
    )) {
        eprintln!("cannot create a superuser role as the postgres OS user ({why}); skipping");
        return;
    }
    let parsed = reqwest::Url::parse(&url).expect("a URL");
    let host = parsed.host_str().unwrap_or("127.0.0.1");
    let port = parsed.port().unwrap_or(5432);
    let super_url = format!("postgres://{role}:test-password@{host}:{port}/postgres");
    let source = connector("sql", &[("url", &super_url), ("query", "SELECT 1 AS one")]);

    // The test server is on loopback: allowed here, the role is what is refused.
    let (h, mut stream) = started(test_reach()).await;
    let finished = run(
        &mut stream,
        "super",
        assign_config("super", report(source.clone(), connector("directory", &[]))),
    )
    .await;
    h.stop().await;
    let (h2, mut stream2) = started(Reach {
        allow_privileged_sql_roles: true,
        ..test_reach()
    })
    .await;
    let allowed = run(
        &mut stream2,
        "super-allowed",
        assign_config("super-allowed", report(source, connector("directory", &[]))),
    )
    .await;
    h2.stop().await;
    let _ = as_postgres_superuser(&format!("DROP ROLE {role}"));

    let (stage, error) = failed(&finished);
    assert_eq!(stage, Stage::Ingest as i32);
    assert!(
        error.contains(&format!("the role `{role}`")) && error.contains("is a superuser"),
        "{error}"
    );
    assert!(error.contains("--allow-privileged-sql-roles"), "{error}");
    assert!(!error.contains("test-password"), "{error}");
    succeeded(&allowed);
}

/// Against PostgreSQL when PRESSWORK_TEST_POSTGRES_URL is set: a SQL source reaches a
/// database on loopback (or another non-public address) only when `--allow-hosts` lists it.
#[tokio::test]
async fn a_database_on_loopback_is_reached_only_when_allowed() {
    let Ok(url) = std::env::var("PRESSWORK_TEST_POSTGRES_URL") else {
        eprintln!("PRESSWORK_TEST_POSTGRES_URL is not set; skipping");
        return;
    };
    let source = connector("sql", &[("url", &url), ("query", "SELECT 1 AS one")]);
    let (h, mut stream) = started(Reach::default()).await;
    let refused = run(
        &mut stream,
        "closed",
        assign_config(
            "closed",
            report(source.clone(), connector("directory", &[])),
        ),
    )
    .await;
    h.stop().await;
    let (stage, error) = failed(&refused);
    assert_eq!(stage, Stage::Ingest as i32);
    assert!(
        error.contains("may not connect") && error.contains("--allow-hosts"),
        "{error}"
    );
    assert!(
        !error.contains("presswork@"),
        "the error shows credentials: {error}"
    );

    let (h, mut stream) = started(test_reach()).await;
    let allowed = run(
        &mut stream,
        "open",
        assign_config("open", report(source, connector("directory", &[]))),
    )
    .await;
    h.stop().await;
    succeeded(&allowed);
}

/// How many other sessions run a query that contains `marker`.
async fn running(monitor: &mut sqlx::PgConnection, marker: &str) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    );
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
        .fetch_one(monitor)
        .await
        .expect("pg_stat_activity")
}

/// Against PostgreSQL when PRESSWORK_TEST_POSTGRES_URL is set: a cancelled job's query stops
/// on the server (PostgreSQL does not notice a closed connection while pg_sleep runs).
#[tokio::test]
async fn a_cancelled_postgres_query_stops_on_the_server() {
    let Ok(url) = std::env::var("PRESSWORK_TEST_POSTGRES_URL") else {
        eprintln!("PRESSWORK_TEST_POSTGRES_URL is not set; skipping");
        return;
    };
    let marker = format!("presswork_cancel_{}", uuid::Uuid::new_v4().simple());
    let query = format!("SELECT pg_sleep(60) AS slept, '{marker}' AS marker");
    let mut monitor = sqlx::PgConnection::connect(&url).await.expect("connect");
    let (h, mut stream) = started(test_reach()).await;
    stream.send(assign_config(
        "sleep",
        report(
            connector("sql", &[("url", &url), ("query", &query)]),
            connector("directory", &[]),
        ),
    ));
    stream.until_stage(Stage::Ingest).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while running(&mut monitor, &marker).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the query never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stream.send(cancel("sleep"));
    let finished = stream.outcome().await;
    assert!(
        matches!(finished.result, Some(Outcome::Cancelled(_))),
        "{finished:?}"
    );
    stream.send(outcome_ack("sleep"));
    // Well under the query's 60 s: without a cancel request it runs to its end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while running(&mut monitor, &marker).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cancelled job's query still runs on the server after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stop().await;
}
