//! Rows, and the transformation a report configuration asks for (filters, group by with
//! aggregates, sort, limit), applied to rows as they stream in.
//!
//! [`Transformer::push`] takes one row at a time, so a source of any size can be read in
//! bounded memory: with grouping only the groups are held, with a sort and a limit only the
//! best `limit` rows, and otherwise at most [`MAX_RESULT_ROWS`] rows (a report table longer
//! than that is refused with a message saying to group or limit). Pure: no I/O, no clock.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use presswork_proto::v1::aggregate::Function;
use presswork_proto::v1::filter::Op;
use presswork_proto::v1::{Aggregate, Transformation};

/// The most rows a report's table may have: a PDF of more is not something a person reads.
pub const MAX_RESULT_ROWS: usize = 100_000;

/// One field of a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Number(f64),
    Text(String),
}

impl Value {
    /// A field read from text (CSV): a number when it parses as one, empty is null.
    pub fn parse(text: &str) -> Value {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Value::Null;
        }
        match trimmed.parse::<f64>() {
            Ok(n) if n.is_finite() => Value::Number(n),
            _ => Value::Text(text.to_owned()),
        }
    }

    /// How the field is shown in the PDF.
    pub fn display(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{n:.0}"),
            Value::Number(n) => format!("{n:.2}"),
            Value::Text(t) => t.clone(),
        }
    }

    /// Total order for sorting and grouping: nulls first, then numbers, then text.
    fn cmp_total(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Less,
            (_, Value::Null) => Ordering::Greater,
            (Value::Number(a), Value::Number(b)) => a.total_cmp(b),
            (Value::Number(_), Value::Text(_)) => Ordering::Less,
            (Value::Text(_), Value::Number(_)) => Ordering::Greater,
            (Value::Text(a), Value::Text(b)) => a.cmp(b),
        }
    }

    /// A hashable key for grouping (numbers by their bits, so 1 and 1.0 are one group).
    fn key(&self) -> GroupKey {
        match self {
            Value::Null => GroupKey::Null,
            Value::Number(n) => GroupKey::Number((n + 0.0).to_bits()),
            Value::Text(t) => GroupKey::Text(t.clone()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum GroupKey {
    Null,
    Number(u64),
    Text(String),
}

/// A row: its columns' names (shared) and its values, in the same order.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub columns: std::sync::Arc<[String]>,
    pub values: Vec<Value>,
}

impl Row {
    pub fn get(&self, column: &str) -> &Value {
        self.columns
            .iter()
            .position(|c| c == column)
            .and_then(|i| self.values.get(i))
            .unwrap_or(&Value::Null)
    }
}

/// The result: named columns and rows of values, ready for the PDF.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// How many input rows were read, and how many passed the filters.
    pub rows_read: u64,
    pub rows_kept: u64,
}

impl Table {
    /// The sums of the numeric columns (null where a column has no number), for a totals row.
    pub fn totals(&self) -> Vec<Value> {
        (0..self.columns.len())
            .map(|i| {
                let numbers: Vec<f64> = self
                    .rows
                    .iter()
                    .filter_map(|r| match r.get(i) {
                        Some(Value::Number(n)) => Some(*n),
                        _ => None,
                    })
                    .collect();
                if numbers.is_empty() {
                    Value::Null
                } else {
                    Value::Number(numbers.iter().sum())
                }
            })
            .collect()
    }
}

/// Why a transformation could not go on; the message says which column and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// The value itself is not named: errors are shown to every viewer of the job.
    #[error(
        "column `{column}` has text in row {row}, but {function} needs numbers; filter those rows out or aggregate another column"
    )]
    NotANumber {
        column: String,
        row: u64,
        function: &'static str,
    },
    #[error(
        "the report would have more than {MAX_RESULT_ROWS} rows; add a limit, or group the rows"
    )]
    TooManyRows,
    #[error("{0}")]
    Invalid(String),
}

struct CompiledFilter {
    column: String,
    op: Op,
    value: Value,
    text: String,
}

impl CompiledFilter {
    fn keeps(&self, row: &Row) -> bool {
        let field = row.get(&self.column);
        if self.op == Op::Contains {
            return match field {
                Value::Null => false,
                other => other.display().contains(&self.text),
            };
        }
        let ordering = match (field, &self.value) {
            (Value::Null, _) => return self.op == Op::Ne && self.value != Value::Null,
            (Value::Number(a), Value::Number(b)) => a.total_cmp(b),
            (a, _) => a.display().as_str().cmp(self.text.as_str()),
        };
        match self.op {
            Op::Eq => ordering == Ordering::Equal,
            Op::Ne => ordering != Ordering::Equal,
            Op::Lt => ordering == Ordering::Less,
            Op::Le => ordering != Ordering::Greater,
            Op::Gt => ordering == Ordering::Greater,
            Op::Ge => ordering != Ordering::Less,
            Op::Contains | Op::Unspecified => false,
        }
    }
}

#[derive(Clone)]
struct CompiledAggregate {
    function: Function,
    column: String,
}

/// The running state of one aggregate in one group.
#[derive(Clone, Debug)]
enum Acc {
    Count(u64),
    Sum(f64, u64),
    Avg(f64, u64),
    Min(Option<Value>),
    Max(Option<Value>),
}

impl Acc {
    fn new(function: Function) -> Acc {
        match function {
            Function::Count | Function::Unspecified => Acc::Count(0),
            Function::Sum => Acc::Sum(0.0, 0),
            Function::Avg => Acc::Avg(0.0, 0),
            Function::Min => Acc::Min(None),
            Function::Max => Acc::Max(None),
        }
    }

    fn add(
        &mut self,
        agg: &CompiledAggregate,
        row: &Row,
        row_number: u64,
    ) -> Result<(), TransformError> {
        if let Acc::Count(n) = self {
            if agg.column.is_empty() || *row.get(&agg.column) != Value::Null {
                *n += 1;
            }
            return Ok(());
        }
        let value = row.get(&agg.column);
        if *value == Value::Null {
            return Ok(());
        }
        let number = |function| match value {
            Value::Number(n) => Ok(*n),
            _ => Err(TransformError::NotANumber {
                column: agg.column.clone(),
                row: row_number,
                function,
            }),
        };
        match self {
            Acc::Count(_) => {}
            Acc::Sum(total, n) => {
                *total += number("sum")?;
                *n += 1;
            }
            Acc::Avg(total, n) => {
                *total += number("avg")?;
                *n += 1;
            }
            Acc::Min(best) => {
                if best
                    .as_ref()
                    .is_none_or(|b| value.cmp_total(b) == Ordering::Less)
                {
                    *best = Some(value.clone());
                }
            }
            Acc::Max(best) => {
                if best
                    .as_ref()
                    .is_none_or(|b| value.cmp_total(b) == Ordering::Greater)
                {
                    *best = Some(value.clone());
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Value {
        match self {
            Acc::Count(n) => Value::Number(n as f64),
            Acc::Sum(total, n) => {
                if n == 0 {
                    Value::Null
                } else {
                    Value::Number(total)
                }
            }
            Acc::Avg(total, n) => {
                if n == 0 {
                    Value::Null
                } else {
                    Value::Number(total / n as f64)
                }
            }
            Acc::Min(v) | Acc::Max(v) => v.unwrap_or(Value::Null),
        }
    }
}

/// A result row with its sort key, ordered so that the heap's top is the worst row kept.
struct Ranked {
    keys: Vec<(Value, bool)>,
    /// Arrival order: equal keys keep it (a stable sort).
    seq: u64,
    values: Vec<Value>,
}

impl Ranked {
    fn order(&self, other: &Self) -> Ordering {
        for ((a, descending), (b, _)) in self.keys.iter().zip(&other.keys) {
            let o = a.cmp_total(b);
            let o = if *descending { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        self.seq.cmp(&other.seq)
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.order(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order(other)
    }
}

enum Plan {
    /// No grouping: rows pass through (projected to `columns` when given).
    Rows {
        columns: Option<Vec<String>>,
        seen: Option<std::sync::Arc<[String]>>,
    },
    /// Group by `keys` (none: one group of every row), with aggregates.
    Groups {
        keys: Vec<String>,
        aggregates: Vec<CompiledAggregate>,
        names: Vec<String>,
        groups: HashMap<Vec<GroupKey>, (Vec<Value>, Vec<Acc>)>,
        order: Vec<Vec<GroupKey>>,
    },
}

/// Applies a [`Transformation`] to rows pushed one at a time.
pub struct Transformer {
    filters: Vec<CompiledFilter>,
    plan: Plan,
    sort: Vec<(String, bool)>,
    limit: Option<usize>,
    /// Rows so far (without grouping); with a sort and a limit, only the best `limit`.
    kept: BinaryHeap<Ranked>,
    unsorted: Vec<Vec<Value>>,
    next_seq: u64,
    read: u64,
    passed: u64,
}

impl Transformer {
    pub fn new(t: &Transformation) -> Result<Transformer, TransformError> {
        let filters = t
            .filters
            .iter()
            .map(|f| {
                let op = Op::try_from(f.op).unwrap_or(Op::Unspecified);
                if op == Op::Unspecified {
                    return Err(TransformError::Invalid(format!(
                        "filter on `{}` has no operator",
                        f.column
                    )));
                }
                Ok(CompiledFilter {
                    column: f.column.clone(),
                    op,
                    value: Value::parse(&f.value),
                    text: f.value.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let plan = if t.group_by.is_empty() && t.aggregates.is_empty() {
            Plan::Rows {
                columns: (!t.columns.is_empty()).then(|| t.columns.clone()),
                seen: None,
            }
        } else {
            let aggregates: Vec<CompiledAggregate> = t
                .aggregates
                .iter()
                .map(|a| CompiledAggregate {
                    function: Function::try_from(a.function).unwrap_or(Function::Unspecified),
                    column: a.column.clone(),
                })
                .collect();
            let names = t.aggregates.iter().map(Aggregate::result_name).collect();
            Plan::Groups {
                keys: t.group_by.clone(),
                aggregates,
                names,
                groups: HashMap::new(),
                order: Vec::new(),
            }
        };
        Ok(Transformer {
            filters,
            plan,
            sort: t
                .sort
                .iter()
                .map(|s| (s.column.clone(), s.descending))
                .collect(),
            limit: (t.limit > 0).then(|| usize::try_from(t.limit).unwrap_or(usize::MAX)),
            kept: BinaryHeap::new(),
            unsorted: Vec::new(),
            next_seq: 0,
            read: 0,
            passed: 0,
        })
    }

    /// Takes one input row.
    pub fn push(&mut self, row: &Row) -> Result<(), TransformError> {
        self.read += 1;
        if !self.filters.iter().all(|f| f.keeps(row)) {
            return Ok(());
        }
        self.passed += 1;
        match &mut self.plan {
            Plan::Rows { columns, seen } => {
                let names = match columns {
                    Some(columns) => &columns[..],
                    None => &seen.get_or_insert_with(|| row.columns.clone())[..],
                };
                let values = names.iter().map(|c| row.get(c).clone()).collect();
                let keys = self
                    .sort
                    .iter()
                    .map(|(c, d)| (row.get(c).clone(), *d))
                    .collect();
                self.keep(keys, values)
            }
            Plan::Groups {
                keys,
                aggregates,
                groups,
                order,
                ..
            } => {
                let key_values: Vec<Value> = keys.iter().map(|k| row.get(k).clone()).collect();
                let key: Vec<GroupKey> = key_values.iter().map(Value::key).collect();
                if !groups.contains_key(&key) {
                    if groups.len() >= MAX_RESULT_ROWS {
                        return Err(TransformError::TooManyRows);
                    }
                    order.push(key.clone());
                    groups.insert(
                        key.clone(),
                        (
                            key_values,
                            aggregates.iter().map(|a| Acc::new(a.function)).collect(),
                        ),
                    );
                }
                let (_, accs) = groups.get_mut(&key).expect("inserted above");
                for (acc, agg) in accs.iter_mut().zip(aggregates.iter()) {
                    acc.add(agg, row, self.read)?;
                }
                Ok(())
            }
        }
    }

    fn keep(&mut self, keys: Vec<(Value, bool)>, values: Vec<Value>) -> Result<(), TransformError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        match (self.sort.is_empty(), self.limit) {
            // In arrival order: stop keeping once the limit is reached.
            (true, limit) => {
                if limit.is_none_or(|l| self.unsorted.len() < l) {
                    if self.unsorted.len() >= MAX_RESULT_ROWS {
                        return Err(TransformError::TooManyRows);
                    }
                    self.unsorted.push(values);
                }
            }
            // Sorted with a limit: a heap of the best `limit` rows.
            (false, Some(limit)) => {
                self.kept.push(Ranked { keys, seq, values });
                if self.kept.len() > limit {
                    self.kept.pop();
                }
                if self.kept.len() > MAX_RESULT_ROWS {
                    return Err(TransformError::TooManyRows);
                }
            }
            (false, None) => {
                if self.kept.len() >= MAX_RESULT_ROWS {
                    return Err(TransformError::TooManyRows);
                }
                self.kept.push(Ranked { keys, seq, values });
            }
        }
        Ok(())
    }

    /// The result table.
    pub fn finish(mut self) -> Result<Table, TransformError> {
        let columns = match std::mem::replace(
            &mut self.plan,
            Plan::Rows {
                columns: None,
                seen: None,
            },
        ) {
            Plan::Rows { columns, seen } => {
                columns.unwrap_or_else(|| seen.map(|s| s.to_vec()).unwrap_or_default())
            }
            Plan::Groups {
                keys,
                names,
                aggregates,
                mut groups,
                order,
            } => {
                let columns: Vec<String> = keys.iter().cloned().chain(names).collect();
                let mut rows: Vec<Vec<Value>> = Vec::with_capacity(order.len());
                for key in order {
                    let (key_values, accs) = groups.remove(&key).expect("every key has a group");
                    rows.push(
                        key_values
                            .into_iter()
                            .chain(accs.into_iter().map(Acc::finish))
                            .collect(),
                    );
                }
                // Aggregates without grouping give one row, even over no rows (count 0).
                if keys.is_empty() && rows.is_empty() {
                    rows.push(
                        aggregates
                            .iter()
                            .map(|a| Acc::new(a.function).finish())
                            .collect(),
                    );
                }
                for values in rows {
                    let keys = self
                        .sort
                        .iter()
                        .map(|(c, d)| {
                            let i = columns.iter().position(|n| n == c);
                            (i.map_or(Value::Null, |i| values[i].clone()), *d)
                        })
                        .collect();
                    self.keep(keys, values)?;
                }
                columns
            }
        };
        let rows = if self.sort.is_empty() {
            self.unsorted
        } else {
            self.kept
                .into_sorted_vec()
                .into_iter()
                .map(|r| r.values)
                .collect()
        };
        Ok(Table {
            columns,
            rows,
            rows_read: self.read,
            rows_kept: self.passed,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use presswork_proto::v1::{Aggregate, Filter, SortKey};
    use proptest::prelude::*;

    use super::*;

    fn rows(columns: &[&str], data: &[&[&str]]) -> Vec<Row> {
        let columns: Arc<[String]> = columns.iter().map(|c| c.to_string()).collect();
        data.iter()
            .map(|values| Row {
                columns: columns.clone(),
                values: values.iter().map(|v| Value::parse(v)).collect(),
            })
            .collect()
    }

    fn run(t: &Transformation, input: &[Row]) -> Result<Table, TransformError> {
        let mut transformer = Transformer::new(t)?;
        for row in input {
            transformer.push(row)?;
        }
        transformer.finish()
    }

    fn shown(table: &Table) -> Vec<Vec<String>> {
        table
            .rows
            .iter()
            .map(|r| r.iter().map(Value::display).collect())
            .collect()
    }

    fn sales() -> Vec<Row> {
        rows(
            &["region", "product", "amount"],
            &[
                &["north", "pens", "10"],
                &["south", "pens", "5"],
                &["north", "ink", "2.5"],
                &["east", "paper", ""],
                &["south", "paper", "20"],
                &["north", "paper", "-1"],
            ],
        )
    }

    fn agg(function: Function, column: &str, alias: &str) -> Aggregate {
        Aggregate {
            function: function as i32,
            column: column.into(),
            alias: alias.into(),
        }
    }

    #[test]
    fn groups_aggregates_sorts_and_limits() {
        let t = Transformation {
            filters: vec![Filter {
                column: "amount".into(),
                op: Op::Gt as i32,
                value: "0".into(),
            }],
            group_by: vec!["region".into()],
            aggregates: vec![
                agg(Function::Sum, "amount", "total"),
                agg(Function::Count, "", ""),
                agg(Function::Avg, "amount", ""),
                agg(Function::Max, "product", ""),
            ],
            sort: vec![SortKey {
                column: "total".into(),
                descending: true,
            }],
            limit: 2,
            columns: vec![],
        };
        let table = run(&t, &sales()).unwrap();
        assert_eq!(
            table.columns,
            ["region", "total", "count", "avg_amount", "max_product"]
        );
        assert_eq!(
            shown(&table),
            [
                ["south", "25", "2", "12.50", "pens"],
                ["north", "12.50", "2", "6.25", "pens"]
            ]
        );
        assert_eq!((table.rows_read, table.rows_kept), (6, 4));
        assert_eq!(table.totals()[1], Value::Number(37.5));
        assert_eq!(table.totals()[0], Value::Null);
    }

    #[test]
    fn aggregates_without_grouping_give_one_row_even_over_nothing() {
        let t = Transformation {
            filters: vec![Filter {
                column: "region".into(),
                op: Op::Eq as i32,
                value: "west".into(),
            }],
            aggregates: vec![
                agg(Function::Count, "", ""),
                agg(Function::Sum, "amount", ""),
            ],
            ..Default::default()
        };
        let table = run(&t, &sales()).unwrap();
        assert_eq!(table.rows, [[Value::Number(0.0), Value::Null]]);
    }

    #[test]
    fn rows_pass_through_projected_filtered_and_sorted() {
        let t = Transformation {
            filters: vec![Filter {
                column: "product".into(),
                op: Op::Contains as i32,
                value: "p".into(),
            }],
            columns: vec!["product".into(), "amount".into()],
            sort: vec![SortKey {
                column: "amount".into(),
                descending: false,
            }],
            ..Default::default()
        };
        let table = run(&t, &sales()).unwrap();
        assert_eq!(table.columns, ["product", "amount"]);
        // Nulls sort first; equal keys keep their order.
        assert_eq!(
            shown(&table),
            [
                ["paper", ""],
                ["paper", "-1"],
                ["pens", "5"],
                ["pens", "10"],
                ["paper", "20"]
            ]
        );
        let everything = run(&Transformation::default(), &sales()).unwrap();
        assert_eq!(everything.columns, ["region", "product", "amount"]);
        assert_eq!(everything.rows.len(), 6);
    }

    #[test]
    fn text_where_a_number_is_needed_names_the_column_and_row() {
        let t = Transformation {
            aggregates: vec![agg(Function::Sum, "product", "")],
            ..Default::default()
        };
        let error = run(&t, &sales()).unwrap_err();
        assert_eq!(
            error,
            TransformError::NotANumber {
                column: "product".into(),
                row: 1,
                function: "sum"
            }
        );
        assert_eq!(
            error.to_string(),
            "column `product` has text in row 1, but sum needs numbers; filter those rows out or aggregate another column",
            "the cell's value (`pens`) is not echoed"
        );
    }

    #[test]
    fn too_many_rows_is_refused_unless_limited() {
        let columns: Arc<[String]> = vec!["n".to_string()].into();
        let many = (0..=MAX_RESULT_ROWS).map(|i| Row {
            columns: columns.clone(),
            values: vec![Value::Number(i as f64)],
        });
        let mut unlimited = Transformer::new(&Transformation::default()).unwrap();
        let refused = many.clone().try_for_each(|r| unlimited.push(&r));
        assert_eq!(refused, Err(TransformError::TooManyRows));
        let mut limited = Transformer::new(&Transformation {
            sort: vec![SortKey {
                column: "n".into(),
                descending: true,
            }],
            limit: 3,
            ..Default::default()
        })
        .unwrap();
        many.for_each(|r| limited.push(&r).unwrap());
        let table = limited.finish().unwrap();
        assert_eq!(shown(&table), [["100000"], ["99999"], ["99998"]]);
    }

    /// The same transformation done the obvious way, holding every row.
    fn reference(t: &Transformation, input: &[Row]) -> Vec<Vec<String>> {
        let transformer = Transformer::new(t).unwrap();
        let kept: Vec<&Row> = input
            .iter()
            .filter(|r| transformer.filters.iter().all(|f| f.keeps(r)))
            .collect();
        let (columns, mut result): (Vec<String>, Vec<Vec<Value>>) =
            if t.group_by.is_empty() && t.aggregates.is_empty() {
                let columns = input
                    .first()
                    .map(|r| r.columns.to_vec())
                    .unwrap_or_default();
                (
                    columns.clone(),
                    kept.iter()
                        .map(|r| columns.iter().map(|c| r.get(c).clone()).collect())
                        .collect(),
                )
            } else {
                let mut groups: Vec<(Vec<Value>, Vec<&Row>)> = Vec::new();
                for row in &kept {
                    let key: Vec<Value> = t.group_by.iter().map(|k| row.get(k).clone()).collect();
                    match groups.iter_mut().find(|(k, _)| {
                        k.iter()
                            .zip(&key)
                            .all(|(a, b)| a.cmp_total(b) == Ordering::Equal)
                    }) {
                        Some((_, members)) => members.push(row),
                        None => groups.push((key, vec![row])),
                    }
                }
                if t.group_by.is_empty() && groups.is_empty() {
                    groups.push((vec![], vec![]));
                }
                let compiled: Vec<CompiledAggregate> = t
                    .aggregates
                    .iter()
                    .map(|a| CompiledAggregate {
                        function: Function::try_from(a.function).unwrap(),
                        column: a.column.clone(),
                    })
                    .collect();
                let rows = groups
                    .into_iter()
                    .map(|(key, members)| {
                        let aggs = compiled.iter().map(|a| {
                            let mut acc = Acc::new(a.function);
                            for (i, m) in members.iter().enumerate() {
                                acc.add(a, m, i as u64).unwrap();
                            }
                            acc.finish()
                        });
                        key.into_iter().chain(aggs).collect()
                    })
                    .collect();
                let names = t.aggregates.iter().map(Aggregate::result_name);
                (t.group_by.iter().cloned().chain(names).collect(), rows)
            };
        let position = |c: &str| columns.iter().position(|n| n == c);
        result.sort_by(|a, b| {
            for key in &t.sort {
                let (x, y) = match position(&key.column) {
                    Some(i) => (&a[i], &b[i]),
                    None => continue,
                };
                let o = x.cmp_total(y);
                let o = if key.descending { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
        if t.limit > 0 {
            result.truncate(t.limit as usize);
        }
        result
            .iter()
            .map(|r| r.iter().map(Value::display).collect())
            .collect()
    }

    fn arb_rows() -> impl Strategy<Value = Vec<Row>> {
        let value = prop_oneof![
            Just(String::new()),
            (-5i32..5).prop_map(|n| n.to_string()),
            prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_owned),
        ];
        prop::collection::vec(prop::collection::vec(value, 3), 0..40).prop_map(|data| {
            let columns: Arc<[String]> =
                vec!["k".to_string(), "n".to_string(), "m".to_string()].into();
            data.into_iter()
                .map(|values| Row {
                    columns: columns.clone(),
                    values: values.iter().map(|v| Value::parse(v)).collect(),
                })
                .collect()
        })
    }

    fn arb_transformation() -> impl Strategy<Value = Transformation> {
        let column = prop::sample::select(vec!["k", "n", "m"]).prop_map(str::to_owned);
        let filter = (
            column.clone(),
            1i32..=7,
            prop::sample::select(vec!["0", "2", "a", ""]),
        )
            .prop_map(|(column, op, value)| Filter {
                column,
                op,
                value: value.into(),
            });
        // min and max work on any value, count on any column: no NotANumber here.
        let aggregate = (
            prop::sample::select(vec![Function::Count, Function::Min, Function::Max]),
            column.clone(),
        )
            .prop_map(|(f, c)| Aggregate {
                function: f as i32,
                column: c,
                alias: String::new(),
            });
        (
            prop::collection::vec(filter, 0..3),
            prop::option::of(column.clone()),
            prop::collection::vec(aggregate, 0..3),
            prop::collection::vec((column, any::<bool>()), 0..3),
            0u64..6,
        )
            .prop_map(|(filters, group, aggregates, sort, limit)| {
                let group_by: Vec<String> = group.into_iter().collect();
                let mut names: Vec<String> = group_by.clone();
                let mut unique = Vec::new();
                for a in aggregates {
                    let name = a.result_name();
                    if !names.contains(&name) {
                        names.push(name);
                        unique.push(a);
                    }
                }
                let grouped = !group_by.is_empty() || !unique.is_empty();
                let sort = sort
                    .into_iter()
                    .filter_map(|(c, descending)| {
                        let column = if grouped {
                            names.iter().find(|n| n.ends_with(&c))?.clone()
                        } else {
                            c
                        };
                        Some(SortKey { column, descending })
                    })
                    .collect();
                Transformation {
                    filters,
                    group_by,
                    aggregates: unique,
                    sort,
                    limit,
                    columns: vec![],
                }
            })
    }

    proptest! {
        /// Streaming (groups in a map, a bounded heap for sort + limit) gives exactly what the
        /// obvious hold-everything computation gives, in the same order.
        #[test]
        fn streaming_matches_the_reference(input in arb_rows(), t in arb_transformation()) {
            let table = run(&t, &input).unwrap();
            prop_assert_eq!(shown(&table), reference(&t, &input));
            prop_assert!(t.limit == 0 || table.rows.len() as u64 <= t.limit);
        }
    }
}
