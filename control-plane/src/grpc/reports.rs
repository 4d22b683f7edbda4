//! `ReportService`: stored report configurations, validated on every save.

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
use crate::reports;
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
        .map_err(|errors| Status::invalid_argument(reports::describe(&errors)))?;
    Ok(report)
}

fn checked_name(name: &str) -> Result<&str, Status> {
    if reports::valid_name(name) {
        Ok(name)
    } else {
        Err(Status::invalid_argument(format!(
            "`{name}` is not a report name: use lower-case letters, digits and dashes, starting with a letter"
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
            report: Some(stored),
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
            report: Some(report),
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
            reports,
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
            report: Some(stored),
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
