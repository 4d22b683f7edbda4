//! Configured reports (AssignJob.config) end to end on the real worker against a scripted
//! control plane: every source kind, the transformation, the PDF read back, both deliveries,
//! cancels in each slow place, and failures that say what to do.

mod support;

use std::path::Path;

use presswork_proto::v1::aggregate::Function;
use presswork_proto::v1::connect_request::Msg;
use presswork_proto::v1::filter::Op;
use presswork_proto::v1::job_finished::Result as Outcome;
use presswork_proto::v1::{
    Aggregate, Connector, Filter, JobFinished, ReportConfig, SortKey, Stage, Template,
    Transformation,
};
use sqlx::Connection;

use support::http::{Event, TestServer};
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

fn report(source: Connector, transformation: Transformation, delivery: Connector) -> ReportConfig {
    ReportConfig {
        name: "test-report".into(),
        title: "Test report".into(),
        source: Some(source),
        transformation: Some(transformation),
        template: Some(Template::default()),
        delivery: Some(delivery),
        ..Default::default()
    }
}

fn aggregate(function: Function, column: &str, alias: &str) -> Aggregate {
    Aggregate {
        function: function as i32,
        column: column.into(),
        alias: alias.into(),
    }
}

fn sort(column: &str, descending: bool) -> SortKey {
    SortKey {
        column: column.into(),
        descending,
    }
}

/// A number as the PDF prints it: thousands grouped, no decimals when whole.
fn printed(n: f64) -> String {
    let decimals = if n.fract() == 0.0 { 0 } else { 2 };
    let fixed = format!("{:.*}", decimals, n.abs());
    let (whole, fraction) = fixed.split_once('.').unwrap_or((&fixed, ""));
    let mut out = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    if n < 0.0 { format!("-{out}") } else { out }
}

/// The words of the pages that start with `prefix`, in order.
fn words_starting(pages: &[String], prefix: &str) -> Vec<String> {
    pages
        .iter()
        .flat_map(|page| page.split_whitespace())
        .filter(|word| word.starts_with(prefix))
        .map(String::from)
        .collect()
}

fn succeeded(finished: &JobFinished, logs: &[String]) -> String {
    match &finished.result {
        Some(Outcome::Succeeded(done)) => done.output.clone(),
        other => panic!("expected success, got {other:?} after {logs:?}"),
    }
}

fn failed(finished: &JobFinished) -> (i32, String) {
    match &finished.result {
        Some(Outcome::Failed(failed)) => (failed.stage, failed.error.clone()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn cancelled_in(finished: &JobFinished) -> i32 {
    match &finished.result {
        Some(Outcome::Cancelled(cancelled)) => {
            assert!(!cancelled.forced, "stopped by its own code, not aborted");
            cancelled.stage
        }
        other => panic!("expected a cancel, got {other:?}"),
    }
}

async fn started() -> (Harness, Stream) {
    let mut h = start(false).await;
    let (stream, hello) = h.next_stream().await;
    assert!(hello.runs_configurations, "the worker runs configurations");
    stream.send(welcome(60_000));
    (h, stream)
}

#[tokio::test]
async fn a_csv_file_is_filtered_grouped_aggregated_sorted_limited_and_delivered() {
    let data = tempfile::tempdir().expect("tempdir");
    let path = data.path().join("sales.csv");
    let mut csv = String::from("region,product,note,amount\n");
    let mut expected: Vec<(String, f64, u64, f64)> = Vec::new();
    for i in 0..3000u64 {
        let region = format!("region-{:02}", (i * 7) % 60);
        let amount: i64 = if i % 10 == 0 {
            -5
        } else {
            ((i * 13) % 97) as i64
        };
        csv.push_str(&format!(
            "{region},{},\"note, with \"\"quotes\"\" {i}\",{amount}\n",
            ["pens", "ink", "paper"][(i % 3) as usize]
        ));
        if amount > 0 {
            match expected.iter_mut().find(|(r, ..)| *r == region) {
                Some((_, total, count, max)) => {
                    *total += amount as f64;
                    *count += 1;
                    *max = max.max(amount as f64);
                }
                None => expected.push((region, amount as f64, 1, amount as f64)),
            }
        }
    }
    std::fs::write(&path, csv).expect("write the CSV");
    let passed: u64 = expected.iter().map(|e| e.2).sum();
    // Stable: equal totals keep the order in which their groups first appeared.
    expected.sort_by(|a, b| b.1.total_cmp(&a.1));
    expected.truncate(50);

    let mut config = report(
        connector("csv", &[("path", path.to_str().unwrap())]),
        Transformation {
            filters: vec![Filter {
                column: "amount".into(),
                op: Op::Gt as i32,
                value: "0".into(),
            }],
            group_by: vec!["region".into()],
            aggregates: vec![
                aggregate(Function::Sum, "amount", "total"),
                aggregate(Function::Count, "", ""),
                aggregate(Function::Max, "amount", "biggest"),
            ],
            sort: vec![sort("total", true)],
            limit: 50,
            columns: vec![],
        },
        connector("directory", &[("file_name", "sales-{job_id}.pdf")]),
    );
    config.template = Some(Template {
        subtitle: "Positive sales by region".into(),
        totals: true,
        page_size: "letter".into(),
    });

    let (h, mut stream) = started().await;
    stream.send(assign_config("job-csv", config));
    let (seen, finished) = stream.run_to_outcome().await;
    let output = succeeded(&finished, &seen.logs);
    assert_eq!(
        Path::new(&output),
        h.output.path().join("sales-job-csv.pdf")
    );
    assert_eq!(entries(h.output.path()), ["sales-job-csv.pdf"]);
    assert!(is_empty(h.work.path()), "the work directory is removed");
    assert_eq!(seen.stages, [1, 2, 3, 4]);
    assert!(
        seen.logs
            .contains(&format!("read 3000 rows from CSV file {}", path.display())),
        "{:?}",
        seen.logs
    );
    assert!(
        seen.logs.iter().any(|l| *l
            == format!(
                "{passed} of 3000 rows passed the filters; the table has 50 rows and 4 columns"
            )),
        "{:?}",
        seen.logs
    );

    let pages = pdf_pages(&std::fs::read(&output).expect("the report"));
    assert_eq!(pages.len(), 2, "50 rows and the totals on Letter");
    assert!(pages[0].contains("Test report") && pages[0].contains("Positive sales by region"));
    assert!(pages[0].contains("Generated") && pages[0].contains("Page 1 of 2"));
    assert!(pages[1].contains("Test report (continued)") && pages[1].contains("Page 2 of 2"));
    for header in ["region", "total", "count", "biggest"] {
        assert!(
            pages.iter().all(|p| p.contains(header)),
            "header {header} on every page"
        );
    }
    let regions: Vec<String> = expected.iter().map(|(r, ..)| r.clone()).collect();
    assert_eq!(
        words_starting(&pages, "region-"),
        regions,
        "the rows, in order"
    );
    let first = &expected[0];
    assert!(
        pages[0].contains(&printed(first.1)) && pages[0].contains(&printed(first.2 as f64)),
        "{}",
        pages[0]
    );
    let grand: f64 = expected.iter().map(|e| e.1).sum();
    let rows: u64 = expected.iter().map(|e| e.2).sum();
    assert!(
        pages[1].contains("Total")
            && pages[1].contains(&printed(grand))
            && pages[1].contains(&printed(rows as f64)),
        "totals {} and {} on the last page: {}",
        printed(grand),
        printed(rows as f64),
        pages[1]
    );
    stream.send(outcome_ack("job-csv"));
    h.stop().await;
}

#[tokio::test]
async fn json_lines_keep_their_types_and_columns_and_are_uploaded_by_http() {
    let data = tempfile::tempdir().expect("tempdir");
    let path = data.path().join("people.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"name":"Ann","amount":1200.5,"active":true,"tags":["a"]}"#,
            "\n\n",
            r#"{"name":"Bob","amount":50,"active":false,"tags":[]}"#,
            "\r\n",
            r#"{"name":"Cy","amount":"7","active":null,"tags":["b","c"]}"#,
            "\n",
            r#"{"name":"Di","amount":300,"active":true}"#,
            "\n",
        ),
    )
    .expect("write");
    let mut server = TestServer::start().await;
    let config = report(
        connector("jsonl", &[("path", path.to_str().unwrap())]),
        Transformation {
            columns: vec!["name".into(), "amount".into(), "active".into()],
            sort: vec![sort("amount", true)],
            limit: 3,
            ..Default::default()
        },
        connector("http", &[("url", &server.url("/upload/ok?sig=secret"))]),
    );
    let (h, mut stream) = started().await;
    stream.send(assign_config("job-jsonl", config));
    let (seen, finished) = stream.run_to_outcome().await;
    let output = succeeded(&finished, &seen.logs);
    assert_eq!(
        output,
        server.url("/upload/ok?…"),
        "the query string is not shown"
    );
    assert!(
        seen.logs.iter().any(|l| l.starts_with(&format!(
            "delivered to {} (HTTP 201 Created, attempt 1 of 4)",
            server.url("/upload/ok?…")
        ))),
        "{:?}",
        seen.logs
    );
    server
        .wait_for(|e| matches!(e, Event::Upload { status: 201, .. }))
        .await;
    let uploads = server.state.uploads.lock().unwrap().clone();
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        (uploads[0].method.as_str(), uploads[0].job_id.as_str()),
        ("PUT", "job-jsonl")
    );
    let pages = pdf_pages(&uploads[0].body);
    assert_eq!(pages.len(), 1);
    // The string "7" is text and sorts after the numbers; Cy's null `active` is empty.
    let names: Vec<String> = pages[0]
        .split_whitespace()
        .filter(|w| ["Ann", "Bob", "Cy", "Di"].contains(w))
        .map(String::from)
        .collect();
    assert_eq!(names, ["Cy", "Ann", "Di"], "{}", pages[0]);
    assert!(
        pages[0].contains("1,200.50") && pages[0].contains("true"),
        "{}",
        pages[0]
    );
    assert!(is_empty(h.output.path()) && is_empty(h.work.path()));
    stream.send(outcome_ack("job-jsonl"));
    h.stop().await;
}

async fn sales_table_sqlite(path: &Path) {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.expect("create");
    sqlx::raw_sql(
        "CREATE TABLE sales (region TEXT, product TEXT, amount REAL, qty INTEGER);
         INSERT INTO sales VALUES ('north','pens',10.5,1),('south','ink',4,2),
           ('north','ink',2,3),('east','paper',NULL,4),('south','pens',20,5);",
    )
    .execute(&mut db)
    .await
    .expect("fill");
    db.close().await.expect("close");
}

fn by_region() -> Transformation {
    Transformation {
        group_by: vec!["region".into()],
        aggregates: vec![
            aggregate(Function::Sum, "amount", "total"),
            aggregate(Function::Avg, "amount", "mean"),
            aggregate(Function::Sum, "qty", "items"),
        ],
        sort: vec![sort("region", false)],
        ..Default::default()
    }
}

#[tokio::test]
async fn an_sqlite_query_is_read_only_and_streams_typed_rows() {
    let data = tempfile::tempdir().expect("tempdir");
    let db = data.path().join("sales.db");
    sales_table_sqlite(&db).await;
    let out = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", db.display());
    let mut config = report(
        connector(
            "sql",
            &[
                ("url", &url),
                (
                    "query",
                    "WITH s AS (SELECT * FROM sales) SELECT region, amount, qty FROM s",
                ),
            ],
        ),
        by_region(),
        connector("directory", &[("path", out.path().to_str().unwrap())]),
    );
    config.template.as_mut().unwrap().totals = true;
    let (h, mut stream) = started().await;
    stream.send(assign_config("job-sql", config.clone()));
    let (seen, finished) = stream.run_to_outcome().await;
    let output = succeeded(&finished, &seen.logs);
    assert_eq!(
        Path::new(&output),
        out.path().join("job-sql.pdf"),
        "delivery.params.path"
    );
    assert!(
        seen.logs
            .contains(&format!("read 5 rows from the query on {url}")),
        "{:?}",
        seen.logs
    );
    let pages = pdf_pages(&std::fs::read(&output).expect("the report"));
    let text = &pages[0];
    assert_eq!(words_starting(&pages, "east").len(), 1);
    for expected in [
        "north", "12.50", "6.25", "south", "24", "12", "Total", "36.50", "15",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }

    // A write is refused before any stage runs, and the file is not changed.
    let mut writing = config.clone();
    writing.source = Some(connector(
        "sql",
        &[("url", &url), ("query", "DELETE FROM sales")],
    ));
    stream.send(assign_config("job-write", writing));
    let (stage, error) = failed(&stream.outcome().await);
    assert_eq!(stage, Stage::Unspecified as i32);
    assert!(
        error.contains(
            "source.params.query: must be one read-only query starting with SELECT or WITH"
        ),
        "{error}"
    );
    // A query the database refuses says so, with its SQLSTATE but not its message (which may
    // quote the data).
    stream.send(assign_config("job-missing", {
        let mut c = config.clone();
        c.source = Some(connector(
            "sql",
            &[("url", &url), ("query", "SELECT nope FROM sales")],
        ));
        c
    }));
    let (stage, error) = failed(&stream.outcome().await);
    assert_eq!(stage, Stage::Ingest as i32);
    assert!(
        error.starts_with(&format!(
            "cannot read the query on {url}: the query failed:"
        )) && error.contains("the database answered with an error (SQLSTATE ")
            && !error.contains("nope")
            && error.ends_with(
                "check source.params.query against the database (one SELECT, read only)"
            ),
        "{error}"
    );
    let mut db = sqlx::SqliteConnection::connect(&url).await.expect("open");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM sales")
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(count, 5);
    assert!(is_empty(h.work.path()));
    for id in ["job-sql", "job-write", "job-missing"] {
        stream.send(outcome_ack(id));
    }
    h.stop().await;
}

/// Against PostgreSQL when PRESSWORK_TEST_POSTGRES_URL is set (an account with CREATEDB): a
/// uniquely named table in a database of its own, both dropped after.
#[tokio::test]
async fn a_postgres_query_streams_typed_rows_in_a_read_only_session() {
    let Ok(admin) = std::env::var("PRESSWORK_TEST_POSTGRES_URL") else {
        eprintln!("PRESSWORK_TEST_POSTGRES_URL is not set; skipping");
        return;
    };
    let suffix = uuid::Uuid::new_v4().simple();
    let database = format!("presswork_worker_test_{suffix}");
    let table = format!("presswork_sales_{suffix}");
    let mut server = sqlx::PgConnection::connect(&admin).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut server)
        .await
        .expect("create a test database");
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    let url = format!("{base}/{database}");
    let mut db = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (region text, product text, amount numeric(10,2), qty int8, day date);
         INSERT INTO {table} VALUES ('north','pens',10.5,1,'2025-01-20'),('south','ink',4,2,NULL),
           ('north','ink',2,3,'2025-01-21'),('east','paper',NULL,4,NULL),('south','pens',20,5,NULL);"
    )))
    .execute(&mut db)
    .await
    .expect("create the table");

    let query = format!("SELECT region, amount, qty, day FROM {table}");
    let mut config = report(
        connector("sql", &[("url", &url), ("query", &query)]),
        by_region(),
        connector("directory", &[]),
    );
    config.template.as_mut().unwrap().totals = true;
    let (h, mut stream) = started().await;
    stream.send(assign_config("job-pg", config.clone()));
    let (seen, finished) = stream.run_to_outcome().await;
    let outcome = finished.result.clone();
    // A data-modifying WITH fails: the session is read-only.
    let mut writing = config;
    writing.source = Some(connector(
        "sql",
        &[
            ("url", &url),
            (
                "query",
                &format!("WITH d AS (DELETE FROM {table} RETURNING *) SELECT * FROM d"),
            ),
        ],
    ));
    stream.send(assign_config("job-pg-write", writing));
    let write = stream.outcome().await;
    let remaining: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut db)
            .await
            .expect("count");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&mut db)
        .await
        .expect("drop the table");
    db.close().await.expect("close");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {database} WITH (FORCE)"
    )))
    .execute(&mut server)
    .await
    .expect("drop the test database");

    let Some(Outcome::Succeeded(done)) = outcome else {
        panic!("expected success, got {outcome:?} after {:?}", seen.logs);
    };
    let pages = pdf_pages(&std::fs::read(&done.output).expect("the report"));
    for expected in [
        "north", "12.50", "6.25", "south", "24", "12", "Total", "36.50", "15",
    ] {
        assert!(pages[0].contains(expected), "{expected} in {}", pages[0]);
    }
    assert!(
        !seen
            .logs
            .iter()
            .any(|l| l.contains("presswork@") && !l.contains("***")),
        "no password in the log: {:?}",
        seen.logs
    );
    let (stage, error) = failed(&write);
    assert_eq!(stage, Stage::Ingest as i32);
    // 25006: read_only_sql_transaction.
    assert!(error.contains("SQLSTATE 25006"), "{error}");
    assert_eq!(remaining, 5, "nothing was deleted");
    stream.send(outcome_ack("job-pg"));
    stream.send(outcome_ack("job-pg-write"));
    h.stop().await;
}

#[tokio::test]
async fn http_sources_stream_csv_and_json_lines() {
    let server = TestServer::start().await;
    server.put_file(
        "sales.csv",
        "region,amount\r\nnorth,10\r\nsouth,5\r\n\"north\",2.5\r\n",
    );
    server.put_file(
        "sales.jsonl",
        "{\"region\":\"west\",\"amount\":1}\n{\"region\":\"west\",\"amount\":2}\n",
    );
    let transformation = Transformation {
        group_by: vec!["region".into()],
        aggregates: vec![aggregate(Function::Sum, "amount", "total")],
        sort: vec![sort("total", true)],
        ..Default::default()
    };
    let (h, mut stream) = started().await;
    stream.send(assign_config(
        "job-http-csv",
        report(
            connector("http", &[("url", &server.url("/files/sales.csv"))]),
            transformation.clone(),
            connector("directory", &[]),
        ),
    ));
    let (seen, finished) = stream.run_to_outcome().await;
    let pages = pdf_pages(&std::fs::read(succeeded(&finished, &seen.logs)).expect("report"));
    assert_eq!(words_starting(&pages, "north").len(), 1);
    assert!(pages[0].contains("12.50"), "{}", pages[0]);

    stream.send(assign_config(
        "job-http-jsonl",
        report(
            connector(
                "http",
                &[
                    ("url", &server.url("/files/sales.jsonl")),
                    ("format", "jsonl"),
                ],
            ),
            transformation.clone(),
            connector("directory", &[]),
        ),
    ));
    let (seen, finished) = stream.run_to_outcome().await;
    let pages = pdf_pages(&std::fs::read(succeeded(&finished, &seen.logs)).expect("report"));
    assert!(
        pages[0].contains("west") && pages[0].contains('3'),
        "{}",
        pages[0]
    );

    stream.send(assign_config(
        "job-http-404",
        report(
            connector("http", &[("url", &server.url("/files/nope.csv"))]),
            transformation,
            connector("directory", &[]),
        ),
    ));
    let (stage, error) = failed(&stream.outcome().await);
    assert_eq!(stage, Stage::Ingest as i32);
    assert_eq!(
        error,
        format!(
            "cannot read CSV from {}: the server answered HTTP 404 Not Found; check source.params.url and source.params.format, and that the server answers the worker",
            server.url("/files/nope.csv")
        )
    );
    for id in ["job-http-csv", "job-http-jsonl", "job-http-404"] {
        stream.send(outcome_ack(id));
    }
    h.stop().await;
}

#[tokio::test]
async fn http_delivery_retries_what_may_pass_and_not_what_cannot() {
    let server = TestServer::start().await;
    let (h, mut stream) = started().await;
    stream.send(assign_config(
        "job-flaky",
        report(
            connector("sample", &[]),
            by_region(),
            connector(
                "http",
                &[("url", &server.url("/upload/flaky")), ("method", "POST")],
            ),
        ),
    ));
    let (seen, finished) = stream.run_to_outcome().await;
    succeeded(&finished, &seen.logs);
    assert_eq!(server.attempts("flaky"), 3, "503, 503, then 200");
    let retries: Vec<&String> = seen
        .logs
        .iter()
        .filter(|l| l.contains("retrying in"))
        .collect();
    assert_eq!(retries.len(), 2, "{:?}", seen.logs);
    assert!(
        retries[0].contains("HTTP 503 Service Unavailable (attempt 1 of 4); retrying in 200 ms"),
        "{}",
        retries[0]
    );
    assert!(retries[1].contains("retrying in 400 ms"), "{}", retries[1]);
    let uploads = server.state.uploads.lock().unwrap().clone();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].method, "POST");
    assert!(uploads[0].body.starts_with(b"%PDF"));

    stream.send(assign_config(
        "job-bad",
        report(
            connector("sample", &[]),
            by_region(),
            connector(
                "http",
                &[("url", &server.url("/upload/bad")), ("retries", "5")],
            ),
        ),
    ));
    let (stage, error) = failed(&stream.outcome().await);
    assert_eq!(stage, Stage::Deliver as i32);
    assert_eq!(
        error,
        format!(
            "cannot deliver to {}: the server answered PUT with HTTP 400 Bad Request (\"no such bucket\"), which says the request itself is wrong, so it was not retried; check delivery.params.url and delivery.params.method, and that the server accepts a PDF there",
            server.url("/upload/bad")
        )
    );
    assert_eq!(server.attempts("bad"), 1);
    assert!(is_empty(h.output.path()) && is_empty(h.work.path()));
    stream.send(outcome_ack("job-flaky"));
    stream.send(outcome_ack("job-bad"));
    h.stop().await;
}

#[tokio::test]
async fn a_cancel_stops_a_slow_download_and_drops_its_connection() {
    let mut server = TestServer::start().await;
    let (h, mut stream) = started().await;
    stream.send(assign_config(
        "job-slow",
        report(
            connector("http", &[("url", &server.url("/slow.csv"))]),
            by_region(),
            connector("directory", &[]),
        ),
    ));
    stream.until_stage(Stage::Ingest).await;
    server.wait_for(|e| *e == Event::SlowStarted).await;
    stream.send(cancel("job-slow"));
    let ack = loop {
        if let Msg::CancelAck(ack) = stream.next().await {
            break ack;
        }
    };
    assert_eq!(ack.stage, Stage::Ingest as i32);
    let finished = stream.outcome().await;
    assert_eq!(cancelled_in(&finished), Stage::Ingest as i32);
    server.wait_for(|e| *e == Event::SlowDropped).await;
    assert!(is_empty(h.output.path()) && is_empty(h.work.path()));
    stream.send(outcome_ack("job-slow"));
    h.stop().await;
}

#[tokio::test]
async fn a_cancel_during_a_retry_back_off_stops_the_delivery() {
    let server = TestServer::start().await;
    let (h, mut stream) = started().await;
    stream.send(assign_config(
        "job-down",
        report(
            connector("sample", &[]),
            by_region(),
            connector(
                "http",
                &[("url", &server.url("/upload/down")), ("retries", "10")],
            ),
        ),
    ));
    // The log line comes just before the wait: the cancel lands in the 400 ms back-off.
    stream.until_log("retrying in 400 ms").await;
    stream.send(cancel("job-down"));
    let ack = loop {
        if let Msg::CancelAck(ack) = stream.next().await {
            break ack;
        }
    };
    assert_eq!(ack.stage, Stage::Deliver as i32);
    assert!(!ack.past_point_of_no_return);
    let finished = stream.outcome().await;
    assert_eq!(cancelled_in(&finished), Stage::Deliver as i32);
    assert!(server.attempts("down") < 11, "it stopped retrying");
    assert!(server.state.uploads.lock().unwrap().is_empty());
    assert!(is_empty(h.output.path()) && is_empty(h.work.path()));
    stream.send(outcome_ack("job-down"));
    h.stop().await;
}

#[tokio::test]
async fn a_cancel_mid_ingest_of_a_large_csv_leaves_nothing() {
    let data = tempfile::tempdir().expect("tempdir");
    let path = data.path().join("large.csv");
    let mut csv = String::with_capacity(16 << 20);
    csv.push_str("region,product,amount\n");
    for i in 0..400_000u64 {
        csv.push_str(&support::http::generated_row(i));
    }
    std::fs::write(&path, csv).expect("write");
    let (h, mut stream) = started().await;
    stream.send(assign_config(
        "job-large",
        report(
            connector("csv", &[("path", path.to_str().unwrap())]),
            by_region(),
            connector("directory", &[]),
        ),
    ));
    stream.until_progress(Stage::Ingest).await;
    stream.send(cancel("job-large"));
    let finished = stream.outcome().await;
    assert_eq!(cancelled_in(&finished), Stage::Ingest as i32);
    assert!(is_empty(h.output.path()) && is_empty(h.work.path()));
    stream.send(outcome_ack("job-large"));
    h.stop().await;
}

#[tokio::test]
async fn text_where_a_sum_needs_numbers_fails_naming_the_column() {
    let data = tempfile::tempdir().expect("tempdir");
    let path = data.path().join("bad.csv");
    std::fs::write(&path, "region,amount\nnorth,12\nsouth,n/a\n").expect("write");
    let (h, mut stream) = started().await;
    stream.send(assign_config(
        "job-text",
        report(
            connector("csv", &[("path", path.to_str().unwrap())]),
            by_region(),
            connector("directory", &[]),
        ),
    ));
    let (stage, error) = failed(&stream.outcome().await);
    assert_eq!(stage, Stage::Ingest as i32);
    assert_eq!(
        error,
        format!(
            "cannot transform the rows of CSV file {}: column `amount` has text in row 2, but sum needs numbers; filter those rows out or aggregate another column",
            path.display()
        )
    );
    // A file that is not there says which and what to do.
    stream.send(assign_config(
        "job-missing",
        report(
            connector("csv", &[("path", "/nonexistent/presswork.csv")]),
            by_region(),
            connector("directory", &[]),
        ),
    ));
    let (_, error) = failed(&stream.outcome().await);
    assert!(
        error.starts_with("cannot read CSV file /nonexistent/presswork.csv: cannot resolve")
            && error.ends_with("fix the file, or point source.params.path at another (absolute, readable by the worker, under its --data-dir or --allow-dirs)"),
        "{error}"
    );
    assert!(is_empty(h.output.path()) && is_empty(h.work.path()));
    stream.send(outcome_ack("job-text"));
    stream.send(outcome_ack("job-missing"));
    h.stop().await;
}
