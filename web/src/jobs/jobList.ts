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
  return applyWatchAll(list, [message]);
}

/**
 * Applies several messages of WatchJobs in order, copying the job maps once for the whole
 * batch: a snapshot of 10,000 jobs costs linear time, not quadratic.
 */
export function applyWatchAll(list: JobList, messages: WatchJobsResponse[]): JobList {
  let { jobs, incoming, sequence, loaded } = list;
  let jobsCopied = false;
  let incomingCopied = false;
  for (const message of messages) {
    switch (message.kind) {
      case WatchJobsResponse_Kind.SNAPSHOT:
        if (!incomingCopied) {
          incoming = new Map(incoming ?? []);
          incomingCopied = true;
        }
        if (message.job) incoming!.set(message.job.id, message.job);
        break;
      case WatchJobsResponse_Kind.SNAPSHOT_COMPLETE:
        jobs = incoming ?? new Map();
        // The snapshot's map becomes the list: a later snapshot message must copy it again.
        jobsCopied = incomingCopied;
        incoming = null;
        incomingCopied = false;
        sequence = message.sequence;
        loaded = true;
        break;
      case WatchJobsResponse_Kind.CHANGE: {
        if (message.sequence <= sequence) break;
        sequence = message.sequence;
        const job = message.job;
        if (!job) break;
        const known = jobs.get(job.id);
        if (known && known.version > job.version) break;
        if (!jobsCopied) {
          jobs = new Map(jobs);
          jobsCopied = true;
        }
        jobs.set(job.id, job);
        break;
      }
    }
  }
  const same =
    jobs === list.jobs && incoming === list.incoming && sequence === list.sequence && loaded === list.loaded;
  return same ? list : { jobs, incoming, sequence, loaded };
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
