import { JobStatus, Stage, type Job } from "../gen/presswork/v1/jobs_pb";

export const STATUS_LABELS: Record<JobStatus, string> = {
  [JobStatus.UNSPECIFIED]: "Unknown",
  [JobStatus.QUEUED]: "Queued",
  [JobStatus.RUNNING]: "Running",
  [JobStatus.CANCELLING]: "Cancelling...",
  [JobStatus.SUCCEEDED]: "Succeeded",
  [JobStatus.FAILED]: "Failed",
  [JobStatus.CANCELLED]: "Cancelled",
};

export const STAGE_LABELS: Record<Stage, string> = {
  [Stage.UNSPECIFIED]: "",
  [Stage.INGEST]: "Ingest",
  [Stage.TRANSFORM]: "Transform",
  [Stage.GENERATE]: "Generate",
  [Stage.DELIVER]: "Deliver",
};

/** Statuses a cancel may be asked for (BR-002; the server enforces it too). */
export function isCancellable(status: JobStatus): boolean {
  return status === JobStatus.QUEUED || status === JobStatus.RUNNING;
}

export function isTerminal(status: JobStatus): boolean {
  return (
    status === JobStatus.SUCCEEDED || status === JobStatus.FAILED || status === JobStatus.CANCELLED
  );
}

/** "1.2 s", "3 min 4 s", "2 h 5 min". */
export function formatDuration(ms: number): string {
  if (ms < 0) ms = 0;
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min ${s % 60} s`;
  return `${Math.floor(min / 60)} h ${min % 60} min`;
}

/** How long the job ran (or has been running), or "" before it started. */
export function jobDuration(job: Job, nowMs: number): string {
  const started = Number(job.startedAtUnixMs);
  if (!started) return "";
  const finished = Number(job.finishedAtUnixMs);
  return formatDuration((finished || nowMs) - started);
}

export function formatTime(unixMs: bigint): string {
  const ms = Number(unixMs);
  if (!ms) return "";
  return new Date(ms).toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

export function stageAndProgress(job: Job): string {
  const stage = STAGE_LABELS[job.stage] ?? "";
  if (!stage) return "";
  if (job.status === JobStatus.RUNNING || job.status === JobStatus.CANCELLING) {
    return `${stage} ${Math.round(job.progress * 100)}%`;
  }
  return stage;
}
