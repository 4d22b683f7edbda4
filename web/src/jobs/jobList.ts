import { JobStatus, WatchJobsResponse_Kind, type Job, type WatchJobsResponse } from "../gen/presswork/v1/jobs_pb";

/** The jobs as the stream has told them, and where to resume it. */
export type JobList = {
  jobs: Map<string, Job>;
  /** Jobs of a snapshot still being received (replaces `jobs` when complete). */
  incoming: Map<string, Job> | null;
  /** The last sequence applied; 0 before a snapshot completed. */
  sequence: bigint;
  /** True once a snapshot has completed. */
  loaded: boolean;
};

export const emptyJobList = (): JobList => ({
  jobs: new Map(),
  incoming: null,
  sequence: 0n,
  loaded: false,
});

/** Keeps the newer of two versions of a job (the stream and a cancel answer may race). */
export function upsert(jobs: Map<string, Job>, job: Job): Map<string, Job> {
  const known = jobs.get(job.id);
  if (known && known.version > job.version) return jobs;
  const next = new Map(jobs);
  next.set(job.id, job);
  return next;
}

/** Applies one message of WatchJobs. */
export function applyWatch(list: JobList, message: WatchJobsResponse): JobList {
  switch (message.kind) {
    case WatchJobsResponse_Kind.SNAPSHOT: {
      const incoming = new Map(list.incoming ?? []);
      if (message.job) incoming.set(message.job.id, message.job);
      return { ...list, incoming };
    }
    case WatchJobsResponse_Kind.SNAPSHOT_COMPLETE:
      return {
        jobs: list.incoming ?? new Map(),
        incoming: null,
        sequence: message.sequence,
        loaded: true,
      };
    case WatchJobsResponse_Kind.CHANGE: {
      if (message.sequence <= list.sequence) return list;
      const jobs = message.job ? upsert(list.jobs, message.job) : list.jobs;
      return { ...list, jobs, sequence: message.sequence };
    }
    default:
      return list;
  }
}

/** Newest first, optionally only some statuses. */
export function visibleJobs(jobs: Map<string, Job>, filter: JobStatus | "all"): Job[] {
  return [...jobs.values()]
    .filter((job) => filter === "all" || job.status === filter)
    .sort((a, b) => {
      const byTime = Number(b.createdAtUnixMs - a.createdAtUnixMs);
      return byTime !== 0 ? byTime : b.id.localeCompare(a.id);
    });
}
