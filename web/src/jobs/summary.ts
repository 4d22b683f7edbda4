import { CancelResolution, JobStatus, type Job } from "../gen/presswork/v1/jobs_pb";
import { STAGE_LABELS, STATUS_LABELS, formatDuration, stageAndProgress } from "./format";

/** One step of a cancel, as the detail view's timeline shows it. */
export type Milestone = {
  key: "requested" | "delivered" | "acknowledged" | "stopped" | "ended";
  label: string;
  /** Unix ms; 0 when it has not happened (yet, or at all). */
  at: number;
  /** Milliseconds after the request, when it happened. */
  afterMs: number | null;
  /** What else there is to say about it. */
  detail: string;
  state: "done" | "waiting" | "skipped";
};

/** "+12 ms", "+1.4 s": how long after the cancel request something happened. */
export function formatOffset(ms: number): string {
  if (ms < 1000) return `+${Math.max(ms, 0)} ms`;
  return `+${formatDuration(ms)}`;
}

function afterRequest(job: Job, atMs: bigint): number | null {
  const requested = Number(job.cancel?.requestedAtUnixMs ?? 0n);
  const at = Number(atMs);
  return requested && at ? at - requested : null;
}

function stopDetail(job: Job): string {
  const cancel = job.cancel!;
  const stage = STAGE_LABELS[cancel.stoppedStage];
  const parts = [stage ? `in ${stage}` : ""];
  if (cancel.stopDurationUs > 0n) {
    parts.push(`the stage stopped ${formatStopDuration(cancel.stopDurationUs)} after the signal`);
  }
  return parts.filter(Boolean).join("; ");
}

/** Microseconds measured on the worker, shown to a useful precision. */
export function formatStopDuration(us: bigint): string {
  const n = Number(us);
  if (n < 1000) return `${(n / 1000).toFixed(2)} ms`;
  if (n < 10_000) return `${(n / 1000).toFixed(1)} ms`;
  if (n < 1_000_000) return `${Math.round(n / 1000)} ms`;
  return formatDuration(n / 1000);
}

/**
 * The cancel's milestones — requested → delivered to the worker → acknowledged → stopped — or,
 * where it ended another way, how. Empty when no cancel was requested.
 */
export function cancelMilestones(job: Job): Milestone[] {
  const cancel = job.cancel;
  if (!cancel) return [];
  const requested: Milestone = {
    key: "requested",
    label: "Requested",
    at: Number(cancel.requestedAtUnixMs),
    afterMs: 0,
    detail: [cancel.requestedBy && `by ${cancel.requestedBy}`, cancel.reason && `"${cancel.reason}"`]
      .filter(Boolean)
      .join(", "),
    state: "done",
  };
  if (cancel.resolution === CancelResolution.CANCELLED_WHILE_QUEUED) {
    return [
      requested,
      {
        key: "ended",
        label: "Cancelled while queued",
        at: Number(job.finishedAtUnixMs || cancel.requestedAtUnixMs),
        afterMs: afterRequest(job, job.finishedAtUnixMs || cancel.requestedAtUnixMs),
        detail: "The job never started.",
        state: "done",
      },
    ];
  }
  const step = (
    key: Milestone["key"],
    label: string,
    atMs: bigint,
    detail = "",
  ): Milestone => ({
    key,
    label,
    at: Number(atMs),
    afterMs: afterRequest(job, atMs),
    detail,
    state: atMs ? "done" : "waiting",
  });
  const steps = [
    requested,
    step("delivered", "Delivered to the worker", cancel.deliveredAtUnixMs, job.workerId),
    step(
      "acknowledged",
      "Acknowledged",
      cancel.acknowledgedAtUnixMs,
      cancel.pastPointOfNoReturn ? "past its point of no return: it may still finish" : "",
    ),
  ];
  const ended = endedOtherwise(job);
  if (ended) {
    for (const s of steps) if (s.state === "waiting") s.state = "skipped";
    return [...steps, ended];
  }
  return [...steps, step("stopped", "Stopped", cancel.stoppedAtUnixMs, cancel.stoppedAtUnixMs ? stopDetail(job) : "")];
}

/** The last milestone when the cancel did not end in a stop. */
function endedOtherwise(job: Job): Milestone | null {
  const cancel = job.cancel!;
  const at = job.finishedAtUnixMs;
  const ended = (label: string, detail: string): Milestone => ({
    key: "ended",
    label,
    at: Number(at),
    afterMs: afterRequest(job, at),
    detail,
    state: "done",
  });
  switch (cancel.resolution) {
    case CancelResolution.FINISHED_FIRST:
      return ended(
        "Finished first",
        `The job ${STATUS_LABELS[job.status].toLowerCase()} before the cancel took effect; the cancel was ignored.`,
      );
    case CancelResolution.TIMED_OUT:
      return ended(
        "Timed out",
        "The worker did not confirm the stop in time: the job was failed and force-stopped.",
      );
    case CancelResolution.WORKER_LOST:
      return ended("Worker lost", "The worker was lost before it confirmed the stop; the job failed.");
    default:
      return null;
  }
}

/** One line for the status tooltip: "did my cancel work?" answered without opening anything. */
export function statusSummary(job: Job): string {
  const cancel = job.cancel;
  if (cancel) {
    const who = cancel.requestedBy || "someone";
    const after = (atMs: bigint) => formatOffset(afterRequest(job, atMs) ?? 0);
    switch (cancel.resolution) {
      case CancelResolution.CANCELLED_WHILE_QUEUED:
        return `Cancelled by ${who} while queued; it never ran.`;
      case CancelResolution.STOPPED: {
        const stage = STAGE_LABELS[cancel.stoppedStage];
        return `Cancelled by ${who}: stopped${stage ? ` in ${stage}` : ""} ${after(cancel.stoppedAtUnixMs)} after the request.`;
      }
      case CancelResolution.FINISHED_FIRST:
        return `Cancel by ${who} came too late: the job had already ${STATUS_LABELS[job.status].toLowerCase()}.`;
      case CancelResolution.TIMED_OUT:
        return `Cancel by ${who} timed out: the job was failed and force-stopped.`;
      case CancelResolution.WORKER_LOST:
        return `Cancel by ${who} was not confirmed: the worker was lost and the job failed.`;
      default:
        if (cancel.acknowledgedAtUnixMs)
          return `Cancel requested by ${who}; the worker acknowledged it ${after(cancel.acknowledgedAtUnixMs)} after the request and is stopping the job.`;
        if (cancel.deliveredAtUnixMs)
          return `Cancel requested by ${who}; delivered to the worker ${after(cancel.deliveredAtUnixMs)} after the request, waiting for it to stop.`;
        return `Cancel requested by ${who}; not yet delivered to the worker.`;
    }
  }
  switch (job.status) {
    case JobStatus.QUEUED:
      return "Queued: waiting for a free worker.";
    case JobStatus.RUNNING:
      return `Running: ${stageAndProgress(job) || "starting"}${job.workerId ? ` on ${job.workerId}` : ""}.`;
    case JobStatus.SUCCEEDED: {
      const took = Number(job.finishedAtUnixMs - job.startedAtUnixMs);
      return `Succeeded${job.startedAtUnixMs && job.finishedAtUnixMs ? ` in ${formatDuration(took)}` : ""}.`;
    }
    case JobStatus.FAILED:
      return `Failed${job.error ? `: ${job.error}` : ""}.`;
    default:
      return `${STATUS_LABELS[job.status]}.`;
  }
}
