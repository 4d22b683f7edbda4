//! Transform: aggregates sales by region (row count, total and average amount) for the
//! built-in reports; for a configured report, finishes its [`Transformer`] (sort and limit):
//! the rows were already pushed into it as the ingest stage streamed them.

use std::collections::BTreeMap;

use super::ingest::SalesRow;
use super::{StageContext, StageError};
use crate::table::{Table, Transformer};

/// Rows aggregated between two looks at the token.
const CHUNK_ROWS: usize = 4096;

/// The sales of one region.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionTotals {
    pub region: String,
    pub rows: u64,
    pub total: f64,
}

impl RegionTotals {
    /// The average amount of a sale in the region.
    pub fn average(&self) -> f64 {
        if self.rows == 0 {
            0.0
        } else {
            self.total / self.rows as f64
        }
    }
}

/// Sales by region, sorted by region name, with the grand totals.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SalesSummary {
    pub regions: Vec<RegionTotals>,
    pub rows: u64,
    pub total: f64,
}

/// Adds rows to running per-region totals.
#[derive(Debug, Default)]
pub struct RegionAggregator {
    regions: BTreeMap<String, (u64, f64)>,
}

impl RegionAggregator {
    /// Adds `rows` to the totals.
    pub fn add(&mut self, rows: &[SalesRow]) {
        for row in rows {
            let (count, total) = self.regions.entry(row.region.clone()).or_default();
            *count += 1;
            *total += row.amount;
        }
    }

    /// The totals so far.
    pub fn finish(self) -> SalesSummary {
        let regions: Vec<RegionTotals> = self
            .regions
            .into_iter()
            .map(|(region, (rows, total))| RegionTotals {
                region,
                rows,
                total,
            })
            .collect();
        SalesSummary {
            rows: regions.iter().map(|r| r.rows).sum(),
            total: regions.iter().map(|r| r.total).sum(),
            regions,
        }
    }
}

/// Aggregates `rows` by region in chunks, looking at the token between chunks.
pub async fn run(ctx: &StageContext, rows: &[SalesRow]) -> Result<SalesSummary, StageError> {
    let mut aggregator = RegionAggregator::default();
    let chunks = rows.len().div_ceil(CHUNK_ROWS).max(1);
    for (index, chunk) in rows.chunks(CHUNK_ROWS).enumerate() {
        ctx.check()?;
        aggregator.add(chunk);
        ctx.progress((index + 1) as f64 / chunks as f64);
        tokio::task::yield_now().await;
    }
    ctx.check()?;
    let summary = aggregator.finish();
    ctx.progress(1.0);
    ctx.log(format!(
        "aggregated {} rows into {} regions",
        summary.rows,
        summary.regions.len()
    ));
    Ok(summary)
}

/// Finishes a configured report's transformation (its rows were pushed during ingest): sorts
/// and limits what it kept, and returns the table.
pub async fn finish_table(
    ctx: &StageContext,
    transformer: Transformer,
) -> Result<Table, StageError> {
    ctx.check()?;
    // Bounded work: the transformer holds at most MAX_RESULT_ROWS rows or groups.
    let table = transformer
        .finish()
        .map_err(|error| StageError::Failed(format!("cannot transform the rows: {error}")))?;
    ctx.check()?;
    ctx.progress(1.0);
    ctx.log(format!(
        "{} of {} rows passed the filters; the table has {} rows and {} columns",
        table.rows_kept,
        table.rows_read,
        table.rows.len(),
        table.columns.len()
    ));
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(region: &str, amount: f64) -> SalesRow {
        SalesRow {
            region: region.into(),
            product: "Widget".into(),
            quarter: "Q1".into(),
            amount,
        }
    }

    #[test]
    fn groups_by_region_with_count_sum_and_average() {
        let mut aggregator = RegionAggregator::default();
        aggregator.add(&[row("West", 10.0), row("East", 1.0), row("West", 20.0)]);
        let summary = aggregator.finish();
        assert_eq!(summary.rows, 3);
        assert_eq!(summary.total, 31.0);
        assert_eq!(
            summary
                .regions
                .iter()
                .map(|r| (r.region.as_str(), r.rows, r.total, r.average()))
                .collect::<Vec<_>>(),
            vec![("East", 1, 1.0, 1.0), ("West", 2, 30.0, 15.0)]
        );
    }

    #[tokio::test]
    async fn stops_when_the_token_fired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ctx, control, _rx) =
            crate::stages::testing::context(presswork_proto::v1::Stage::Transform, dir.path());
        control.cancel(crate::cancel::CancelReason::WorkerShutdown);
        let result = run(&ctx, &[row("West", 1.0)]).await;
        assert_eq!(result, Err(StageError::Cancelled));
    }
}
