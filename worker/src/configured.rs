//! Configured reports: a stored [`ReportConfig`] (sent in `AssignJob.config`) turned into what
//! the pipeline runs — a source, the transformation, the PDF's template and a delivery.
//!
//! The control plane validates every configuration when it is saved; the worker checks again
//! what it depends on (kinds, parameters, paths, URLs), because a configuration may come from a
//! newer or older control plane, and refuses the job with a message naming the field. The
//! rules both sides apply (delivery file names, retries, where secret references may be) are
//! [`presswork_proto::rules`]; secret references are resolved here ([`crate::secrets`]), so
//! the values exist only on the worker.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use presswork_proto::rules::{self, shown};
use presswork_proto::v1::aggregate::Function;
use presswork_proto::v1::{Connector, ReportConfig, Transformation};

use crate::plugin::Connectors;
use crate::secrets::Secrets;
use crate::stages::generate::PageSize;
use crate::stages::ingest::SourceConnector;
use crate::stages::sources::{Source, TextFormat, sql};
use crate::stages::upload::{HttpDelivery, UploadMethod};
use crate::table::Transformer;

/// The most retries an HTTP delivery may ask for.
pub const MAX_RETRIES: u32 = rules::MAX_RETRIES;
/// Retries of an HTTP delivery that does not say.
pub const DEFAULT_RETRIES: u32 = 3;

/// Where a configured report's PDF goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Published atomically as `dir/file_name`.
    Directory { dir: PathBuf, file_name: String },
    /// Uploaded.
    Http(HttpDelivery),
}

/// How a configured report's PDF looks.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub title: String,
    pub subtitle: String,
    pub totals: bool,
    pub page_size: PageSize,
}

/// A configured report, checked and ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfiguredReport {
    pub name: String,
    pub source: Source,
    pub transformation: Transformation,
    pub template: Template,
    pub delivery: Delivery,
    /// The job's parameters, sorted by name (shown in the PDF).
    pub params: Vec<(String, String)>,
}

/// What a configuration is checked against on this worker.
pub struct WorkerOffer<'a> {
    pub output_dir: &'a std::path::Path,
    pub connectors: &'a Connectors,
    /// Resolves the configuration's secret references.
    pub secrets: &'a Secrets,
}

/// Checks `config` for job `job_id`; the error names the configuration and the field, and
/// says what to do.
pub fn plan(
    config: &ReportConfig,
    params: &HashMap<String, String>,
    job_id: &str,
    offer: &WorkerOffer<'_>,
) -> Result<ConfiguredReport, String> {
    let refuse = |field: &str, problem: String| {
        format!(
            "report configuration `{}`: {field}: {problem}; fix it with `presswork reports update {}`",
            config.name, config.name
        )
    };
    let source = config
        .source
        .as_ref()
        .ok_or_else(|| refuse("source", "missing: where the rows come from".into()))?;
    let source = plan_source(source, offer).map_err(|(f, p)| refuse(&f, p))?;
    let transformation = config.transformation.clone().unwrap_or_default();
    check_transformation(&transformation).map_err(|(f, p)| refuse(&f, p))?;
    let template = config.template.clone().unwrap_or_default();
    let page_size = PageSize::from_name(&template.page_size).ok_or_else(|| {
        refuse(
            "template.page_size",
            format!(
                "`{}` is not a page size: use a4 or letter",
                template.page_size
            ),
        )
    })?;
    let delivery = config
        .delivery
        .as_ref()
        .ok_or_else(|| refuse("delivery", "missing: where the PDF goes".into()))?;
    let delivery = plan_delivery(delivery, job_id, offer).map_err(|(f, p)| refuse(&f, p))?;
    let mut params: Vec<(String, String)> =
        params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    params.sort();
    Ok(ConfiguredReport {
        name: config.name.clone(),
        source,
        transformation,
        template: Template {
            title: if config.title.is_empty() {
                config.name.clone()
            } else {
                config.title.clone()
            },
            subtitle: template.subtitle,
            totals: template.totals,
            page_size,
        },
        delivery,
        params,
    })
}

type FieldProblem = (String, String);

fn required<'a>(part: &str, c: &'a Connector, name: &str) -> Result<&'a str, FieldProblem> {
    c.params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| {
            (
                format!("{part}.params.{name}"),
                format!("required for a {} {part}", c.kind),
            )
        })
}

fn only(part: &str, c: &Connector, allowed: &[&str]) -> Result<(), FieldProblem> {
    match c.params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err((
            format!("{part}.params.{unknown}"),
            format!(
                "not a parameter of a {} {part}; it takes {}",
                c.kind,
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            ),
        )),
        None => Ok(()),
    }
}

/// A URL parameter with its secret references resolved. References may stand only where
/// nothing shows them (see [`rules::check_url_refs`]); errors name a reference, never a value.
fn resolved_url(field: &str, text: &str, secrets: &Secrets) -> Result<String, FieldProblem> {
    rules::check_url_refs(text).map_err(|p| (field.to_string(), p))?;
    secrets.resolve(text).map_err(|p| (field.to_string(), p))
}

fn url(field: &str, text: &str, schemes: &[&str]) -> Result<reqwest::Url, FieldProblem> {
    // The parser's message never quotes the text (which may hold a resolved secret).
    let parsed =
        reqwest::Url::parse(text).map_err(|e| (field.to_string(), format!("not a URL ({e})")))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err((
            field.to_string(),
            format!(
                "a {}:// URL; use {}",
                parsed.scheme(),
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ));
    }
    Ok(parsed)
}

fn plan_source(c: &Connector, offer: &WorkerOffer<'_>) -> Result<Source, FieldProblem> {
    const PART: &str = "source";
    let connectors = offer.connectors;
    Ok(match c.kind.as_str() {
        "csv" | "jsonl" => {
            only(PART, c, &["path"])?;
            let path = PathBuf::from(required(PART, c, "path")?);
            if !path.is_absolute() {
                return Err((
                    "source.params.path".into(),
                    format!(
                        "`{}` is relative; give an absolute path on the workers",
                        path.display()
                    ),
                ));
            }
            let format = if c.kind == "csv" {
                TextFormat::Csv
            } else {
                TextFormat::Jsonl
            };
            Source::File { path, format }
        }
        "http" => {
            only(PART, c, &["url", "format"])?;
            let text = resolved_url(
                "source.params.url",
                required(PART, c, "url")?,
                offer.secrets,
            )?;
            let url = url("source.params.url", &text, &["http", "https"])?;
            let format = match c.params.get("format").map(String::as_str) {
                None | Some("" | "csv") => TextFormat::Csv,
                Some("jsonl") => TextFormat::Jsonl,
                Some(other) => {
                    return Err((
                        "source.params.format".into(),
                        format!("`{}` is not a format: use csv or jsonl", shown(other)),
                    ));
                }
            };
            Source::Http { url, format }
        }
        "sql" => {
            only(PART, c, &["url", "query"])?;
            let configured = required(PART, c, "url")?;
            let url = resolved_url("source.params.url", configured, offer.secrets)?;
            if !["postgres://", "postgresql://", "sqlite://"]
                .iter()
                .any(|s| url.starts_with(s))
            {
                // The URL as configured (its references, not their values), credentials hidden.
                return Err((
                    "source.params.url".into(),
                    format!(
                        "`{}` is not a database URL this worker reads: use postgres://, postgresql:// or sqlite://",
                        shown(&sql::shown_url(&rules::redact_url(configured)))
                    ),
                ));
            }
            let query = required(PART, c, "query")?;
            sql::check_read_only(query).map_err(|p| {
                let problem = p.trim_start_matches("source.params.query ").to_string();
                ("source.params.query".to_string(), problem)
            })?;
            Source::Sql {
                url,
                query: query.to_string(),
            }
        }
        "sample" => {
            only(PART, c, &[])?;
            Source::Sample
        }
        "connector" => {
            let name = required(PART, c, "name")?;
            let program = connectors.get(name).ok_or_else(|| {
                let known = connectors.names();
                (
                    "source.params.name".to_string(),
                    format!(
                        "this worker has no connector `{}` (it has {}); register it with --connector NAME=PATH",
                        shown(name),
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                )
            })?;
            let params: BTreeMap<String, String> = c
                .params
                .iter()
                .filter(|(k, _)| k.as_str() != "name")
                .map(|(k, v)| {
                    let value = offer
                        .secrets
                        .resolve(v)
                        .map_err(|p| (format!("source.params.{}", shown(k)), p))?;
                    Ok((k.clone(), value))
                })
                .collect::<Result<_, FieldProblem>>()?;
            Source::Connector(SourceConnector {
                program,
                params,
                grace: connectors.grace(),
            })
        }
        other => {
            return Err((
                "source.kind".into(),
                format!(
                    "`{}` is not a source kind: use csv, jsonl, http, sql, sample or connector",
                    shown(other)
                ),
            ));
        }
    })
}

fn plan_delivery(
    c: &Connector,
    job_id: &str,
    offer: &WorkerOffer<'_>,
) -> Result<Delivery, FieldProblem> {
    const PART: &str = "delivery";
    Ok(match c.kind.as_str() {
        "directory" => {
            only(PART, c, &["file_name", "path"])?;
            let pattern = c.params.get("file_name").map_or("", String::as_str);
            let file_name = rules::delivery_file_name(pattern, job_id).map_err(|problem| {
                (
                    "delivery.params.file_name".to_string(),
                    format!("`{}` is {problem}", shown(pattern)),
                )
            })?;
            let dir = match c.params.get("path").filter(|v| !v.is_empty()) {
                Some(path) if !path.starts_with('/') => {
                    return Err((
                        "delivery.params.path".into(),
                        format!(
                            "`{path}` is not absolute; give an absolute directory on the workers"
                        ),
                    ));
                }
                Some(path) => PathBuf::from(path),
                None => offer.output_dir.to_path_buf(),
            };
            Delivery::Directory { dir, file_name }
        }
        "http" => {
            only(PART, c, &["url", "method", "retries"])?;
            let text = resolved_url(
                "delivery.params.url",
                required(PART, c, "url")?,
                offer.secrets,
            )?;
            let url = url("delivery.params.url", &text, &["http", "https"])?;
            let method = match c.params.get("method").map(String::as_str) {
                None | Some("" | "PUT") => UploadMethod::Put,
                Some("POST") => UploadMethod::Post,
                Some(other) => {
                    return Err((
                        "delivery.params.method".into(),
                        format!(
                            "`{}` is not a method to upload with: use PUT or POST",
                            shown(other)
                        ),
                    ));
                }
            };
            let retries = match c.params.get("retries").filter(|v| !v.is_empty()) {
                None => DEFAULT_RETRIES,
                Some(text) => text
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= MAX_RETRIES)
                    .ok_or_else(|| {
                        (
                            "delivery.params.retries".to_string(),
                            format!("`{text}` is not a number of retries: use 0 to {MAX_RETRIES}"),
                        )
                    })?,
            };
            Delivery::Http(HttpDelivery {
                url,
                method,
                retries,
            })
        }
        "connector" => {
            return Err((
                "delivery.kind".into(),
                "delivery connectors are not supported yet; deliver to a directory or http".into(),
            ));
        }
        other => {
            return Err((
                "delivery.kind".into(),
                format!(
                    "`{}` is not a delivery kind: use directory or http",
                    shown(other)
                ),
            ));
        }
    })
}

fn check_transformation(t: &Transformation) -> Result<(), FieldProblem> {
    for (i, aggregate) in t.aggregates.iter().enumerate() {
        let function = Function::try_from(aggregate.function).unwrap_or(Function::Unspecified);
        if function == Function::Unspecified {
            return Err((
                format!("transformation.aggregates[{i}].function"),
                "required: one of count, sum, avg, min, max".into(),
            ));
        }
        if function != Function::Count && aggregate.column.trim().is_empty() {
            return Err((
                format!("transformation.aggregates[{i}].column"),
                "required: the column to aggregate (only count may leave it out)".into(),
            ));
        }
    }
    Transformer::new(t)
        .map(drop)
        .map_err(|e| ("transformation.filters".to_string(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use presswork_proto::v1::{Aggregate, Template as TemplateConfig};

    fn connector(kind: &str, params: &[(&str, &str)]) -> Connector {
        Connector {
            kind: kind.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn config(source: Connector, delivery: Connector) -> ReportConfig {
        ReportConfig {
            name: "monthly".into(),
            source: Some(source),
            delivery: Some(delivery),
            ..Default::default()
        }
    }

    fn plan_of(config: &ReportConfig) -> Result<ConfiguredReport, String> {
        let connectors = Connectors::default();
        let secrets = Secrets::with_env(None, &[("PG_PASS", "s3cret"), ("API_TOKEN", "t0ken")]);
        let offer = WorkerOffer {
            output_dir: std::path::Path::new("/srv/out"),
            connectors: &connectors,
            secrets: &secrets,
        };
        plan(config, &HashMap::new(), "job-9", &offer)
    }

    #[test]
    fn defaults_fill_in_what_the_configuration_leaves_out() {
        let planned = plan_of(&config(
            connector("sample", &[]),
            connector("directory", &[]),
        ))
        .expect("valid");
        assert_eq!(planned.source, Source::Sample);
        assert_eq!(planned.template.title, "monthly");
        assert_eq!(planned.template.page_size, PageSize::A4);
        assert_eq!(
            planned.delivery,
            Delivery::Directory {
                dir: "/srv/out".into(),
                file_name: "job-9.pdf".into()
            }
        );
        let mut c = config(
            connector("http", &[("url", "https://h/x.jsonl"), ("format", "jsonl")]),
            connector("http", &[("url", "https://h/up"), ("method", "POST")]),
        );
        c.template = Some(TemplateConfig {
            page_size: "letter".into(),
            ..Default::default()
        });
        let planned = plan_of(&c).expect("valid");
        assert!(matches!(
            planned.source,
            Source::Http {
                format: TextFormat::Jsonl,
                ..
            }
        ));
        let Delivery::Http(http) = planned.delivery else {
            panic!("http delivery");
        };
        assert_eq!((http.method, http.retries), (UploadMethod::Post, 3));
        assert_eq!(planned.template.page_size, PageSize::Letter);
    }

    #[test]
    fn refusals_name_the_field_and_what_to_do() {
        let refused = |source: Connector, delivery: Connector| {
            plan_of(&config(source, delivery)).expect_err("refused")
        };
        let dir = || connector("directory", &[]);
        assert_eq!(
            refused(connector("csv", &[]), dir()),
            "report configuration `monthly`: source.params.path: required for a csv source; fix it with `presswork reports update monthly`"
        );
        assert!(refused(connector("csv", &[("path", "x.csv")]), dir()).contains("is relative"));
        assert!(
            refused(
                connector(
                    "sql",
                    &[("url", "sqlite:///d.db"), ("query", "DELETE FROM t")]
                ),
                dir()
            )
            .contains("source.params.query: must be one read-only query")
        );
        assert!(
            refused(
                connector("sql", &[("url", "mysql://u:pw@h/d"), ("query", "select 1")]),
                dir()
            )
            .contains("`mysql://u:***@h/d` is not a database URL")
        );
        assert!(
            refused(connector("connector", &[("name", "crm")]), dir())
                .contains("this worker has no connector `crm` (it has none)")
        );
        assert!(
            refused(
                connector("sample", &[]),
                connector("connector", &[("name", "s3")])
            )
            .contains("delivery connectors are not supported yet; deliver to a directory or http")
        );
        assert!(
            refused(
                connector("sample", &[]),
                connector("directory", &[("file_name", "../x.pdf")])
            )
            .contains("delivery.params.file_name")
        );
        assert!(
            refused(
                connector("sample", &[]),
                connector("http", &[("url", "https://h/"), ("retries", "11")])
            )
            .contains("delivery.params.retries: `11` is not a number of retries: use 0 to 10")
        );
        assert!(
            refused(connector("sample", &[("rows", "5")]), dir())
                .contains("source.params.rows: not a parameter of a sample source")
        );
        let mut c = config(connector("sample", &[]), dir());
        c.transformation = Some(Transformation {
            aggregates: vec![Aggregate {
                function: Function::Sum as i32,
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(
            plan_of(&c)
                .unwrap_err()
                .contains("transformation.aggregates[0].column: required")
        );
    }

    #[test]
    fn the_file_name_takes_the_job_id() {
        let planned = plan_of(&config(
            connector("sample", &[]),
            connector(
                "directory",
                &[("file_name", "sales-{job_id}.pdf"), ("path", "/data")],
            ),
        ))
        .expect("valid");
        assert_eq!(
            planned.delivery,
            Delivery::Directory {
                dir: "/data".into(),
                file_name: "sales-job-9.pdf".into()
            }
        );
    }

    #[test]
    fn secret_references_are_resolved_on_the_worker() {
        let planned = plan_of(&config(
            connector(
                "sql",
                &[
                    ("url", "postgres://ada:${env:PG_PASS}@db.example/sales"),
                    ("query", "select 1"),
                ],
            ),
            connector(
                "http",
                &[("url", "https://h/upload?token=${env:API_TOKEN}")],
            ),
        ))
        .expect("valid");
        assert_eq!(
            planned.source,
            Source::Sql {
                url: "postgres://ada:s3cret@db.example/sales".into(),
                query: "select 1".into()
            }
        );
        let Delivery::Http(http) = planned.delivery else {
            panic!("http delivery");
        };
        assert_eq!(http.url.as_str(), "https://h/upload?token=t0ken");
        // Described without the values.
        assert!(!planned.source.describe().contains("s3cret"));
    }

    #[test]
    fn a_reference_that_cannot_be_resolved_fails_the_job_naming_it() {
        let error = plan_of(&config(
            connector(
                "http",
                &[("url", "https://h/x.csv?sig=${env:NOT_SET}&k=${env:PG_PASS}")],
            ),
            connector("directory", &[]),
        ))
        .expect_err("refused");
        assert!(
            error.contains(
                "source.params.url: the secret reference ${env:NOT_SET} cannot be resolved"
            ),
            "{error}"
        );
        let error = plan_of(&config(
            connector("http", &[("url", "https://${env:PG_PASS}/x.csv")]),
            connector("directory", &[]),
        ))
        .expect_err("refused");
        assert!(
            error.contains("a part of the URL that logs and messages show")
                && !error.contains("s3cret"),
            "{error}"
        );
    }

    #[test]
    fn delivery_file_names_follow_the_shared_rule() {
        for bad in [
            "a\nb.pdf",
            "a\\b.pdf",
            "a\0.pdf",
            &format!("{}.pdf", "x".repeat(252)),
        ] {
            let error = plan_of(&config(
                connector("sample", &[]),
                connector("directory", &[("file_name", bad)]),
            ))
            .expect_err("refused");
            let expected = rules::delivery_file_name(bad, "job-9").unwrap_err();
            assert!(
                error.contains("delivery.params.file_name") && error.contains(&expected),
                "{bad:?}: {error}"
            );
        }
    }
}
