import { JobStatus } from "../gen/presswork/v1/jobs_pb";
import { STATUS_LABELS } from "../jobs/format";

const CLASSES: Record<JobStatus, string> = {
  [JobStatus.UNSPECIFIED]: "unknown",
  [JobStatus.QUEUED]: "queued",
  [JobStatus.RUNNING]: "running",
  [JobStatus.CANCELLING]: "cancelling",
  [JobStatus.SUCCEEDED]: "succeeded",
  [JobStatus.FAILED]: "failed",
  [JobStatus.CANCELLED]: "cancelled",
};

export function StatusBadge({ status }: { status: JobStatus }) {
  return <span className={`status status-${CLASSES[status]}`}>{STATUS_LABELS[status]}</span>;
}
