import { useCallback, useEffect, useRef, useState } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Job, WatchJobsResponse } from "../gen/presswork/v1/jobs_pb";
import type { Clients } from "../api/clients";
import { applyWatchAll, emptyJobList, upsert, type JobList } from "./jobList";

/** What the connection indicator shows. */
export type Connection = "connecting" | "live" | "reconnecting";

export type JobStream = {
  list: JobList;
  connection: Connection;
  /** Merges a job learnt outside the stream (a cancel's answer); the newer version wins. */
  mergeJob: (job: Job) => void;
};

export type JobStreamOptions = {
  /** Called when the server no longer accepts the token. */
  onExpired: () => void;
  /** Wait before reconnect attempt `n` (1, 2, ...). */
  retryDelayMs?: (attempt: number) => number;
};

const defaultRetryDelay = (attempt: number) => Math.min(500 * 2 ** (attempt - 1), 5000);

/** Messages arriving together are applied together, at most this often (one render each). */
const BATCH_MS = 30;

/**
 * Watches every job through `JobService.WatchJobs` (a server stream: no polling). When the
 * stream drops it reconnects and resumes after the last sequence it applied, so no change is
 * missed or applied twice; if the server cannot resume from there it starts a fresh snapshot.
 */
export function useJobStream(jobs: Clients["jobs"], options: JobStreamOptions): JobStream {
  const [list, setList] = useState<JobList>(emptyJobList);
  const [connection, setConnection] = useState<Connection>("connecting");
  const listRef = useRef<JobList>(list);
  const optionsRef = useRef(options);
  optionsRef.current = options;

  const update = useCallback((next: JobList) => {
    listRef.current = next;
    setList(next);
  }, []);

  const mergeJob = useCallback(
    (job: Job) => update({ ...listRef.current, jobs: upsert(listRef.current.jobs, job) }),
    [update],
  );

  useEffect(() => {
    const abort = new AbortController();
    const retryDelay = optionsRef.current.retryDelayMs ?? defaultRetryDelay;
    const sleep = (ms: number) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        abort.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        });
      });

    // A snapshot of 10,000 jobs or a burst of changes becomes a few renders, not thousands.
    let buffered: WatchJobsResponse[] = [];
    let flushTimer: ReturnType<typeof setTimeout> | undefined;
    const flush = () => {
      clearTimeout(flushTimer);
      flushTimer = undefined;
      if (buffered.length) update(applyWatchAll(listRef.current, buffered.splice(0)));
    };

    async function run() {
      let failures = 0;
      while (!abort.signal.aborted) {
        const afterSequence = listRef.current.loaded ? listRef.current.sequence : 0n;
        try {
          const stream = jobs.watchJobs(
            { afterSequence },
            { signal: abort.signal, onHeader: () => setConnection("live") },
          );
          for await (const message of stream) {
            failures = 0;
            setConnection("live");
            buffered.push(message);
            flushTimer ??= setTimeout(flush, BATCH_MS);
          }
          flush();
        } catch (error) {
          if (abort.signal.aborted) return;
          // Resume after the last change received, applied or not.
          flush();
          const code = ConnectError.from(error).code;
          if (code === Code.Unauthenticated) {
            optionsRef.current.onExpired();
            return;
          }
          if (code === Code.OutOfRange) {
            // The server does not know our sequence (a new database): start afresh.
            update(emptyJobList());
          }
        }
        if (abort.signal.aborted) return;
        failures += 1;
        setConnection("reconnecting");
        await sleep(retryDelay(failures));
      }
    }
    void run();
    return () => {
      abort.abort();
      clearTimeout(flushTimer);
      buffered = [];
    };
  }, [jobs, update]);

  return { list, connection, mergeJob };
}
