//! `presswork reports …`: create, show, list, update and delete report configurations.
//!
//! A configuration is a JSON document (see [`config_from_json`]); `reports get NAME --json`
//! prints one in the same form, so it can be edited and given back to `reports update`.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::Subcommand;
use presswork_proto::v1::aggregate::Function;
use presswork_proto::v1::filter::Op;
use presswork_proto::v1::{
    Aggregate, Connector, CreateReportRequest, DeleteReportRequest, Filter, GetReportRequest,
    ListReportsRequest, ReportConfig, SortKey, Template, Transformation, UpdateReportRequest,
};
use serde_json::{Map, Value, json};
use tonic::Status;

use crate::client::ReportsClient;
use crate::error::CliError;
use crate::output;

/// Manage report configurations (changing them needs an administrator).
#[derive(Debug, Subcommand)]
pub enum ReportsCommand {
    /// Store a new configuration from a JSON file (`-` reads standard input).
    Create {
        #[arg(long, short, value_name = "PATH")]
        file: PathBuf,
    },
    /// Show a configuration (with --json, in the form `create` and `update` read).
    Get { name: String },
    /// List the configurations by name.
    List,
    /// Replace a configuration with the JSON file's (its `name` says which).
    Update {
        #[arg(long, short, value_name = "PATH")]
        file: PathBuf,
        /// Only if the stored version is still this one (from `reports get`); otherwise the
        /// update is refused and nothing changes.
        #[arg(long, value_name = "N")]
        expected_version: Option<i64>,
    },
    /// Delete a configuration. Jobs already submitted are not affected.
    Delete { name: String },
}

pub struct Context<'a> {
    pub client: ReportsClient,
    pub server: String,
    pub json: bool,
    pub stdin: &'a mut dyn Read,
    pub out: &'a mut dyn Write,
}

impl Context<'_> {
    fn failed(&self, status: Status) -> CliError {
        CliError::rpc(status, &self.server, None)
    }

    fn print(&mut self, report: &ReportConfig) -> Result<(), CliError> {
        if self.json {
            crate::write_json(self.out, &config_to_json(report))
        } else {
            writeln!(self.out, "{}", describe(report))?;
            Ok(())
        }
    }
}

pub async fn run(command: ReportsCommand, ctx: &mut Context<'_>) -> Result<(), CliError> {
    match command {
        ReportsCommand::Create { file } => {
            let report = read_config(ctx, &file)?;
            let stored = ctx
                .client
                .create_report(CreateReportRequest {
                    report: Some(report),
                })
                .await
                .map_err(|s| ctx.failed(s))?
                .into_inner()
                .report
                .ok_or_else(|| {
                    ctx.failed(Status::internal("CreateReport answered without the report"))
                })?;
            ctx.print(&stored)
        }
        ReportsCommand::Get { name } => {
            let report = ctx
                .client
                .get_report(GetReportRequest { name })
                .await
                .map_err(|s| ctx.failed(s))?
                .into_inner()
                .report
                .ok_or_else(|| {
                    ctx.failed(Status::internal("GetReport answered without the report"))
                })?;
            ctx.print(&report)
        }
        ReportsCommand::List => list(ctx).await,
        ReportsCommand::Update {
            file,
            expected_version,
        } => {
            let report = read_config(ctx, &file)?;
            let stored = ctx
                .client
                .update_report(UpdateReportRequest {
                    report: Some(report),
                    expected_version: expected_version.unwrap_or(0),
                })
                .await
                .map_err(|s| ctx.failed(s))?
                .into_inner()
                .report
                .ok_or_else(|| {
                    ctx.failed(Status::internal("UpdateReport answered without the report"))
                })?;
            ctx.print(&stored)
        }
        ReportsCommand::Delete { name } => {
            ctx.client
                .delete_report(DeleteReportRequest { name: name.clone() })
                .await
                .map_err(|s| ctx.failed(s))?;
            if ctx.json {
                crate::write_json(ctx.out, &json!({ "deleted": name }))
            } else {
                writeln!(ctx.out, "deleted report {name}")?;
                Ok(())
            }
        }
    }
}

async fn list(ctx: &mut Context<'_>) -> Result<(), CliError> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ctx
            .client
            .list_reports(ListReportsRequest {
                page_size: 1000,
                page_token,
            })
            .await
            .map_err(|s| ctx.failed(s))?
            .into_inner();
        all.extend(page.reports);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if ctx.json {
        for report in &all {
            writeln!(ctx.out, "{}", config_to_json(report))?;
        }
        return Ok(());
    }
    if all.is_empty() {
        writeln!(
            ctx.out,
            "no report configurations; add one with `presswork reports create --file PATH`"
        )?;
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["NAME", "VERSION", "SOURCE", "DELIVERY", "UPDATED", "BY"]);
    for r in &all {
        table.add_row([
            r.name.clone(),
            r.version.to_string(),
            r.source.as_ref().map_or(String::new(), |c| c.kind.clone()),
            r.delivery
                .as_ref()
                .map_or(String::new(), |c| c.kind.clone()),
            output::table_time(r.updated_at_unix_ms),
            r.updated_by.clone(),
        ]);
    }
    writeln!(ctx.out, "{table}")?;
    Ok(())
}

fn read_config(ctx: &mut Context<'_>, file: &PathBuf) -> Result<ReportConfig, CliError> {
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        ctx.stdin.read_to_string(&mut text).map_err(|e| {
            CliError::Usage(format!(
                "cannot read the configuration from standard input: {e}"
            ))
        })?;
        text
    } else {
        std::fs::read_to_string(file).map_err(|e| {
            CliError::Usage(format!(
                "cannot read the configuration file {}: {e}",
                file.display()
            ))
        })?
    };
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{} is not valid JSON: {e}", file.display())))?;
    config_from_json(&value).map_err(|e| {
        CliError::Usage(format!(
            "{}: {e}; see `presswork reports --help` and docs/operations.md",
            file.display()
        ))
    })
}

/// A few lines for people.
fn describe(r: &ReportConfig) -> String {
    let connector = |c: &Option<Connector>| match c {
        None => "none".to_owned(),
        Some(c) => {
            let mut params: Vec<String> =
                c.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            params.sort();
            if params.is_empty() {
                c.kind.clone()
            } else {
                format!("{} ({})", c.kind, params.join(", "))
            }
        }
    };
    let mut lines = vec![
        format!("Report:      {} (version {})", r.name, r.version),
        format!(
            "Title:       {}",
            if r.title.is_empty() {
                &r.name
            } else {
                &r.title
            }
        ),
    ];
    if !r.description.is_empty() {
        lines.push(format!("Description: {}", r.description));
    }
    lines.push(format!("Source:      {}", connector(&r.source)));
    if let Some(t) = &r.transformation {
        let v = transformation_to_json(t);
        lines.push(format!("Transform:   {v}"));
    }
    lines.push(format!("Delivery:    {}", connector(&r.delivery)));
    lines.push(format!(
        "Updated:     {} by {}",
        output::table_time(r.updated_at_unix_ms),
        r.updated_by
    ));
    lines.join("\n")
}

const OPS: [(&str, Op); 7] = [
    ("eq", Op::Eq),
    ("ne", Op::Ne),
    ("lt", Op::Lt),
    ("le", Op::Le),
    ("gt", Op::Gt),
    ("ge", Op::Ge),
    ("contains", Op::Contains),
];

const FUNCTIONS: [(&str, Function); 5] = [
    ("count", Function::Count),
    ("sum", Function::Sum),
    ("avg", Function::Avg),
    ("min", Function::Min),
    ("max", Function::Max),
];

fn op_name(raw: i32) -> &'static str {
    OPS.iter()
        .find(|(_, op)| *op as i32 == raw)
        .map_or("unspecified", |(n, _)| n)
}

fn function_name(raw: i32) -> &'static str {
    FUNCTIONS
        .iter()
        .find(|(_, f)| *f as i32 == raw)
        .map_or("unspecified", |(n, _)| n)
}

fn connector_to_json(c: &Connector) -> Value {
    let params: Map<String, Value> = c
        .params
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({ "kind": c.kind, "params": params })
}

fn transformation_to_json(t: &Transformation) -> Value {
    json!({
        "filters": t.filters.iter().map(|f| json!({"column": f.column, "op": op_name(f.op), "value": f.value})).collect::<Vec<_>>(),
        "group_by": t.group_by,
        "aggregates": t.aggregates.iter().map(|a| json!({"function": function_name(a.function), "column": a.column, "alias": a.alias})).collect::<Vec<_>>(),
        "sort": t.sort.iter().map(|s| json!({"column": s.column, "descending": s.descending})).collect::<Vec<_>>(),
        "limit": t.limit,
        "columns": t.columns,
    })
}

/// The JSON form of a configuration, as `create` and `update` read it, plus what the server
/// set (`version`, `updated_by`, `created_at`, `updated_at`; ignored when read back).
pub fn config_to_json(r: &ReportConfig) -> Value {
    let mut v = json!({
        "name": r.name,
        "title": r.title,
        "description": r.description,
        "source": r.source.as_ref().map(connector_to_json),
        "transformation": r.transformation.as_ref().map(transformation_to_json),
        "template": r.template.as_ref().map(|t| json!({"subtitle": t.subtitle, "totals": t.totals, "page_size": t.page_size})),
        "delivery": r.delivery.as_ref().map(connector_to_json),
        "version": r.version,
        "updated_by": r.updated_by,
    });
    v["created_at"] = json!(output::rfc3339(r.created_at_unix_ms));
    v["updated_at"] = json!(output::rfc3339(r.updated_at_unix_ms));
    v
}

/// Reads a field of a JSON object, strictly: unknown keys are errors that name their path.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn new(path: &str, value: &'a Value, known: &[&str]) -> Result<Self, String> {
        let map = value.as_object().ok_or_else(|| {
            format!(
                "{} must be an object",
                if path.is_empty() {
                    "the configuration"
                } else {
                    path
                }
            )
        })?;
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                return Err(format!(
                    "unknown field `{at}` (known here: {})",
                    known.join(", ")
                ));
            }
        }
        Ok(Obj {
            path: path.to_owned(),
            map,
        })
    }

    fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<String, String> {
        match self.get(key) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{} must be a string", self.at(key))),
        }
    }

    fn boolean(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("{} must be true or false", self.at(key))),
        }
    }

    fn array(&self, key: &str) -> Result<&'a [Value], String> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(format!("{} must be a list", self.at(key))),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{}[{i}] must be a string", self.at(key)))
            })
            .collect()
    }
}

fn connector_from_json(path: &str, value: &Value) -> Result<Connector, String> {
    let o = Obj::new(path, value, &["kind", "params"])?;
    let mut params = std::collections::HashMap::new();
    if let Some(p) = o.get("params") {
        let map = p
            .as_object()
            .ok_or_else(|| format!("{path}.params must be an object"))?;
        for (k, v) in map {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "{path}.params.{k} must be a string, number or boolean"
                    ));
                }
            };
            params.insert(k.clone(), text);
        }
    }
    Ok(Connector {
        kind: o.string("kind")?,
        params,
    })
}

fn transformation_from_json(value: &Value) -> Result<Transformation, String> {
    let path = "transformation";
    let o = Obj::new(
        path,
        value,
        &[
            "filters",
            "group_by",
            "aggregates",
            "sort",
            "limit",
            "columns",
        ],
    )?;
    let mut t = Transformation {
        group_by: o.strings("group_by")?,
        columns: o.strings("columns")?,
        ..Default::default()
    };
    for (i, f) in o.array("filters")?.iter().enumerate() {
        let fo = Obj::new(
            &format!("{path}.filters[{i}]"),
            f,
            &["column", "op", "value"],
        )?;
        let op = fo.string("op")?;
        let op = OPS
            .iter()
            .find(|(n, _)| *n == op)
            .map(|(_, o)| *o)
            .ok_or_else(|| {
                format!(
                    "{} `{op}` is not an operator: use eq, ne, lt, le, gt, ge or contains",
                    fo.at("op")
                )
            })?;
        let value = match fo.get("value") {
            Some(Value::Number(n)) => n.to_string(),
            _ => fo.string("value")?,
        };
        t.filters.push(Filter {
            column: fo.string("column")?,
            op: op as i32,
            value,
        });
    }
    for (i, a) in o.array("aggregates")?.iter().enumerate() {
        let ao = Obj::new(
            &format!("{path}.aggregates[{i}]"),
            a,
            &["function", "column", "alias"],
        )?;
        let function = ao.string("function")?;
        let function = FUNCTIONS
            .iter()
            .find(|(n, _)| *n == function)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                format!(
                    "{} `{function}` is not a function: use count, sum, avg, min or max",
                    ao.at("function")
                )
            })?;
        t.aggregates.push(Aggregate {
            function: function as i32,
            column: ao.string("column")?,
            alias: ao.string("alias")?,
        });
    }
    for (i, s) in o.array("sort")?.iter().enumerate() {
        let so = Obj::new(&format!("{path}.sort[{i}]"), s, &["column", "descending"])?;
        t.sort.push(SortKey {
            column: so.string("column")?,
            descending: so.boolean("descending")?,
        });
    }
    t.limit = match o.get("limit") {
        None => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("{path}.limit must be a whole number, 0 or more"))?,
    };
    Ok(t)
}

/// A configuration from its JSON form. Unknown fields are errors (a typo would otherwise be
/// silently ignored); the server-set fields `config_to_json` adds are accepted and ignored.
pub fn config_from_json(value: &Value) -> Result<ReportConfig, String> {
    let o = Obj::new(
        "",
        value,
        &[
            "name",
            "title",
            "description",
            "source",
            "transformation",
            "template",
            "delivery",
            "version",
            "updated_by",
            "created_at",
            "updated_at",
        ],
    )?;
    let template = match o.get("template") {
        None => None,
        Some(t) => {
            let to = Obj::new("template", t, &["subtitle", "totals", "page_size"])?;
            Some(Template {
                subtitle: to.string("subtitle")?,
                totals: to.boolean("totals")?,
                page_size: to.string("page_size")?,
            })
        }
    };
    Ok(ReportConfig {
        name: o.string("name")?,
        title: o.string("title")?,
        description: o.string("description")?,
        source: o
            .get("source")
            .map(|v| connector_from_json("source", v))
            .transpose()?,
        transformation: o
            .get("transformation")
            .map(transformation_from_json)
            .transpose()?,
        template,
        delivery: o
            .get("delivery")
            .map(|v| connector_from_json("delivery", v))
            .transpose()?,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
        "name": "monthly-sales",
        "title": "Monthly sales",
        "source": {"kind": "csv", "params": {"path": "/data/sales.csv"}},
        "transformation": {
            "filters": [{"column": "amount", "op": "gt", "value": 0}],
            "group_by": ["region"],
            "aggregates": [{"function": "sum", "column": "amount", "alias": "total"}, {"function": "count"}],
            "sort": [{"column": "total", "descending": true}],
            "limit": 10
        },
        "template": {"subtitle": "By region", "totals": true},
        "delivery": {"kind": "http", "params": {"url": "https://x/up", "retries": 3}}
    }"#;

    #[test]
    fn json_round_trips() {
        let config = config_from_json(&serde_json::from_str(EXAMPLE).unwrap()).unwrap();
        let t = config.transformation.as_ref().unwrap();
        assert_eq!(t.filters[0].value, "0");
        assert_eq!(t.filters[0].op, Op::Gt as i32);
        assert_eq!(t.aggregates[1].function, Function::Count as i32);
        assert_eq!(t.limit, 10);
        assert_eq!(config.delivery.as_ref().unwrap().params["retries"], "3");
        let again = config_from_json(&config_to_json(&config)).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn mistakes_name_their_field() {
        let cases = [
            (r#"{"name": "x", "sorce": {}}"#, "unknown field `sorce`"),
            (
                r#"{"transformation": {"filters": [{"column": "a", "op": "like"}]}}"#,
                "transformation.filters[0].op `like`",
            ),
            (
                r#"{"transformation": {"aggregates": [{"function": "median"}]}}"#,
                "transformation.aggregates[0].function `median`",
            ),
            (
                r#"{"transformation": {"limit": -1}}"#,
                "transformation.limit must be a whole number",
            ),
            (
                r#"{"source": {"kind": "csv", "params": {"path": ["a"]}}}"#,
                "source.params.path must be",
            ),
            (
                r#"{"template": {"totals": "yes"}}"#,
                "template.totals must be true or false",
            ),
            (r#"[]"#, "the configuration must be an object"),
        ];
        for (text, want) in cases {
            let error = config_from_json(&serde_json::from_str(text).unwrap()).unwrap_err();
            assert!(error.contains(want), "{text}: {error}");
        }
    }
}
