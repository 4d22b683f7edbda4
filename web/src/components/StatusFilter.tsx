import { JobStatus } from "../gen/presswork/v1/jobs_pb";
import { STATUS_LABELS } from "../jobs/format";

export type StatusFilterValue = JobStatus | "all";

const OPTIONS: JobStatus[] = [
  JobStatus.QUEUED,
  JobStatus.RUNNING,
  JobStatus.CANCELLING,
  JobStatus.SUCCEEDED,
  JobStatus.FAILED,
  JobStatus.CANCELLED,
];

type Props = { value: StatusFilterValue; onChange: (value: StatusFilterValue) => void };

export function StatusFilter({ value, onChange }: Props) {
  return (
    <div className="status-filter">
      <label htmlFor="status-filter">Status</label>
      <select
        id="status-filter"
        value={value === "all" ? "all" : String(value)}
        onChange={(e) => onChange(e.target.value === "all" ? "all" : (Number(e.target.value) as JobStatus))}
      >
        <option value="all">All statuses</option>
        {OPTIONS.map((status) => (
          <option key={status} value={String(status)}>
            {STATUS_LABELS[status]}
          </option>
        ))}
      </select>
    </div>
  );
}
