//! Ingest: reads sales rows from a CSV file (streamed line by line) or the bundled sample.
//!
//! The reader is deliberately simple: comma-separated fields, no quoting, a header line that
//! names at least the columns `region`, `product`, `quarter` and `amount` (any order, any case).

use std::path::PathBuf;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{StageContext, StageError};

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
}

impl Input {
    /// How the input is named in logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Input::Sample => "sample data".to_string(),
            Input::File(path) => path.display().to_string(),
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
                format!(
                    "line {}: amount `{amount}` is not a number",
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

/// Reads every row of `input`, reporting progress and stopping when the token fires.
pub async fn run(ctx: &StageContext, input: &Input) -> Result<Vec<SalesRow>, StageError> {
    let failed = |problem: String| {
        StageError::Failed(format!(
            "cannot read {}: {problem}; fix the input or pass another input=PATH",
            input.describe()
        ))
    };
    let mut parser = SalesCsvParser::default();
    let mut rows = Vec::new();
    match input {
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
            let file = ctx
                .cancellable(tokio::fs::File::open(path))
                .await?
                .map_err(|e| failed(e.to_string()))?;
            let size = ctx
                .cancellable(file.metadata())
                .await?
                .map_err(|e| failed(e.to_string()))?
                .len()
                .max(1);
            let mut lines = BufReader::new(file).lines();
            let mut consumed = 0u64;
            while let Some(line) = ctx
                .cancellable(lines.next_line())
                .await?
                .map_err(|e| failed(e.to_string()))?
            {
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
        assert_eq!(error, "line 2: amount `lots` is not a number");
        let error = parse_all("region,quarter\n").expect_err("missing columns");
        assert!(error.contains("product, amount"), "{error}");
        let error = parse_all("region,product,quarter,amount\nNorth,W\n").expect_err("short");
        assert!(
            error.starts_with("line 2: expected at least 4 fields"),
            "{error}"
        );
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
        let rows = run(&ctx, &Input::File(path.clone())).await.expect("reads");
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
        let error = run(&ctx, &Input::File(dir.path().join("nope.csv")))
            .await
            .expect_err("no such file");
        let StageError::Failed(message) = error else {
            panic!("expected a failure, got {error:?}");
        };
        assert!(message.contains("pass another input=PATH"), "{message}");
    }
}
