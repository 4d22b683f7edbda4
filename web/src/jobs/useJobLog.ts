import { useEffect, useRef, useState } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Clients } from "../api/clients";
import { logErrorMessage } from "../api/errors";
import type { LogEntry } from "../gen/presswork/v1/jobs_pb";

/** Where the log stream is: following, complete (the job ended), or trying again. */
export type LogState = "loading" | "live" | "complete" | "reconnecting" | "error";

export type JobLog = { entries: LogEntry[]; state: LogState; error: string };

export type JobLogOptions = {
  onExpired: () => void;
  /** Wait before reconnect attempt `n` (1, 2, ...). */
  retryDelayMs?: (attempt: number) => number;
};

const defaultRetryDelay = (attempt: number) => Math.min(500 * 2 ** (attempt - 1), 5000);

/**
 * A job's execution log, live: `WatchJobLog` sends the log so far, then each new entry, and
 * ends once the job is terminal. A dropped stream resumes after the last entry received.
 */
export function useJobLog(jobs: Clients["jobs"], jobId: string, options: JobLogOptions): JobLog {
  const [log, setLog] = useState<JobLog>({ entries: [], state: "loading", error: "" });
  const optionsRef = useRef(options);
  optionsRef.current = options;

  useEffect(() => {
    const abort = new AbortController();
    const retryDelay = optionsRef.current.retryDelayMs ?? defaultRetryDelay;
    let entries: LogEntry[] = [];
    let flushTimer: ReturnType<typeof setTimeout> | undefined;
    const show = (state: LogState, error = "") => {
      clearTimeout(flushTimer);
      flushTimer = undefined;
      setLog({ entries, state, error });
    };
    // Entries come in bursts (the whole log first): render at most every 50 ms.
    const showSoon = () => {
      flushTimer ??= setTimeout(() => show("live"), 50);
    };

    async function run() {
      let failures = 0;
      setLog({ entries: [], state: "loading", error: "" });
      while (!abort.signal.aborted) {
        const afterId = entries.length ? entries[entries.length - 1].id : 0n;
        try {
          const stream = jobs.watchJobLog({ jobId, afterId }, { signal: abort.signal });
          for await (const message of stream) {
            failures = 0;
            if (message.entry && message.entry.id > afterId) {
              entries = [...entries, message.entry];
              showSoon();
            }
          }
          if (!abort.signal.aborted) show("complete");
          return;
        } catch (error) {
          if (abort.signal.aborted) return;
          const code = ConnectError.from(error).code;
          if (code === Code.Unauthenticated) {
            optionsRef.current.onExpired();
            return;
          }
          if (code === Code.NotFound || code === Code.PermissionDenied || code === Code.InvalidArgument) {
            show("error", logErrorMessage(error, jobId));
            return;
          }
        }
        failures += 1;
        show("reconnecting");
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, retryDelay(failures));
          abort.signal.addEventListener("abort", () => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
    }
    void run();
    return () => {
      abort.abort();
      clearTimeout(flushTimer);
    };
  }, [jobs, jobId]);

  return log;
}
