//! Report configurations: the checks a configuration passes before it is stored.
//!
//! [`validate`] is pure: it names every wrong field by its path (`source.params.path`,
//! `transformation.aggregates[1].column`) and says why and what is expected, so a client can
//! show the problems next to the fields.

use std::collections::{BTreeMap, BTreeSet};

use presswork_proto::v1::aggregate::Function;
use presswork_proto::v1::filter::Op;
use presswork_proto::v1::{Connector, ReportConfig, Transformation};

/// Report names the workers use for their built-in reports; a configuration may not take one.
pub const BUILT_IN_REPORTS: [&str; 8] = [
    "demo-fast",
    "demo-slow",
    "demo-stuck",
    "noop",
    "blocker",
    "coop",
    "busy",
    "short",
];

const MAX_NAME: usize = 63;
const MAX_TITLE: usize = 200;
const MAX_DESCRIPTION: usize = 2000;
const MAX_SUBTITLE: usize = 500;
const MAX_RETRIES: u32 = 10;

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where, e.g. `source.params.path`.
    pub field: String,
    /// Why, and what is expected.
    pub problem: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// The message of an INVALID_ARGUMENT answer listing `errors`.
pub fn describe(errors: &[FieldError]) -> String {
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!(
        "the report configuration is not valid; fix these fields and try again: {}",
        list.join("; ")
    )
}

/// Whether `name` can name a report: 1 to 63 of `a-z`, `0-9` and `-`, starting with a letter.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= MAX_NAME
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
}

/// Every problem of `config`, or none. Server-set fields (version, times) are ignored.
pub fn validate(config: &ReportConfig) -> Result<(), Vec<FieldError>> {
    let mut errors = Errors::default();
    if !valid_name(&config.name) {
        errors.add(
            "name",
            format!(
                "`{}` is not a report name: use 1 to {MAX_NAME} lower-case letters, digits and dashes, starting with a letter",
                config.name
            ),
        );
    } else if BUILT_IN_REPORTS.contains(&config.name.as_str()) {
        errors.add(
            "name",
            format!(
                "`{}` is a built-in report; choose another name",
                config.name
            ),
        );
    }
    errors.max_len("title", &config.title, MAX_TITLE);
    errors.max_len("description", &config.description, MAX_DESCRIPTION);
    match &config.source {
        None => errors.add(
            "source",
            "required: where the rows come from (e.g. kind csv with a path)",
        ),
        Some(source) => check_source(source, &mut errors),
    }
    if let Some(transformation) = &config.transformation {
        check_transformation(transformation, &mut errors);
    }
    if let Some(template) = &config.template {
        errors.max_len("template.subtitle", &template.subtitle, MAX_SUBTITLE);
        if !matches!(template.page_size.as_str(), "" | "a4" | "letter") {
            errors.add(
                "template.page_size",
                format!(
                    "`{}` is not a page size: use a4 or letter",
                    template.page_size
                ),
            );
        }
    }
    match &config.delivery {
        None => errors.add(
            "delivery",
            "required: where the PDF goes (e.g. kind directory)",
        ),
        Some(delivery) => check_delivery(delivery, &mut errors),
    }
    errors.into_result()
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            problem: problem.into(),
        });
    }

    fn max_len(&mut self, field: &str, value: &str, max: usize) {
        let len = value.chars().count();
        if len > max {
            self.add(field, format!("{len} characters; at most {max}"));
        }
    }

    fn into_result(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// The parameters a connector kind takes.
enum Params {
    /// A built-in kind: these are required, these optional, no others.
    Fixed {
        required: &'static [&'static str],
        optional: &'static [&'static str],
    },
    /// A plug-in: `name`, and whatever else the plug-in takes.
    Plugin,
}

/// What `kind` takes as a source (or a delivery); `None` when there is no such kind.
fn known_params(kind: &str, source: bool) -> Option<Params> {
    let fixed = |required, optional| Params::Fixed { required, optional };
    Some(match (source, kind) {
        (true, "csv" | "jsonl") => fixed(&["path"], &[]),
        (true, "http") => fixed(&["url"], &["format"]),
        (true, "sql") => fixed(&["url", "query"], &[]),
        (true, "sample") => fixed(&[], &[]),
        (false, "directory") => fixed(&[], &["file_name", "path"]),
        (false, "http") => fixed(&["url"], &["method", "retries"]),
        (true, "connector") => Params::Plugin,
        _ => return None,
    })
}

fn check_params(field: &str, connector: &Connector, source: bool, errors: &mut Errors) -> bool {
    let kinds = if source {
        "csv, jsonl, http, sql, sample or connector"
    } else {
        "directory or http"
    };
    if !source && connector.kind == "connector" {
        errors.add(
            format!("{field}.kind"),
            "delivery connectors are not supported yet: deliver to a directory or http",
        );
        return false;
    }
    let Some(spec) = known_params(&connector.kind, source) else {
        errors.add(
            format!("{field}.kind"),
            if connector.kind.is_empty() {
                format!("required: one of {kinds}")
            } else {
                format!(
                    "`{}` is not a {} kind: use {kinds}",
                    connector.kind,
                    if source { "source" } else { "delivery" }
                )
            },
        );
        return false;
    };
    let params = &connector.params;
    match spec {
        Params::Fixed { required, optional } => {
            for name in required {
                if params.get(*name).is_none_or(|v| v.trim().is_empty()) {
                    errors.add(
                        format!("{field}.params.{name}"),
                        format!(
                            "required for a {} {}",
                            connector.kind,
                            if source { "source" } else { "delivery" }
                        ),
                    );
                }
            }
            for name in params.keys() {
                if !required.contains(&name.as_str()) && !optional.contains(&name.as_str()) {
                    let known: Vec<&str> = required.iter().chain(optional).copied().collect();
                    errors.add(
                        format!("{field}.params.{name}"),
                        if known.is_empty() {
                            format!("a {} takes no parameters", connector.kind)
                        } else {
                            format!(
                                "unknown parameter; a {} takes {}",
                                connector.kind,
                                known.join(", ")
                            )
                        },
                    );
                }
            }
        }
        Params::Plugin => {
            let name = params.get("name").map(String::as_str).unwrap_or("");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                errors.add(
                    format!("{field}.params.name"),
                    "required: the name of a connector registered on the workers (letters, digits, - _ .)",
                );
            }
        }
    }
    true
}

fn check_url(field: String, url: &str, schemes: &[&str], errors: &mut Errors) {
    if !schemes.iter().any(|s| url.starts_with(&format!("{s}://")))
        || url.len() <= url.find("://").map_or(0, |i| i + 3)
    {
        errors.add(
            field,
            format!(
                "`{url}` is not a URL this can use: start it with {}://",
                schemes.join("://, ")
            ),
        );
    }
}

fn check_source(source: &Connector, errors: &mut Errors) {
    if !check_params("source", source, true, errors) {
        return;
    }
    let p = &source.params;
    match source.kind.as_str() {
        "csv" | "jsonl" => {
            if let Some(path) = p.get("path").filter(|v| !v.is_empty())
                && !path.starts_with('/')
            {
                errors.add(
                    "source.params.path",
                    format!("`{path}` is relative; give an absolute path on the workers"),
                );
            }
        }
        "http" => {
            if let Some(url) = p.get("url").filter(|v| !v.is_empty()) {
                check_url("source.params.url".into(), url, &["http", "https"], errors);
            }
            if let Some(format) = p.get("format")
                && !matches!(format.as_str(), "csv" | "jsonl")
            {
                errors.add(
                    "source.params.format",
                    format!("`{format}` is not a format: use csv or jsonl"),
                );
            }
        }
        "sql" => {
            if let Some(url) = p.get("url").filter(|v| !v.is_empty()) {
                check_url(
                    "source.params.url".into(),
                    url,
                    &["postgres", "postgresql", "sqlite"],
                    errors,
                );
            }
            if let Some(query) = p.get("query").filter(|v| !v.trim().is_empty()) {
                let first = query
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if !matches!(first.as_str(), "select" | "with") {
                    errors.add(
                        "source.params.query",
                        "must be one read-only query starting with SELECT or WITH",
                    );
                }
            }
        }
        _ => {}
    }
}

fn check_delivery(delivery: &Connector, errors: &mut Errors) {
    if !check_params("delivery", delivery, false, errors) {
        return;
    }
    let p = &delivery.params;
    match delivery.kind.as_str() {
        "directory" => {
            if let Some(name) = p.get("file_name")
                && (name.is_empty()
                    || name.contains('/')
                    || name.starts_with('.')
                    || !name.ends_with(".pdf"))
            {
                errors.add(
                    "delivery.params.file_name",
                    format!("`{name}` is not a file name to use: a plain name ending in .pdf, without / (it may contain {{job_id}})"),
                );
            }
            if let Some(path) = p.get("path")
                && !path.starts_with('/')
            {
                errors.add(
                    "delivery.params.path",
                    format!("`{path}` is not absolute; give an absolute directory on the workers, or leave it out for their output directory"),
                );
            }
        }
        "http" => {
            if let Some(url) = p.get("url").filter(|v| !v.is_empty()) {
                check_url(
                    "delivery.params.url".into(),
                    url,
                    &["http", "https"],
                    errors,
                );
            }
            if let Some(method) = p.get("method")
                && !matches!(method.as_str(), "PUT" | "POST")
            {
                errors.add(
                    "delivery.params.method",
                    format!("`{method}` is not a method to upload with: use PUT or POST"),
                );
            }
            if let Some(retries) = p.get("retries")
                && !retries.parse::<u32>().is_ok_and(|n| n <= MAX_RETRIES)
            {
                errors.add(
                    "delivery.params.retries",
                    format!("`{retries}` is not a number of retries: use 0 to {MAX_RETRIES}"),
                );
            }
        }
        _ => {}
    }
}

fn check_transformation(t: &Transformation, errors: &mut Errors) {
    for (i, filter) in t.filters.iter().enumerate() {
        let field = format!("transformation.filters[{i}]");
        if filter.column.trim().is_empty() {
            errors.add(format!("{field}.column"), "required: the column to compare");
        }
        if Op::try_from(filter.op).unwrap_or(Op::Unspecified) == Op::Unspecified {
            errors.add(
                format!("{field}.op"),
                "required: one of eq, ne, lt, le, gt, ge, contains",
            );
        }
    }
    let mut result_columns: BTreeMap<String, String> = BTreeMap::new();
    for (i, column) in t.group_by.iter().enumerate() {
        let field = format!("transformation.group_by[{i}]");
        if column.trim().is_empty() {
            errors.add(field, "empty column name");
        } else if result_columns
            .insert(column.clone(), field.clone())
            .is_some()
        {
            errors.add(field, format!("`{column}` is grouped by twice"));
        }
    }
    for (i, aggregate) in t.aggregates.iter().enumerate() {
        let field = format!("transformation.aggregates[{i}]");
        let function = Function::try_from(aggregate.function).unwrap_or(Function::Unspecified);
        if function == Function::Unspecified {
            errors.add(
                format!("{field}.function"),
                "required: one of count, sum, avg, min, max",
            );
            continue;
        }
        if function != Function::Count && aggregate.column.trim().is_empty() {
            errors.add(
                format!("{field}.column"),
                "required: the column to aggregate (only count may leave it out)",
            );
            continue;
        }
        let name = aggregate.result_name();
        if let Some(other) = result_columns.insert(name.clone(), field.clone()) {
            errors.add(
                format!("{field}.alias"),
                format!("the result column `{name}` is also made by {other}; give this one another alias"),
            );
        }
    }
    let grouped = !t.group_by.is_empty() || !t.aggregates.is_empty();
    if grouped && !t.columns.is_empty() {
        errors.add(
            "transformation.columns",
            "only without group_by and aggregates; the result of a grouping has the group-by columns and the aggregates",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, column) in t.columns.iter().enumerate() {
        if column.trim().is_empty() || !seen.insert(column) {
            errors.add(
                format!("transformation.columns[{i}]"),
                format!("`{column}` is empty or listed twice"),
            );
        }
    }
    let known: Option<Vec<&String>> = if grouped {
        Some(result_columns.keys().collect())
    } else if !t.columns.is_empty() {
        Some(t.columns.iter().collect())
    } else {
        None
    };
    for (i, key) in t.sort.iter().enumerate() {
        let field = format!("transformation.sort[{i}].column");
        if key.column.trim().is_empty() {
            errors.add(field, "required: the column to sort by");
        } else if let Some(known) = &known
            && !known.contains(&&key.column)
        {
            let names: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
            errors.add(
                field,
                format!(
                    "`{}` is not a column of the result; sort by one of {}",
                    key.column,
                    names.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use presswork_proto::v1::{Aggregate, Filter, SortKey, Template};

    use super::*;

    fn connector(kind: &str, params: &[(&str, &str)]) -> Connector {
        Connector {
            kind: kind.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn valid() -> ReportConfig {
        ReportConfig {
            name: "monthly-sales".into(),
            title: "Monthly sales".into(),
            source: Some(connector("csv", &[("path", "/data/sales.csv")])),
            transformation: Some(Transformation {
                filters: vec![Filter {
                    column: "amount".into(),
                    op: Op::Gt as i32,
                    value: "0".into(),
                }],
                group_by: vec!["region".into()],
                aggregates: vec![
                    Aggregate {
                        function: Function::Sum as i32,
                        column: "amount".into(),
                        alias: "total".into(),
                    },
                    Aggregate {
                        function: Function::Count as i32,
                        ..Default::default()
                    },
                ],
                sort: vec![SortKey {
                    column: "total".into(),
                    descending: true,
                }],
                limit: 10,
                columns: vec![],
            }),
            template: Some(Template {
                subtitle: "By region".into(),
                totals: true,
                page_size: "a4".into(),
            }),
            delivery: Some(connector(
                "directory",
                &[("file_name", "sales-{job_id}.pdf")],
            )),
            ..Default::default()
        }
    }

    fn fields(config: &ReportConfig) -> Vec<String> {
        match validate(config) {
            Ok(()) => vec![],
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn a_complete_configuration_is_valid() {
        assert_eq!(validate(&valid()), Ok(()));
        let mut minimal = valid();
        minimal.transformation = None;
        minimal.template = None;
        minimal.source = Some(connector("sample", &[]));
        minimal.delivery = Some(connector("directory", &[]));
        assert_eq!(validate(&minimal), Ok(()));
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "Monthly", "9lives", "a_b", "demo-fast", &"a".repeat(64)] {
            let mut c = valid();
            c.name = bad.into();
            assert_eq!(fields(&c), ["name"], "name {bad:?}");
        }
        assert!(valid_name(&"a".repeat(63)));
    }

    #[test]
    fn sources_need_their_parameters() {
        let cases: [(Connector, &[&str]); 9] = [
            (connector("csv", &[]), &["source.params.path"]),
            (
                connector("csv", &[("path", "data.csv")]),
                &["source.params.path"],
            ),
            (
                connector("csv", &[("path", "/d.csv"), ("sep", ";")]),
                &["source.params.sep"],
            ),
            (
                connector("http", &[("url", "ftp://x")]),
                &["source.params.url"],
            ),
            (
                connector("http", &[("url", "https://x/y"), ("format", "xml")]),
                &["source.params.format"],
            ),
            (
                connector(
                    "sql",
                    &[("url", "sqlite:///d.db"), ("query", "DELETE FROM t")],
                ),
                &["source.params.query"],
            ),
            (
                connector("sql", &[("url", "mysql://h/d"), ("query", "select 1")]),
                &["source.params.url"],
            ),
            (
                connector("connector", &[("path", "/x")]),
                &["source.params.name"],
            ),
            (connector("excel", &[]), &["source.kind"]),
        ];
        for (source, want) in cases {
            let mut c = valid();
            c.source = Some(source.clone());
            assert_eq!(fields(&c), want, "source {source:?}");
        }
        let mut c = valid();
        c.source = None;
        assert_eq!(fields(&c), ["source"]);
        c.source = Some(connector(
            "connector",
            &[("name", "warehouse"), ("table", "sales")],
        ));
        assert_eq!(fields(&c), Vec::<String>::new());
    }

    #[test]
    fn deliveries_are_checked() {
        let cases: [(Connector, &[&str]); 7] = [
            (
                connector("directory", &[("file_name", "../x.pdf")]),
                &["delivery.params.file_name"],
            ),
            (
                connector("directory", &[("file_name", "report.txt")]),
                &["delivery.params.file_name"],
            ),
            (
                connector("directory", &[("path", "out")]),
                &["delivery.params.path"],
            ),
            (connector("http", &[]), &["delivery.params.url"]),
            (
                connector(
                    "http",
                    &[("url", "https://x/"), ("method", "GET"), ("retries", "99")],
                ),
                &["delivery.params.method", "delivery.params.retries"],
            ),
            (connector("s3", &[]), &["delivery.kind"]),
            (
                connector("connector", &[("name", "sftp")]),
                &["delivery.kind"],
            ),
        ];
        for (delivery, want) in cases {
            let mut c = valid();
            c.delivery = Some(delivery.clone());
            assert_eq!(fields(&c), want, "delivery {delivery:?}");
        }
    }

    #[test]
    fn transformations_are_checked() {
        let mut c = valid();
        let t = c.transformation.as_mut().unwrap();
        t.filters.push(Filter {
            column: "".into(),
            op: 0,
            value: "x".into(),
        });
        t.group_by.push("region".into());
        t.aggregates.push(Aggregate {
            function: Function::Avg as i32,
            column: "".into(),
            alias: "".into(),
        });
        t.aggregates.push(Aggregate {
            function: Function::Max as i32,
            column: "amount".into(),
            alias: "total".into(),
        });
        t.sort.push(SortKey {
            column: "product".into(),
            descending: false,
        });
        t.columns.push("region".into());
        assert_eq!(
            fields(&c),
            [
                "transformation.filters[1].column",
                "transformation.filters[1].op",
                "transformation.group_by[1]",
                "transformation.aggregates[2].column",
                "transformation.aggregates[3].alias",
                "transformation.columns",
                "transformation.sort[1].column",
            ]
        );
    }

    #[test]
    fn without_grouping_sort_keys_follow_the_kept_columns() {
        let mut c = valid();
        c.transformation = Some(Transformation {
            columns: vec!["region".into(), "amount".into()],
            sort: vec![SortKey {
                column: "amount".into(),
                descending: true,
            }],
            ..Default::default()
        });
        assert_eq!(validate(&c), Ok(()));
        c.transformation.as_mut().unwrap().sort[0].column = "quarter".into();
        assert_eq!(fields(&c), ["transformation.sort[0].column"]);
        // Every column is kept: any sort key may be right, the rows will tell.
        c.transformation.as_mut().unwrap().columns.clear();
        assert_eq!(validate(&c), Ok(()));
    }

    #[test]
    fn the_message_names_every_field() {
        let mut c = valid();
        c.source = None;
        c.template.as_mut().unwrap().page_size = "a3".into();
        let message = describe(&validate(&c).unwrap_err());
        assert!(message.contains("source: required"), "{message}");
        assert!(
            message.contains("template.page_size: `a3` is not a page size: use a4 or letter"),
            "{message}"
        );
    }
}
