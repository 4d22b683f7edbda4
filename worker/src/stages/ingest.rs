//! Ingest: reads sales rows from a CSV file (streamed line by line), the bundled sample, or a
//! source connector (an out-of-process plug-in, see [`crate::plugin`]).
//!
//! The CSV reader is deliberately simple: comma-separated fields, no quoting, lines of at most
//! [`MAX_LINE_BYTES`], a header line that names at least the columns `region`, `product`, `quarter` and `amount` (any order, any
//! case). A connector sends the same fields as JSON objects.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use presswork_proto::v1::LogLevel;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use super::{StageContext, StageError};
use crate::plugin::protocol::{
    ConnectorMessage, MessageLevel, PROTOCOL_VERSION, StartMessage, StartTag,
};
use crate::plugin::{ConnectorProgram, ConnectorRun};
use crate::reach::Reach;
use crate::stages::sources::jsonl::MAX_LINE_BYTES;

/// Log lines a connector may add with `log` messages per run; more are dropped.
const MAX_CONNECTOR_LOG_LINES: usize = 200;
/// Longest `log` message copied (in characters); longer ones are cut.
const MAX_CONNECTOR_LOG_CHARS: usize = 2000;

/// The bundled sample: 240 sales rows over five regions.
pub const SAMPLE_SALES_CSV: &str = include_str!("../../data/sales.csv");

/// Lines parsed between two looks at the token when reading the in-memory sample.
const CHUNK_LINES: usize = 64;

/// Where the rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The bundled sample ([`SAMPLE_SALES_CSV`]).
    Sample,
    /// A CSV file on the worker's disk.
    File(PathBuf),
    /// A source connector registered on the worker (`source=NAME`).
    Connector(SourceConnector),
}

/// A source connector and what the job passes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConnector {
    pub program: ConnectorProgram,
    /// The job's `source.KEY=VALUE` parameters, without the prefix.
    pub params: BTreeMap<String, String>,
    /// How long it has to exit after SIGTERM before it is SIGKILLed.
    pub grace: Duration,
}

impl Input {
    /// How the input is named in logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Input::Sample => "sample data".to_string(),
            Input::File(path) => path.display().to_string(),
            Input::Connector(source) => format!("connector `{}`", source.program.name),
        }
    }
}

/// One sale.
#[derive(Debug, Clone, PartialEq)]
pub struct SalesRow {
    pub region: String,
    pub product: String,
    pub quarter: String,
    pub amount: f64,
}

const COLUMNS: [&str; 4] = ["region", "product", "quarter", "amount"];

/// Parses CSV lines one at a time: the first non-empty line is the header.
#[derive(Debug, Default)]
pub struct SalesCsvParser {
    /// Index of region, product, quarter, amount in a line, once the header was read.
    columns: Option<[usize; 4]>,
    line_number: usize,
}

impl SalesCsvParser {
    /// Parses the next line: `Ok(None)` for the header and blank lines. Errors name the line
    /// and the problem.
    pub fn parse_line(&mut self, line: &str) -> Result<Option<SalesRow>, String> {
        self.line_number += 1;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(None);
        }
        if line.contains('"') {
            return Err(format!(
                "line {}: quoted fields are not supported; remove the quotes (and any commas inside them)",
                self.line_number
            ));
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let Some(columns) = self.columns else {
            self.columns = Some(header_columns(&fields)?);
            return Ok(None);
        };
        let needed = columns.iter().max().map_or(0, |max| max + 1);
        if fields.len() < needed {
            return Err(format!(
                "line {}: expected at least {needed} fields, found {}",
                self.line_number,
                fields.len()
            ));
        }
        let [region, product, quarter, amount] = columns.map(|index| fields[index]);
        let amount = amount
            .parse::<f64>()
            .ok()
            .filter(|amount| amount.is_finite())
            .ok_or_else(|| {
                // The value is not quoted: errors are shown to every viewer of the job.
                format!(
                    "line {}: the amount is not a number; write it with digits and a `.` (e.g. 1234.5)",
                    self.line_number
                )
            })?;
        Ok(Some(SalesRow {
            region: region.to_string(),
            product: product.to_string(),
            quarter: quarter.to_string(),
            amount,
        }))
    }

    /// Whether a header line was seen (an input without one is empty).
    pub fn saw_header(&self) -> bool {
        self.columns.is_some()
    }
}

fn header_columns(fields: &[&str]) -> Result<[usize; 4], String> {
    let find = |name: &str| fields.iter().position(|f| f.eq_ignore_ascii_case(name));
    let found = COLUMNS.map(find);
    if let [Some(region), Some(product), Some(quarter), Some(amount)] = found {
        return Ok([region, product, quarter, amount]);
    }
    let missing: Vec<&str> = COLUMNS
        .iter()
        .zip(found)
        .filter(|(_, index)| index.is_none())
        .map(|(name, _)| *name)
        .collect();
    Err(format!(
        "line 1: the header lacks the column(s) {}; expected a header naming {}",
        missing.join(", "),
        COLUMNS.join(",")
    ))
}

/// Reads every row of `input`, reporting progress and stopping when the token fires. A file
/// must be under the worker's `--data-dir` ([`Reach::data_input`]), and no line may be longer
/// than [`MAX_LINE_BYTES`].
pub async fn run(
    ctx: &StageContext,
    input: &Input,
    reach: &Reach,
) -> Result<Vec<SalesRow>, StageError> {
    let failed = |problem: String| {
        StageError::Failed(format!(
            "cannot read {}: {problem}; fix the input or pass another input=PATH",
            input.describe()
        ))
    };
    let mut parser = SalesCsvParser::default();
    let mut rows = Vec::new();
    match input {
        Input::Connector(source) => {
            let program = &source.program;
            let mut rows: Vec<SalesRow> = Vec::new();
            from_connector(ctx, source, |batch| {
                for object in &batch {
                    let row = sales_row(object, rows.len() + 1)
                        .map_err(|problem| StageError::Failed(program.protocol_error(&problem)))?;
                    rows.push(row);
                }
                Ok(())
            })
            .await?;
            ctx.progress(1.0);
            ctx.log(format!(
                "read {} rows from {}",
                rows.len(),
                input.describe()
            ));
            return Ok(rows);
        }
        Input::Sample => {
            let total = SAMPLE_SALES_CSV.lines().count().max(1);
            for (index, line) in SAMPLE_SALES_CSV.lines().enumerate() {
                if index % CHUNK_LINES == 0 {
                    ctx.check()?;
                    tokio::task::yield_now().await;
                }
                rows.extend(parser.parse_line(line).map_err(failed)?);
                ctx.progress(index as f64 / total as f64);
            }
        }
        Input::File(path) => {
            let path = ctx
                .cancellable(reach.data_input(path))
                .await?
                .map_err(failed)?;
            let file = ctx
                .cancellable(tokio::fs::File::open(&path))
                .await?
                .map_err(|e| failed(e.to_string()))?;
            let size = ctx
                .cancellable(file.metadata())
                .await?
                .map_err(|e| failed(e.to_string()))?
                .len()
                .max(1);
            let codec = LinesCodec::new_with_max_length(MAX_LINE_BYTES);
            let mut lines = FramedRead::new(file, codec);
            let mut consumed = 0u64;
            let mut line_number = 0u64;
            while let Some(line) = ctx.cancellable(lines.next()).await? {
                line_number += 1;
                let line = line.map_err(|error| match error {
                    LinesCodecError::MaxLineLengthExceeded => failed(format!(
                        "line {line_number} is longer than the {} MiB limit",
                        MAX_LINE_BYTES / (1024 * 1024)
                    )),
                    LinesCodecError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        failed(format!(
                            "line {line_number} is not UTF-8; save the file as UTF-8"
                        ))
                    }
                    LinesCodecError::Io(e) => failed(e.to_string()),
                })?;
                consumed += line.len() as u64 + 1;
                rows.extend(parser.parse_line(&line).map_err(failed)?);
                ctx.progress(consumed as f64 / size as f64);
            }
        }
    }
    if !parser.saw_header() {
        return Err(failed(format!(
            "it is empty; expected a header naming {}",
            COLUMNS.join(",")
        )));
    }
    ctx.progress(1.0);
    ctx.log(format!(
        "read {} rows from {}",
        rows.len(),
        input.describe()
    ));
    Ok(rows)
}

/// How reading from a connector stopped.
enum ConnectorEnd {
    /// It sent `done`.
    Done,
    /// It sent `error`.
    Reported(String),
    /// It closed its stdout without `done`.
    Closed,
    /// It broke the protocol or sent a bad row; the worker stops it.
    Broken(String),
    /// The job's token fired.
    Cancelled,
}

/// Runs a source connector and hands each batch of rows to `take` (which may refuse it with
/// `Failed`, or stop with `Cancelled`). Messages are read one at a time as the stage takes
/// them, so a connector that writes faster blocks on its pipe; the connector is stopped
/// (cancel message and SIGTERM, SIGKILL after the grace), reaped and its process group emptied
/// on every path, and what happened is written to the job log.
pub(crate) async fn from_connector(
    ctx: &StageContext,
    source: &SourceConnector,
    mut take: impl FnMut(Vec<serde_json::Map<String, serde_json::Value>>) -> Result<(), StageError>,
) -> Result<(), StageError> {
    let program = &source.program;
    let name = &program.name;
    let work_dir = ctx
        .work_dir()
        .join(format!("connector-{}", ctx.stage().short_name()));
    ctx.cancellable(tokio::fs::create_dir_all(&work_dir))
        .await?
        .map_err(|e| {
            StageError::Failed(format!(
                "cannot create the work directory {} of connector `{name}`: {e}; check --work-dir",
                work_dir.display()
            ))
        })?;
    let start = StartMessage {
        kind: StartTag::Start,
        protocol: PROTOCOL_VERSION,
        connector: name.clone(),
        stage: ctx.stage().short_name().to_string(),
        job_id: ctx.job_id().to_string(),
        attempt: ctx.attempt(),
        params: source.params.clone(),
        work_dir: work_dir.display().to_string(),
    };
    let stderr = ctx.log_sink(LogLevel::Info, format!("connector `{name}` stderr: "));
    let mut run = ConnectorRun::start(program, &start, stderr)
        .await
        .map_err(StageError::Failed)?;
    ctx.log(format!(
        "connector `{name}` started: pid {pid}, process group {pid}",
        pid = run.pid()
    ));

    let mut logged = 0;
    let end = loop {
        let message = tokio::select! {
            biased;
            _ = ctx.token().cancelled() => break ConnectorEnd::Cancelled,
            message = run.next_message() => message,
        };
        match message {
            Ok(Some(ConnectorMessage::Rows { rows: batch })) => match take(batch) {
                Ok(()) => {}
                Err(StageError::Cancelled) => break ConnectorEnd::Cancelled,
                Err(StageError::Failed(problem)) => break ConnectorEnd::Broken(problem),
            },
            Ok(Some(ConnectorMessage::Progress { fraction })) => ctx.progress(fraction),
            Ok(Some(ConnectorMessage::Log { level, message })) => {
                if logged < MAX_CONNECTOR_LOG_LINES {
                    let level = match level {
                        MessageLevel::Info => LogLevel::Info,
                        MessageLevel::Warn => LogLevel::Warn,
                        MessageLevel::Error => LogLevel::Error,
                    };
                    let message: String = message.chars().take(MAX_CONNECTOR_LOG_CHARS).collect();
                    ctx.log_at(level, format!("connector `{name}`: {message}"));
                    logged += 1;
                }
            }
            Ok(Some(ConnectorMessage::Done)) => break ConnectorEnd::Done,
            Ok(Some(ConnectorMessage::Error { message })) => break ConnectorEnd::Reported(message),
            Ok(None) => break ConnectorEnd::Closed,
            Err(problem) => break ConnectorEnd::Broken(problem),
        }
    };

    let grace = source.grace;
    let log_ending = |ending: &crate::plugin::Ending| {
        let level = if ending.succeeded() && ending.leftovers.is_empty() {
            LogLevel::Info
        } else {
            LogLevel::Warn
        };
        ctx.log_at(
            level,
            format!("connector `{name}` {}", ending.describe(grace)),
        );
    };
    match end {
        ConnectorEnd::Cancelled => {
            let reason = ctx.cancel_reason().unwrap_or_else(|| "cancelled".into());
            let ending = run.cancel(&reason, grace).await;
            log_ending(&ending);
            Err(StageError::Cancelled)
        }
        ConnectorEnd::Broken(problem) => {
            let ending = run.cancel("protocol error", grace).await;
            log_ending(&ending);
            Err(StageError::Failed(problem))
        }
        ConnectorEnd::Reported(message) => {
            let ending = run.finish(grace).await;
            log_ending(&ending);
            Err(StageError::Failed(format!(
                "connector `{name}` reported an error: {}",
                message
                    .chars()
                    .take(MAX_CONNECTOR_LOG_CHARS)
                    .collect::<String>()
            )))
        }
        ConnectorEnd::Closed => {
            let ending = run.finish(grace).await;
            log_ending(&ending);
            Err(StageError::Failed(format!(
                "connector `{name}` {} without sending done; see its stderr lines in this log, and check it with `presswork-worker connector-check {}`",
                ending.describe(grace),
                program.path.display()
            )))
        }
        ConnectorEnd::Done => {
            let ending = run.finish(grace).await;
            log_ending(&ending);
            if ending.succeeded() {
                Ok(())
            } else {
                Err(StageError::Failed(program.protocol_error(&format!(
                    "it sent done, then {}; a connector exits with status 0 after done",
                    ending.describe(grace)
                ))))
            }
        }
    }
}

/// A sales row from a connector's JSON object: `region`, `product` and `quarter` (strings or
/// numbers) and `amount` (a number, or a string holding one). `number` counts from 1.
fn sales_row(
    object: &serde_json::Map<String, serde_json::Value>,
    number: usize,
) -> Result<SalesRow, String> {
    use serde_json::Value;
    let text = |field: &str| match object.get(field) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Number(number)) => Ok(number.to_string()),
        // The value is not quoted: errors are shown to every viewer of the job.
        Some(other) => Err(format!(
            "row {number}: field `{field}` is {}, not a string",
            json_kind(other)
        )),
        None => Err(format!(
            "row {number}: field `{field}` is missing; each row needs region, product, quarter and amount"
        )),
    };
    let amount = match object.get("amount") {
        Some(Value::Number(amount)) => amount.as_f64(),
        Some(Value::String(amount)) => amount.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|amount| amount.is_finite())
    .ok_or_else(|| {
        format!(
            "row {number}: field `amount` is {}, not a number",
            object.get("amount").map_or("missing", json_kind)
        )
    })?;
    Ok(SalesRow {
        region: text("region")?,
        product: text("product")?,
        quarter: text("quarter")?,
        amount,
    })
}

/// What kind of JSON value `value` is, for errors that must not quote it.
fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::testing;
    use presswork_proto::v1::Stage;

    fn parse_all(text: &str) -> Result<Vec<SalesRow>, String> {
        let mut parser = SalesCsvParser::default();
        let mut rows = Vec::new();
        for line in text.lines() {
            rows.extend(parser.parse_line(line)?);
        }
        Ok(rows)
    }

    #[test]
    fn parses_columns_in_any_order() {
        let rows = parse_all("Amount,Quarter,Region,Product,extra\n12.5,Q1,North,Widget,x\n\n")
            .expect("valid csv");
        assert_eq!(
            rows,
            vec![SalesRow {
                region: "North".into(),
                product: "Widget".into(),
                quarter: "Q1".into(),
                amount: 12.5
            }]
        );
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let error = parse_all("region,product,quarter,amount\nNorth,W,Q1,lots\n")
            .expect_err("amount is not a number");
        assert_eq!(
            error,
            "line 2: the amount is not a number; write it with digits and a `.` (e.g. 1234.5)"
        );
        let error = parse_all("region,product,quarter,amount\nNorth,W,Q1,SECRET-42\n")
            .expect_err("amount is not a number");
        assert!(
            !error.contains("SECRET"),
            "a cell's value is not echoed: {error}"
        );
        let error = parse_all("region,quarter\n").expect_err("missing columns");
        assert!(error.contains("product, amount"), "{error}");
        let error = parse_all("region,product,quarter,amount\nNorth,W\n").expect_err("short");
        assert!(
            error.starts_with("line 2: expected at least 4 fields"),
            "{error}"
        );
    }

    #[test]
    fn connector_rows_become_sales_rows() {
        let object = |json: &str| -> serde_json::Map<String, serde_json::Value> {
            serde_json::from_str(json).expect("an object")
        };
        assert_eq!(
            sales_row(
                &object(r#"{"region":"North","product":"W","quarter":"Q1","amount":"12.5","x":1}"#),
                1
            ),
            Ok(SalesRow {
                region: "North".into(),
                product: "W".into(),
                quarter: "Q1".into(),
                amount: 12.5
            })
        );
        let row = sales_row(
            &object(r#"{"region":"N","product":7,"quarter":2024,"amount":3}"#),
            1,
        )
        .expect("numbers as text");
        assert_eq!((row.product.as_str(), row.quarter.as_str()), ("7", "2024"));
        let error = sales_row(&object(r#"{"region":"N","product":"W","quarter":"Q1"}"#), 7)
            .expect_err("no amount");
        assert_eq!(error, "row 7: field `amount` is missing, not a number");
        let error = sales_row(
            &object(r#"{"region":["N"],"product":"W","quarter":"Q1","amount":1}"#),
            2,
        )
        .expect_err("a list");
        assert_eq!(error, "row 2: field `region` is an array, not a string");
        let error = sales_row(
            &object(r#"{"region":"N","product":"W","quarter":"Q1","amount":"SECRET"}"#),
            4,
        )
        .expect_err("text amount");
        assert_eq!(error, "row 4: field `amount` is text, not a number");
        let error = sales_row(&object(r#"{"product":"W","quarter":"Q1","amount":1}"#), 3)
            .expect_err("no region");
        assert!(error.contains("field `region` is missing"), "{error}");
    }

    #[test]
    fn the_sample_has_a_few_hundred_rows() {
        let rows = parse_all(SAMPLE_SALES_CSV).expect("the sample parses");
        assert_eq!(rows.len(), 240);
    }

    #[tokio::test]
    async fn reads_a_file_and_logs_what_it_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sales.csv");
        std::fs::write(
            &path,
            "region,product,quarter,amount\nNorth,W,Q1,1\nSouth,W,Q1,2\n",
        )
        .expect("write csv");
        let (ctx, _control, mut rx) = testing::context(Stage::Ingest, dir.path());
        let rows = run(&ctx, &Input::File(path.clone()), &data_dir(dir.path()))
            .await
            .expect("reads");
        assert_eq!(rows.len(), 2);
        let mut logged = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            if let Some(presswork_proto::v1::connect_request::Msg::Log(line)) = msg.msg {
                logged.push(line.message);
            }
        }
        assert_eq!(logged, vec![format!("read 2 rows from {}", path.display())]);
    }

    #[tokio::test]
    async fn a_missing_file_fails_with_advice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ctx, _control, _rx) = testing::context(Stage::Ingest, dir.path());
        let error = run(
            &ctx,
            &Input::File(dir.path().join("nope.csv")),
            &data_dir(dir.path()),
        )
        .await
        .expect_err("no such file");
        let StageError::Failed(message) = error else {
            panic!("expected a failure, got {error:?}");
        };
        assert!(message.contains("pass another input=PATH"), "{message}");
    }

    fn data_dir(dir: &std::path::Path) -> Reach {
        Reach {
            data_dir: Some(dir.to_path_buf()),
            ..Reach::default()
        }
    }

    async fn failure(input: &str, reach: &Reach) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ctx, _control, _rx) = testing::context(Stage::Ingest, dir.path());
        match run(&ctx, &Input::File(input.into()), reach).await {
            Err(StageError::Failed(message)) => message,
            other => panic!("expected a failure for {input}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_endless_line_fails_at_the_limit() {
        // /dev/zero is one line without end: without a limit the worker's memory grows until
        // it aborts.
        let message = failure("/dev/zero", &data_dir(std::path::Path::new("/dev"))).await;
        assert!(
            message.contains("line 1 is longer than the 1 MiB limit"),
            "{message}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let long = format!("region,product,quarter,amount\n{}\n", "x".repeat(10 << 20));
        std::fs::write(dir.path().join("long.csv"), long).expect("write");
        let message = failure("long.csv", &data_dir(dir.path())).await;
        assert!(
            message.contains("line 2 is longer than the 1 MiB limit"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn input_outside_the_data_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let message = failure("/etc/passwd", &Reach::default()).await;
        assert!(message.contains("no data directory"), "{message}");
        let message = failure("/etc/passwd", &data_dir(dir.path())).await;
        assert!(message.contains("outside the directories"), "{message}");
        let message = failure("../x", &data_dir(dir.path())).await;
        assert!(message.contains("contains `..`"), "{message}");
    }
}
