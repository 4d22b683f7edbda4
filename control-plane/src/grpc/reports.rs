//! `ReportService`: stored report configurations, validated on every save. What it returns
//! is [`reports::redacted`]: a credential written out in a configuration stored before secret
//! references existed is shown to nobody.

use presswork_proto::v1::report_service_server::ReportService;
use presswork_proto::v1::{
    CreateReportRequest, CreateReportResponse, DeleteReportRequest, DeleteReportResponse,
    GetReportRequest, GetReportResponse, ListReportsRequest, ListReportsResponse, ReportConfig,
    UpdateReportRequest, UpdateReportResponse,
};
use tonic::{Request, Response, Status};
use tracing::info;

use super::caller::caller;
use super::store_status;
use crate::echo::shown;
use crate::reports::{self, redacted};
use crate::store::Store;
use crate::time::now_ms;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

pub struct ReportApi {
    pub store: Store,
}

/// The configuration of a create or update, checked.
fn checked(report: Option<ReportConfig>) -> Result<ReportConfig, Status> {
    let report = report.ok_or_else(|| {
        Status::invalid_argument("report is required: the configuration to store")
    })?;
    reports::validate(&report)
        .map_err(|invalid| Status::invalid_argument(reports::describe(&invalid)))?;
    Ok(report)
}

fn checked_name(name: &str) -> Result<&str, Status> {
    if reports::valid_name(name) {
        Ok(name)
    } else {
        Err(Status::invalid_argument(format!(
            "`{}` is not a report name: use lower-case letters, digits and dashes, starting with a letter",
            shown(name)
        )))
    }
}

#[tonic::async_trait]
impl ReportService for ReportApi {
    async fn create_report(
        &self,
        request: Request<CreateReportRequest>,
    ) -> Result<Response<CreateReportResponse>, Status> {
        let by = caller(&request)?;
        let report = checked(request.into_inner().report)?;
        let stored = self
            .store
            .create_report(&report, by.name(), now_ms())
            .await
            .map_err(store_status)?;
        info!(report = %stored.name, by = by.name(), "report configuration created");
        Ok(Response::new(CreateReportResponse {
            report: Some(redacted(stored)),
        }))
    }

    async fn get_report(
        &self,
        request: Request<GetReportRequest>,
    ) -> Result<Response<GetReportResponse>, Status> {
        let name = checked_name(&request.get_ref().name)?;
        let report = self
            .store
            .report(name)
            .await
            .map_err(store_status)?
            .ok_or_else(|| store_status(crate::store::StoreError::ReportNotFound(name.into())))?;
        Ok(Response::new(GetReportResponse {
            report: Some(redacted(report)),
        }))
    }

    async fn list_reports(
        &self,
        request: Request<ListReportsRequest>,
    ) -> Result<Response<ListReportsResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(checked_name(&req.page_token).map_err(|_| {
                Status::invalid_argument("page_token is not one this server issued: pass next_page_token from the previous response, or leave it empty")
            })?)
        };
        // One more than asked, to know whether another page follows.
        let mut reports = self
            .store
            .reports(after, limit + 1)
            .await
            .map_err(store_status)?;
        let more = reports.len() > limit as usize;
        reports.truncate(limit as usize);
        let next_page_token = match (more, reports.last()) {
            (true, Some(last)) => last.name.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListReportsResponse {
            reports: reports.into_iter().map(redacted).collect(),
            next_page_token,
        }))
    }

    async fn update_report(
        &self,
        request: Request<UpdateReportRequest>,
    ) -> Result<Response<UpdateReportResponse>, Status> {
        let by = caller(&request)?;
        let req = request.into_inner();
        if req.expected_version < 0 {
            return Err(Status::invalid_argument(
                "expected_version cannot be negative: pass the version you read, or 0",
            ));
        }
        let report = checked(req.report)?;
        let expected = (req.expected_version > 0).then_some(req.expected_version);
        let stored = self
            .store
            .update_report(&report, expected, by.name(), now_ms())
            .await
            .map_err(store_status)?;
        info!(report = %stored.name, version = stored.version, by = by.name(), "report configuration updated");
        Ok(Response::new(UpdateReportResponse {
            report: Some(redacted(stored)),
        }))
    }

    async fn delete_report(
        &self,
        request: Request<DeleteReportRequest>,
    ) -> Result<Response<DeleteReportResponse>, Status> {
        let by = caller(&request)?;
        let name = checked_name(&request.get_ref().name)?.to_owned();
        self.store
            .delete_report(&name)
            .await
            .map_err(store_status)?;
        info!(report = %name, by = by.name(), "report configuration deleted");
        Ok(Response::new(DeleteReportResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use presswork_proto::v1::{Connector, Role};
    use tonic::Code;

    use super::*;
    use crate::auth::Caller;

    fn connector(kind: &str, params: &[(&str, &str)]) -> Connector {
        Connector {
            kind: kind.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn sql_report(url: &str) -> ReportConfig {
        ReportConfig {
            name: "sales".into(),
            source: Some(connector("sql", &[("url", url), ("query", "select 1")])),
            delivery: Some(connector("directory", &[])),
            ..Default::default()
        }
    }

    async fn api() -> (ReportApi, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("presswork.db").display());
        let store = Store::connect(&url).await.expect("store");
        (ReportApi { store }, dir)
    }

    fn as_admin<T>(message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.extensions_mut().insert(Caller::User {
            name: "ada".into(),
            role: Role::Administrator,
        });
        request
    }

    #[tokio::test]
    async fn a_password_written_out_is_neither_stored_nor_shown() {
        let (api, _dir) = api().await;
        let refused = api
            .create_report(as_admin(CreateReportRequest {
                report: Some(sql_report("postgres://u:pw@h/db")),
            }))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(
            refused.message().contains("${env:NAME} or ${file:NAME}")
                && !refused.message().contains("pw@"),
            "{}",
            refused.message()
        );
        assert_eq!(api.store.report("sales").await.expect("read"), None);

        // A configuration stored before the rule (straight into the store) is shown redacted.
        api.store
            .create_report(&sql_report("postgres://u:pw@h/db"), "ada", 1)
            .await
            .expect("store an old row");
        let got = api
            .get_report(Request::new(GetReportRequest {
                name: "sales".into(),
            }))
            .await
            .expect("get")
            .into_inner()
            .report
            .expect("report");
        assert_eq!(got.source.unwrap().params["url"], "postgres://u:***@h/db");
        let listed = api
            .list_reports(Request::new(ListReportsRequest::default()))
            .await
            .expect("list")
            .into_inner()
            .reports;
        assert_eq!(
            listed[0].source.as_ref().unwrap().params["url"],
            "postgres://u:***@h/db"
        );

        // A reference is stored and shown as it is.
        let with_reference = sql_report("postgres://u:${env:PG_PASS}@h/db");
        let updated = api
            .update_report(as_admin(UpdateReportRequest {
                report: Some(with_reference.clone()),
                expected_version: 0,
            }))
            .await
            .expect("update")
            .into_inner()
            .report
            .expect("report");
        assert_eq!(updated.source, with_reference.source);
    }

    #[tokio::test]
    async fn oversized_input_gets_a_short_answer() {
        let (api, _dir) = api().await;
        let mut report = sql_report("postgres://h/db");
        report.name = "N".repeat(1 << 20);
        let refused = api
            .create_report(as_admin(CreateReportRequest {
                report: Some(report),
            }))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().len() < 8 * 1024);
        let refused = api
            .get_report(Request::new(GetReportRequest {
                name: "N".repeat(1 << 20),
            }))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().len() < 512, "{}", refused.message());
    }

    #[tokio::test]
    async fn a_file_name_with_a_newline_is_refused_on_save() {
        let (api, _dir) = api().await;
        let mut report = sql_report("postgres://h/db");
        report.delivery = Some(connector("directory", &[("file_name", "a\nb.pdf")]));
        let refused = api
            .create_report(as_admin(CreateReportRequest {
                report: Some(report),
            }))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(
            refused
                .message()
                .contains("delivery.params.file_name: `a\\nb.pdf` is not a file name"),
            "{}",
            refused.message()
        );
    }
}
