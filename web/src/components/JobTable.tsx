import { useEffect, useState } from "react";
import type { Job, JobStatus } from "../gen/presswork/v1/jobs_pb";
import { formatTime, isCancellable, jobDuration, stageAndProgress } from "../jobs/format";
import { CancelJobButton } from "./CancelJobButton";
import { StatusBadge } from "./StatusBadge";

type Props = {
  jobs: Job[];
  /** The status to show for a job (a cancel just confirmed shows before the server says). */
  statusOf: (job: Job) => JobStatus;
  /** Present only for administrators: the table then has a cancel action. */
  onRequestCancel?: (job: Job, opener: HTMLButtonElement) => void;
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

export function JobTable({ jobs, statusOf, onRequestCancel, loaded }: Props) {
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
                <StatusBadge status={status} />
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
