//! The gRPC services: one file per service, the caller identity layer, and the one mapping
//! of store errors to gRPC statuses.

pub mod auth;
pub mod caller;
pub mod jobs;
pub mod reports;
pub mod wire;
pub mod workers;

use tonic::Status;
use tracing::error;

use crate::store::StoreError;

/// The one mapping of store errors to statuses. Database details stay in the server log.
pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(id) => Status::not_found(format!(
            "job {id} not found: check the id (`presswork jobs list` shows existing jobs)"
        )),
        StoreError::Contended => {
            Status::aborted("the job changed many times while this request was applied: try again")
        }
        StoreError::UserExists(name) => {
            Status::already_exists(format!("user {name} already exists: pick another name"))
        }
        StoreError::UserNotFound(name) => {
            Status::not_found(format!("user {name} not found: `users list` shows them"))
        }
        StoreError::ReportExists(name) => Status::already_exists(format!(
            "report {name} already exists: pick another name, or change it with UpdateReport (`presswork reports update`)"
        )),
        StoreError::ReportNotFound(name) => Status::not_found(format!(
            "report {name} not found: `presswork reports list` shows the configured reports"
        )),
        StoreError::ReportVersion { name, current } => Status::aborted(format!(
            "report {name} was changed by someone else meanwhile (it is now at version {current}): read it again and re-apply your change"
        )),
        StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) => {
            error!(error = %e, "no database connection free in time");
            Status::unavailable(
                "the control plane is busy (no database connection was free in time): retry in a moment",
            )
        }
        StoreError::Database(_)
        | StoreError::Sqlite(_)
        | StoreError::Migrate(_)
        | StoreError::Corrupt(_) => {
            error!(error = %e, "store error");
            Status::internal(
                "the control plane could not read or write its database; the error is in its log. Try again, and check the database if it persists.",
            )
        }
    }
}
