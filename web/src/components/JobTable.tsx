import { useEffect, useState } from "react";
import * as Tooltip from "@radix-ui/react-tooltip";
import type { Job, JobStatus } from "../gen/presswork/v1/jobs_pb";
import { STATUS_LABELS, formatTime, isCancellable, jobDuration, stageAndProgress } from "../jobs/format";
import { statusSummary } from "../jobs/summary";
import { CancelJobButton } from "./CancelJobButton";
import { StatusBadge } from "./StatusBadge";

type Props = {
  jobs: Job[];
  /** The status to show for a job (a cancel just confirmed shows before the server says). */
  statusOf: (job: Job) => JobStatus;
  /** Present only for administrators: the table then has a cancel action. */
  onRequestCancel?: (job: Job, opener: HTMLButtonElement) => void;
  /** Opens the job's detail view; `opener` gets the focus back when it closes. */
  onOpenDetail: (job: Job, opener: HTMLButtonElement) => void;
  loaded: boolean;
};

/** The current time, refreshed every second, for the durations of running jobs. */
function useNow(intervalMs = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(timer);
  }, [intervalMs]);
  return now;
}

export function jobRowId(jobId: string): string {
  return `job-row-${jobId}`;
}

/**
 * The status, as a button that opens the job's detail view, with a tooltip saying in one line
 * how the job got there (for a cancel: who, and whether and when it stopped).
 */
function StatusCell({ job, status, onOpenDetail }: { job: Job; status: JobStatus; onOpenDetail: Props["onOpenDetail"] }) {
  const summary =
    status === job.status ? statusSummary(job) : "Cancel requested; waiting for the control plane to answer.";
  return (
    <Tooltip.Root>
      <Tooltip.Trigger asChild>
        <button
          type="button"
          className="status-button"
          aria-label={`${STATUS_LABELS[status]} (details of job ${job.id})`}
          onClick={(e) => onOpenDetail(job, e.currentTarget)}
        >
          <StatusBadge status={status} />
        </button>
      </Tooltip.Trigger>
      <Tooltip.Portal>
        <Tooltip.Content className="tooltip status-tooltip" sideOffset={4}>
          {summary}
        </Tooltip.Content>
      </Tooltip.Portal>
    </Tooltip.Root>
  );
}

export function JobTable({ jobs, statusOf, onRequestCancel, onOpenDetail, loaded }: Props) {
  const now = useNow();
  return (
    <table className="jobs">
      <caption>Jobs</caption>
      <thead>
        <tr>
          <th scope="col">Job</th>
          <th scope="col">Report</th>
          <th scope="col">Status</th>
          <th scope="col">Stage</th>
          <th scope="col">Submitted by</th>
          <th scope="col">Submitted</th>
          <th scope="col">Duration</th>
          {onRequestCancel && <th scope="col">Actions</th>}
        </tr>
      </thead>
      <tbody>
        {jobs.length === 0 && (
          <tr>
            <td colSpan={onRequestCancel ? 8 : 7} className="empty">
              {loaded ? "No jobs to show." : "Loading jobs..."}
            </td>
          </tr>
        )}
        {jobs.map((job) => {
          const status = statusOf(job);
          return (
            <tr key={job.id} id={jobRowId(job.id)} tabIndex={-1} data-status={status}>
              <td className="mono">{job.id}</td>
              <td>{job.report}</td>
              <td>
                <StatusCell job={job} status={status} onOpenDetail={onOpenDetail} />
              </td>
              <td>{stageAndProgress(job)}</td>
              <td>{job.submittedBy}</td>
              <td>{formatTime(job.createdAtUnixMs)}</td>
              <td>{jobDuration(job, now)}</td>
              {onRequestCancel && (
                <td>
                  {isCancellable(status) && (
                    <CancelJobButton job={job} onRequestCancel={onRequestCancel} />
                  )}
                </td>
              )}
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}
