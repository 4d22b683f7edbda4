//! The Presswork wire contract: generated `presswork.v1` types and services, plus the small
//! conversions every side of the wire needs (status names, stage names).

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("presswork.v1");

    /// The encoded descriptor set of `presswork.v1`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("presswork_descriptor");
}

pub mod built_in;
pub mod rules;

use v1::{Aggregate, JobStatus, Stage, aggregate::Function};

impl Aggregate {
    /// The name of the aggregate's result column: its alias, or e.g. `sum_amount`, `count`.
    pub fn result_name(&self) -> String {
        if !self.alias.is_empty() {
            return self.alias.clone();
        }
        let function = match Function::try_from(self.function).unwrap_or(Function::Unspecified) {
            Function::Count => "count",
            Function::Sum => "sum",
            Function::Avg => "avg",
            Function::Min => "min",
            Function::Max => "max",
            Function::Unspecified => "unspecified",
        };
        if self.column.is_empty() {
            function.to_owned()
        } else {
            format!("{function}_{}", self.column)
        }
    }
}

impl JobStatus {
    /// The short name used in the store, the CLI and JSON output: `QUEUED`, `RUNNING`, ...
    pub fn short_name(self) -> &'static str {
        match self {
            JobStatus::Unspecified => "UNSPECIFIED",
            JobStatus::Queued => "QUEUED",
            JobStatus::Running => "RUNNING",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelled => "CANCELLED",
        }
    }

    /// Parses a short name, case-insensitively (`queued`, `RUNNING`, ...).
    pub fn from_short_name(name: &str) -> Option<Self> {
        JobStatus::from_str_name(&format!("JOB_STATUS_{}", name.to_ascii_uppercase()))
    }

    /// SUCCEEDED, FAILED and CANCELLED never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl Stage {
    /// The short name used in logs and tables: `ingest`, `transform`, `generate`, `deliver`.
    pub fn short_name(self) -> &'static str {
        match self {
            Stage::Unspecified => "",
            Stage::Ingest => "ingest",
            Stage::Transform => "transform",
            Stage::Generate => "generate",
            Stage::Deliver => "deliver",
        }
    }

    pub fn from_short_name(name: &str) -> Option<Self> {
        Stage::from_str_name(&format!("STAGE_{}", name.to_ascii_uppercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::v1::{Aggregate, JobStatus, Stage, aggregate::Function};

    #[test]
    fn aggregate_result_names() {
        let named = |function: Function, column: &str, alias: &str| {
            Aggregate {
                function: function as i32,
                column: column.into(),
                alias: alias.into(),
            }
            .result_name()
        };
        assert_eq!(named(Function::Count, "", ""), "count");
        assert_eq!(named(Function::Sum, "amount", ""), "sum_amount");
        assert_eq!(named(Function::Avg, "amount", "mean"), "mean");
    }

    #[test]
    fn status_short_names_round_trip() {
        for status in [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Cancelling,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            assert_eq!(
                JobStatus::from_short_name(status.short_name()),
                Some(status)
            );
        }
        assert_eq!(
            JobStatus::from_short_name("running"),
            Some(JobStatus::Running)
        );
        assert_eq!(JobStatus::from_short_name("nope"), None);
    }

    #[test]
    fn stage_short_names_round_trip() {
        for stage in [
            Stage::Ingest,
            Stage::Transform,
            Stage::Generate,
            Stage::Deliver,
        ] {
            assert_eq!(Stage::from_short_name(stage.short_name()), Some(stage));
        }
    }
}
