//! Report configurations: the checks a configuration passes before it is stored, and what
//! is shown of a stored one.
//!
//! [`validate`] is pure: it names every wrong field by its path (`source.params.path`,
//! `transformation.aggregates[1].column`) and says why and what is expected, so a client can
//! show the problems next to the fields. Its work and its answer are bounded whatever it is
//! sent: counts and lengths are capped, at most [`MAX_ERRORS`] problems are listed, and input
//! is echoed through [`echo::shown`](crate::echo::shown).
//!
//! Secrets: a configuration never holds a credential, only a secret reference (`${env:NAME}`,
//! `${file:NAME}`) that the worker resolves; one with a password in a URL, a credential in a
//! query string or a credential-named connector parameter is refused. [`redacted`] hides the
//! credentials of configurations stored before that rule, in everything the API returns.
//! The rules the worker applies too live in [`presswork_proto::rules`].

use std::collections::{BTreeMap, BTreeSet};

use presswork_proto::rules;
use presswork_proto::v1::aggregate::Function;
use presswork_proto::v1::filter::Op;
use presswork_proto::v1::{Connector, ReportConfig, Transformation};
use prost::Message;

use crate::echo::shown;

const MAX_NAME: usize = 63;
const MAX_TITLE: usize = 200;
const MAX_DESCRIPTION: usize = 2000;
const MAX_SUBTITLE: usize = 500;
/// The largest configuration, protobuf-encoded.
pub const MAX_ENCODED: usize = 64 * 1024;
/// The most problems one answer lists; the rest are counted.
pub const MAX_ERRORS: usize = 20;
const MAX_FILTERS: usize = 64;
const MAX_GROUP_BY: usize = 16;
const MAX_AGGREGATES: usize = 32;
const MAX_SORT: usize = 16;
const MAX_COLUMNS: usize = 256;
/// Column names, aliases.
const MAX_COLUMN: usize = 128;
const MAX_FILTER_VALUE: usize = 1024;
const MAX_KIND: usize = 64;
const MAX_PARAMS: usize = 32;
const MAX_PARAM_NAME: usize = 64;
/// Paths, URLs and a connector's parameters.
const MAX_PARAM_VALUE: usize = 4096;
/// A SQL source's query.
const MAX_QUERY: usize = 32 * 1024;
/// A job id as long as the control plane's (a UUID), to check a file-name pattern with.
const SAMPLE_JOB_ID: &str = "01900000-0000-7000-8000-000000000000";

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

/// What is wrong with a configuration: the first [`MAX_ERRORS`] problems, and how many more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub errors: Vec<FieldError>,
    pub omitted: usize,
}

impl Invalid {
    /// The fields named, in order.
    pub fn fields(&self) -> Vec<&str> {
        self.errors.iter().map(|e| e.field.as_str()).collect()
    }
}

/// The message of an INVALID_ARGUMENT answer listing `invalid`'s problems.
pub fn describe(invalid: &Invalid) -> String {
    let list: Vec<String> = invalid.errors.iter().map(ToString::to_string).collect();
    let more = match invalid.omitted {
        0 => String::new(),
        n => format!("; and {n} more problems"),
    };
    format!(
        "the report configuration is not valid; fix these fields and try again: {}{more}",
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

/// Every problem of `config` (the first [`MAX_ERRORS`]), or none. Server-set fields (version,
/// times) are ignored.
pub fn validate(config: &ReportConfig) -> Result<(), Invalid> {
    let mut errors = Errors::default();
    let size = config.encoded_len();
    if size > MAX_ENCODED {
        errors.add(
            "report",
            format!("{size} bytes encoded; at most {MAX_ENCODED}: a configuration names its data, it does not hold it"),
        );
        return errors.into_result();
    }
    if !valid_name(&config.name) {
        errors.add(
            "name",
            format!(
                "`{}` is not a report name: use 1 to {MAX_NAME} lower-case letters, digits and dashes, starting with a letter",
                shown(&config.name)
            ),
        );
    } else if presswork_proto::built_in::built_in(&config.name).is_some() {
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
                    shown(&template.page_size)
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

/// `config` as the API shows it: every credential written out in it (a URL's password, a
/// credential in a query string, a credential-named connector parameter) replaced by `***`.
/// Configurations saved since secret references exist hold none; older ones may.
pub fn redacted(mut config: ReportConfig) -> ReportConfig {
    for connector in [&mut config.source, &mut config.delivery]
        .into_iter()
        .flatten()
    {
        for (name, value) in connector.params.iter_mut() {
            if literal_credential_param(name, value) {
                *value = "***".into();
            } else if value.contains("://") {
                *value = rules::redact_url(value);
            }
        }
    }
    config
}

/// Whether the parameter `name` looks like a credential and `value` is one written out.
fn literal_credential_param(name: &str, value: &str) -> bool {
    rules::credential_name(name) && !value.is_empty() && !rules::only_refs(value)
}

#[derive(Default)]
struct Errors {
    list: Vec<FieldError>,
    omitted: usize,
}

impl Errors {
    fn add(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        if self.list.len() < MAX_ERRORS {
            self.list.push(FieldError {
                field: field.into(),
                problem: problem.into(),
            });
        } else {
            self.omitted += 1;
        }
    }

    fn max_len(&mut self, field: &str, value: &str, max: usize) {
        // Bytes bound the work; characters are what a user counts.
        if value.len() > max && value.chars().count() > max {
            self.add(
                field,
                format!("{} characters; at most {max}", value.chars().count()),
            );
        }
    }

    /// Whether `items` has at most `max` entries; says so when it has more.
    fn max_count(&mut self, field: &str, count: usize, max: usize, what: &str) -> bool {
        if count > max {
            self.add(field, format!("{count} {what}; at most {max}"));
            return false;
        }
        true
    }

    fn into_result(self) -> Result<(), Invalid> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(Invalid {
                errors: self.list,
                omitted: self.omitted,
            })
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

/// Checks the sizes of `connector`'s parameters, and that none holds a credential written
/// out; false when there are too many to look at.
fn check_param_sizes(field: &str, connector: &Connector, errors: &mut Errors) -> bool {
    errors.max_len(&format!("{field}.kind"), &connector.kind, MAX_KIND);
    if !errors.max_count(
        &format!("{field}.params"),
        connector.params.len(),
        MAX_PARAMS,
        "parameters",
    ) {
        return false;
    }
    for (name, value) in &connector.params {
        let at = format!("{field}.params.{}", shown(name));
        if name.len() > MAX_PARAM_NAME {
            errors.add(
                &at,
                format!(
                    "a parameter name of {} bytes; at most {MAX_PARAM_NAME}",
                    name.len()
                ),
            );
            continue;
        }
        let max = if name == "query" {
            MAX_QUERY
        } else {
            MAX_PARAM_VALUE
        };
        if value.len() > max {
            errors.add(&at, format!("{} bytes; at most {max}", value.len()));
            continue;
        }
        if let Err(problem) = rules::secret_refs(value) {
            errors.add(&at, problem);
        } else if literal_credential_param(name, value) {
            errors.add(
                &at,
                "holds a credential written out, which every viewer would see; put it in the worker's environment or secrets directory and write ${env:NAME} or ${file:NAME} here",
            );
        } else if value.contains("://") {
            for problem in rules::literal_credentials_in_url(value) {
                errors.add(&at, problem);
            }
        }
    }
    true
}

fn check_params(field: &str, connector: &Connector, source: bool, errors: &mut Errors) -> bool {
    if !check_param_sizes(field, connector, errors) {
        return false;
    }
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
                    shown(&connector.kind),
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
                        format!("{field}.params.{}", shown(name)),
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

/// Checks a URL parameter: its scheme (unless the whole URL, or its start, is a secret
/// reference the worker resolves). Credentials written out were refused with the sizes.
fn check_url(field: String, url: &str, schemes: &[&str], errors: &mut Errors) {
    if rules::secret_refs(url).is_err() {
        // Reported with the sizes.
        return;
    }
    if let Err(problem) = rules::check_url_refs(url) {
        errors.add(field, problem);
        return;
    }
    if rules::only_refs(url) {
        // The worker checks the scheme of what the reference gives.
        return;
    }
    if !schemes.iter().any(|s| url.starts_with(&format!("{s}://")))
        || url.len() <= url.find("://").map_or(0, |i| i + 3)
    {
        errors.add(
            field,
            format!(
                "`{}` is not a URL this can use: start it with {}://",
                shown(&rules::redact_url(url)),
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
                    format!(
                        "`{}` is relative; give an absolute path on the workers",
                        shown(path)
                    ),
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
                    format!("`{}` is not a format: use csv or jsonl", shown(format)),
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
                && let Err(problem) = rules::delivery_file_name(name, SAMPLE_JOB_ID)
            {
                errors.add(
                    "delivery.params.file_name",
                    format!("`{}` is {problem}", shown(name)),
                );
            }
            if let Some(path) = p.get("path")
                && !path.starts_with('/')
            {
                errors.add(
                    "delivery.params.path",
                    format!("`{}` is not absolute; give an absolute directory on the workers, or leave it out for their output directory", shown(path)),
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
                    format!(
                        "`{}` is not a method to upload with: use PUT or POST",
                        shown(method)
                    ),
                );
            }
            if let Some(retries) = p.get("retries")
                && !retries
                    .parse::<u32>()
                    .is_ok_and(|n| n <= rules::MAX_RETRIES)
            {
                errors.add(
                    "delivery.params.retries",
                    format!(
                        "`{}` is not a number of retries: use 0 to {}",
                        shown(retries),
                        rules::MAX_RETRIES
                    ),
                );
            }
        }
        _ => {}
    }
}

/// A column name of the transformation: not empty, at most [`MAX_COLUMN`] bytes; false (and
/// a problem added) when it is not.
fn check_column(field: &str, column: &str, what: &str, errors: &mut Errors) -> bool {
    if column.trim().is_empty() {
        errors.add(field, format!("required: {what}"));
        false
    } else if column.len() > MAX_COLUMN {
        errors.add(
            field,
            format!(
                "a column name of {} bytes; at most {MAX_COLUMN}",
                column.len()
            ),
        );
        false
    } else {
        true
    }
}

/// At most 10 of `names`, comma-separated, then `…` when there are more.
fn some_of(names: &[&str]) -> String {
    let mut text = names
        .iter()
        .take(10)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 10 {
        text.push_str(", …");
    }
    text
}

fn check_transformation(t: &Transformation, errors: &mut Errors) {
    let counts = [
        (
            "transformation.filters",
            t.filters.len(),
            MAX_FILTERS,
            "filters",
        ),
        (
            "transformation.group_by",
            t.group_by.len(),
            MAX_GROUP_BY,
            "group-by columns",
        ),
        (
            "transformation.aggregates",
            t.aggregates.len(),
            MAX_AGGREGATES,
            "aggregates",
        ),
        ("transformation.sort", t.sort.len(), MAX_SORT, "sort keys"),
        (
            "transformation.columns",
            t.columns.len(),
            MAX_COLUMNS,
            "columns",
        ),
    ];
    let mut within = true;
    for (field, count, max, what) in counts {
        within &= errors.max_count(field, count, max, what);
    }
    if !within {
        // Each list is looked at only when every one is within its bounds: the work and the
        // answer stay small whatever was sent.
        return;
    }
    for (i, filter) in t.filters.iter().enumerate() {
        let field = format!("transformation.filters[{i}]");
        check_column(
            &format!("{field}.column"),
            &filter.column,
            "the column to compare",
            errors,
        );
        if Op::try_from(filter.op).unwrap_or(Op::Unspecified) == Op::Unspecified {
            errors.add(
                format!("{field}.op"),
                "required: one of eq, ne, lt, le, gt, ge, contains",
            );
        }
        if filter.value.len() > MAX_FILTER_VALUE {
            errors.add(
                format!("{field}.value"),
                format!("{} bytes; at most {MAX_FILTER_VALUE}", filter.value.len()),
            );
        }
    }
    let mut result_columns: BTreeMap<String, String> = BTreeMap::new();
    for (i, column) in t.group_by.iter().enumerate() {
        let field = format!("transformation.group_by[{i}]");
        if check_column(&field, column, "a column to group by", errors)
            && result_columns
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
        if aggregate.column.len() > MAX_COLUMN || aggregate.alias.len() > MAX_COLUMN {
            errors.add(
                field,
                format!("a column name or alias longer than {MAX_COLUMN} bytes"),
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
        let field = format!("transformation.columns[{i}]");
        if check_column(&field, column, "a column to keep", errors) && !seen.insert(column) {
            errors.add(field, format!("`{column}` is listed twice"));
        }
    }
    let known: Option<Vec<&str>> = if grouped {
        Some(result_columns.keys().map(String::as_str).collect())
    } else if !t.columns.is_empty() {
        Some(t.columns.iter().map(String::as_str).collect())
    } else {
        None
    };
    for (i, key) in t.sort.iter().enumerate() {
        let field = format!("transformation.sort[{i}].column");
        if check_column(&field, &key.column, "the column to sort by", errors)
            && let Some(known) = &known
            && !known.contains(&key.column.as_str())
        {
            errors.add(
                field,
                format!(
                    "`{}` is not a column of the result; sort by one of {}",
                    key.column,
                    some_of(known)
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
            Err(invalid) => invalid.errors.into_iter().map(|e| e.field).collect(),
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

    #[test]
    fn credentials_written_out_are_refused_and_references_accepted() {
        let refused = [
            (
                connector(
                    "sql",
                    &[("url", "postgres://u:pw@h/db"), ("query", "select 1")],
                ),
                "source.params.url",
            ),
            (
                connector("http", &[("url", "https://h/x.csv?X-Amz-Signature=abc")]),
                "source.params.url",
            ),
            (
                connector("connector", &[("name", "crm"), ("api_token", "abc")]),
                "source.params.api_token",
            ),
            (
                connector("http", &[("url", "https://h/${env:TOKEN}/x.csv")]),
                "source.params.url",
            ),
            (
                connector("http", &[("url", "https://h/x.csv?sig=${vault:x}")]),
                "source.params.url",
            ),
        ];
        for (source, field) in refused {
            let mut c = valid();
            c.source = Some(source.clone());
            let invalid = validate(&c).expect_err("refused");
            assert_eq!(invalid.fields(), [field], "{source:?}");
            let message = describe(&invalid);
            assert!(
                message.contains("${env:") && !message.contains(":pw@") && !message.contains("abc"),
                "{message}"
            );
        }
        let mut c = valid();
        c.delivery = Some(connector(
            "http",
            &[("url", "https://u:secret@h/upload?token=t")],
        ));
        assert_eq!(
            fields(&c),
            ["delivery.params.url", "delivery.params.url"],
            "the password and the token"
        );
        for source in [
            connector(
                "sql",
                &[
                    ("url", "postgres://u:${env:PG_PASS}@h/db"),
                    ("query", "select 1"),
                ],
            ),
            connector(
                "sql",
                &[("url", "${file:sales-db-url}"), ("query", "select 1")],
            ),
            connector("http", &[("url", "https://h/x.csv?sig=${file:sig}&page=2")]),
            connector("connector", &[("name", "crm"), ("api_token", "${env:CRM}")]),
        ] {
            let mut c = valid();
            c.source = Some(source.clone());
            assert_eq!(validate(&c), Ok(()), "{source:?}");
        }
    }

    #[test]
    fn credentials_of_configurations_stored_before_are_redacted() {
        let mut c = valid();
        c.source = Some(connector(
            "sql",
            &[
                ("url", "postgres://u:pw@h/db?sslmode=require"),
                ("query", "select 1"),
            ],
        ));
        c.delivery = Some(connector(
            "http",
            &[("url", "https://h/up?X-Amz-Signature=abc&x=1")],
        ));
        let shown = redacted(c);
        assert_eq!(
            shown.source.unwrap().params["url"],
            "postgres://u:***@h/db?sslmode=require"
        );
        assert_eq!(
            shown.delivery.unwrap().params["url"],
            "https://h/up?X-Amz-Signature=***&x=1"
        );
        let plugin = redacted(ReportConfig {
            source: Some(connector(
                "connector",
                &[("name", "crm"), ("password", "pw"), ("key", "${env:K}")],
            )),
            ..valid()
        });
        let params = &plugin.source.unwrap().params;
        assert_eq!(
            (params["password"].as_str(), params["key"].as_str()),
            ("***", "${env:K}")
        );
    }

    #[test]
    fn delivery_file_names_follow_the_shared_rule() {
        for name in [
            "a\nb.pdf",
            "a\\b.pdf",
            "a\0.pdf",
            &format!("{}.pdf", "x".repeat(252)),
        ] {
            let mut c = valid();
            c.delivery = Some(connector("directory", &[("file_name", name)]));
            let invalid = validate(&c).expect_err("refused");
            assert_eq!(invalid.fields(), ["delivery.params.file_name"], "{name:?}");
            let expected = rules::delivery_file_name(name, SAMPLE_JOB_ID).unwrap_err();
            assert!(
                invalid.errors[0].problem.ends_with(&expected),
                "{invalid:?}"
            );
        }
    }

    #[test]
    fn what_is_sent_bounds_the_answer() {
        // Thousands of bad filters: one problem, the count.
        let mut c = valid();
        let t = c.transformation.as_mut().unwrap();
        t.filters = vec![Filter::default(); 5000];
        let invalid = validate(&c).expect_err("refused");
        assert_eq!(invalid.fields(), ["transformation.filters"]);

        // As many bad entries as the caps allow, each naming a long unknown column: at most
        // MAX_ERRORS problems, each echoing a short prefix.
        let long = "c".repeat(MAX_COLUMN);
        let mut c = valid();
        let t = c.transformation.as_mut().unwrap();
        t.group_by = (0..MAX_GROUP_BY)
            .map(|i| format!("{long:.120}{i}"))
            .collect();
        t.aggregates.clear();
        t.filters = vec![Filter::default(); MAX_FILTERS];
        t.sort = (0..MAX_SORT)
            .map(|i| SortKey {
                column: format!("{long:.120}x{i}"),
                descending: false,
            })
            .collect();
        c.name = "N".repeat(1000);
        let invalid = validate(&c).expect_err("refused");
        assert_eq!(invalid.errors.len(), MAX_ERRORS);
        assert!(invalid.omitted > 100, "{}", invalid.omitted);
        let message = describe(&invalid);
        assert!(message.len() < 8 * 1024, "{} bytes", message.len());
        assert!(message.ends_with(&format!("; and {} more problems", invalid.omitted)));

        // A 1 MB name: refused by the size of the whole, in one short problem.
        let mut c = valid();
        c.name = "n".repeat(1 << 20);
        let invalid = validate(&c).expect_err("refused");
        assert_eq!(invalid.fields(), ["report"]);
        assert!(describe(&invalid).len() < 512);

        // Just under the size cap, names of every length are echoed shortened.
        let mut c = valid();
        c.name = "N".repeat(MAX_ENCODED / 2);
        let message = describe(&validate(&c).expect_err("refused"));
        assert!(message.len() < 512, "{message}");
    }
}
