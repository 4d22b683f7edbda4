import * as Dialog from "@radix-ui/react-dialog";
import type { Clients } from "../api/clients";
import { LogLevel, type Job, type LogEntry } from "../gen/presswork/v1/jobs_pb";
import { STAGE_LABELS, formatTime, jobDuration, stageAndProgress } from "../jobs/format";
import { cancelMilestones, formatOffset, statusSummary, type Milestone } from "../jobs/summary";
import { useJobLog, type LogState } from "../jobs/useJobLog";
import { StatusBadge } from "./StatusBadge";

type Props = {
  clients: Clients;
  /** The job as the stream knows it now, or null when the detail view is closed. */
  job: Job | null;
  onClose: () => void;
  onExpired: () => void;
  /** Where focus goes when the view closes. */
  returnFocus: () => void;
};

/** A job's details, its cancel's milestones and its execution log, all live. */
export function JobDetail({ clients, job, onClose, onExpired, returnFocus }: Props) {
  return (
    <Dialog.Root open={job !== null} onOpenChange={(open) => !open && onClose()}>
      <Dialog.Portal>
        <Dialog.Overlay className="overlay" />
        <Dialog.Content
          className="drawer"
          onCloseAutoFocus={(event) => {
            event.preventDefault();
            returnFocus();
          }}
        >
          {job && <DetailBody clients={clients} job={job} onExpired={onExpired} />}
          <Dialog.Close asChild>
            <button type="button" className="secondary drawer-close">
              Close
            </button>
          </Dialog.Close>
        </Dialog.Content>
      </Dialog.Portal>
    </Dialog.Root>
  );
}

function DetailBody({ clients, job, onExpired }: { clients: Clients; job: Job; onExpired: () => void }) {
  const params = Object.entries(job.params);
  const milestones = cancelMilestones(job);
  return (
    <>
      <Dialog.Title>Job {job.id}</Dialog.Title>
      <Dialog.Description className="detail-summary">
        <StatusBadge status={job.status} /> {statusSummary(job)}
      </Dialog.Description>
      <dl className="facts">
        <dt>Report</dt>
        <dd>{job.report}</dd>
        <dt>Stage</dt>
        <dd>{stageAndProgress(job) || "Not started"}</dd>
        <dt>Submitted</dt>
        <dd>
          {formatTime(job.createdAtUnixMs)} by {job.submittedBy || "unknown"}
        </dd>
        {job.startedAtUnixMs > 0n && (
          <>
            <dt>Started</dt>
            <dd>
              {formatTime(job.startedAtUnixMs)}
              {job.workerId && ` on ${job.workerId}`} (attempt {job.attempt})
            </dd>
          </>
        )}
        {job.finishedAtUnixMs > 0n && (
          <>
            <dt>Finished</dt>
            <dd>{formatTime(job.finishedAtUnixMs)}</dd>
          </>
        )}
        {job.startedAtUnixMs > 0n && (
          <>
            <dt>Duration</dt>
            <dd>{jobDuration(job, Date.now())}</dd>
          </>
        )}
        {params.length > 0 && (
          <>
            <dt>Parameters</dt>
            <dd className="mono">{params.map(([k, v]) => `${k}=${v}`).join(", ")}</dd>
          </>
        )}
        {job.error && (
          <>
            <dt>Error</dt>
            <dd>{job.error}</dd>
          </>
        )}
        {job.output && (
          <>
            <dt>Output</dt>
            <dd className="mono">{job.output}</dd>
          </>
        )}
      </dl>
      {milestones.length > 0 && <CancelTimeline milestones={milestones} />}
      <ExecutionLog clients={clients} jobId={job.id} onExpired={onExpired} />
    </>
  );
}

function CancelTimeline({ milestones }: { milestones: Milestone[] }) {
  return (
    <section aria-labelledby="cancel-timeline-title">
      <h3 id="cancel-timeline-title">Cancel</h3>
      <ol className="timeline">
        {milestones.map((m) => (
          <li key={m.key} className={`milestone milestone-${m.state}`} data-milestone={m.key}>
            <span className="milestone-label">{m.label}</span>{" "}
            <span className="milestone-when">
              {m.state === "done"
                ? m.key === "requested"
                  ? formatTime(BigInt(m.at))
                  : m.afterMs !== null
                    ? formatOffset(m.afterMs)
                    : ""
                : m.state === "waiting"
                  ? "waiting..."
                  : "did not happen"}
            </span>
            {m.detail && <span className="milestone-detail"> {m.detail}</span>}
          </li>
        ))}
      </ol>
    </section>
  );
}

const LOG_STATE_LABELS: Record<LogState, string> = {
  loading: "Loading the log...",
  live: "Following the log as it grows.",
  complete: "The job has ended: the log is complete.",
  reconnecting: "Connection lost, reconnecting to the log...",
  error: "",
};

const LEVEL_LABELS: Record<LogLevel, string> = {
  [LogLevel.UNSPECIFIED]: "",
  [LogLevel.DEBUG]: "debug",
  [LogLevel.INFO]: "info",
  [LogLevel.WARN]: "warn",
  [LogLevel.ERROR]: "error",
};

/** "14:02:03.117": log entries are milliseconds apart. */
export function formatLogTime(unixMs: bigint): string {
  const d = new Date(Number(unixMs));
  const pad = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function ExecutionLog({ clients, jobId, onExpired }: { clients: Clients; jobId: string; onExpired: () => void }) {
  const log = useJobLog(clients.jobs, jobId, { onExpired });
  return (
    <section aria-labelledby="log-title">
      <h3 id="log-title">Execution log</h3>
      <p className={log.state === "error" ? "error" : "log-state"} role="status" aria-live="polite">
        {log.state === "error" ? log.error : LOG_STATE_LABELS[log.state]}
      </p>
      <div className="log-scroll" tabIndex={0} role="region" aria-label={`Execution log of job ${jobId}`}>
        <table className="log">
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Level</th>
              <th scope="col">Event</th>
              <th scope="col">By</th>
              <th scope="col">Stage</th>
              <th scope="col">Message</th>
            </tr>
          </thead>
          <tbody>
            {log.entries.map((entry: LogEntry) => (
              <tr key={String(entry.id)} data-event={entry.event}>
                <td className="mono">{formatLogTime(entry.atUnixMs)}</td>
                <td>{LEVEL_LABELS[entry.level]}</td>
                <td className="mono">{entry.event}</td>
                <td>{entry.actor}</td>
                <td>{STAGE_LABELS[entry.stage]}</td>
                <td>{entry.message}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
