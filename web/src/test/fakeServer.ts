import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport, type HandlerContext } from "@connectrpc/connect";
import { AuthService, Role, UserSchema } from "../gen/presswork/v1/auth_pb";
import {
  CancelJobResponseSchema,
  CancelOutcome,
  JobSchema,
  JobService,
  JobStatus,
  LogEntrySchema,
  LogLevel,
  Stage,
  WatchJobLogResponseSchema,
  WatchJobsResponseSchema,
  WatchJobsResponse_Kind,
  type Job,
  type LogEntry,
  type WatchJobLogRequest,
  type WatchJobLogResponse,
  type WatchJobsRequest,
  type WatchJobsResponse,
} from "../gen/presswork/v1/jobs_pb";
import { bearerInterceptor, createClients, type Clients } from "../api/clients";

export function job(id: string, status: JobStatus, extra: Omit<Partial<Job>, "$typeName" | "$unknown"> = {}): Job {
  return create(JobSchema, {
    id,
    report: "demo-slow",
    status,
    stage: status === JobStatus.RUNNING ? Stage.GENERATE : Stage.UNSPECIFIED,
    progress: 0.5,
    version: 1n,
    submittedBy: "ada",
    createdAtUnixMs: 1_700_000_000_000n,
    startedAtUnixMs: status === JobStatus.QUEUED ? 0n : 1_700_000_001_000n,
    ...extra,
  });
}

type Push = (message: WatchJobsResponse) => void;

let nextLogId = 100n;

export function logEntry(jobId: string, event: string, extra: Omit<Partial<LogEntry>, "$typeName" | "$unknown"> = {}): LogEntry {
  nextLogId += 1n;
  return create(LogEntrySchema, {
    id: nextLogId,
    jobId,
    atUnixMs: 1_700_000_002_000n,
    level: LogLevel.INFO,
    event,
    actor: "system",
    message: event,
    ...extra,
  });
}

type LogStream = {
  jobId: string;
  push: (m: WatchJobLogResponse) => void;
  end: () => void;
  fail: (e: Error) => void;
};

/** A server stream the test drives: messages, a normal end, or a failure. */
async function* feed<T>(
  signal: AbortSignal,
  initial: T[],
  register: (entry: { push: (m: T) => void; end: () => void; fail: (e: Error) => void }) => () => void,
): AsyncGenerator<T> {
  const queue: T[] = [...initial];
  let wake: (() => void) | null = null;
  let failure: Error | null = null;
  let ended = false;
  const unregister = register({
    push: (m) => {
      queue.push(m);
      wake?.();
    },
    end: () => {
      ended = true;
      wake?.();
    },
    fail: (e) => {
      failure = e;
      wake?.();
    },
  });
  try {
    while (!signal.aborted) {
      while (queue.length) yield queue.shift()!;
      if (failure) throw failure;
      if (ended) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
        signal.addEventListener("abort", () => resolve());
      });
      wake = null;
    }
  } finally {
    unregister();
  }
}

/**
 * An in-memory control plane for component tests: users, jobs, a WatchJobs stream the test
 * can feed or break, and a CancelJob whose answer the test chooses.
 */
export class FakeServer {
  role = Role.ADMINISTRATOR;
  jobs: Job[] = [];
  sequence = 10n;
  watchRequests: WatchJobsRequest[] = [];
  tokensSeen: string[] = [];
  cancelAnswer: (jobId: string) => Promise<{ outcome: CancelOutcome; job?: Job }> | never =
    async (jobId) => {
      const found = this.jobs.find((j) => j.id === jobId)!;
      const status = found.status === JobStatus.QUEUED ? JobStatus.CANCELLED : JobStatus.CANCELLING;
      return {
        outcome:
          status === JobStatus.CANCELLED
            ? CancelOutcome.CANCELLED_WHILE_QUEUED
            : CancelOutcome.CANCELLING,
        job: { ...found, status, version: found.version + 1n },
      };
    };
  /** Each job's execution log; WatchJobLog sends it, then what `log` adds. */
  logs = new Map<string, LogEntry[]>();
  logRequests: WatchJobLogRequest[] = [];
  logError: ConnectError | null = null;
  private logStreams: LogStream[] = [];
  private logWaiters: (() => void)[] = [];
  private streams: { push: Push; fail: (e: Error) => void }[] = [];
  private waiters: (() => void)[] = [];

  /** Sends a change to every open stream. */
  change(next: Job) {
    this.sequence += 1n;
    this.jobs = this.jobs.filter((j) => j.id !== next.id).concat(next);
    for (const s of this.streams)
      s.push(create(WatchJobsResponseSchema, { kind: WatchJobsResponse_Kind.CHANGE, sequence: this.sequence, job: next }));
  }

  /** Breaks every open stream as a network failure would. */
  drop() {
    const streams = this.streams;
    this.streams = [];
    for (const s of streams) s.fail(new ConnectError("connection reset", Code.Unavailable));
  }

  /** Appends to a job's log and sends the entry to its open log streams. */
  log(entry: LogEntry) {
    this.logs.set(entry.jobId, [...(this.logs.get(entry.jobId) ?? []), entry]);
    for (const s of this.logStreams)
      if (s.jobId === entry.jobId) s.push(create(WatchJobLogResponseSchema, { entry }));
  }

  /** Ends a job's log streams, as the server does once the job is terminal. */
  endLog(jobId: string) {
    for (const s of this.logStreams) if (s.jobId === jobId) s.end();
  }

  /** Breaks every open log stream as a network failure would. */
  dropLogs() {
    for (const s of this.logStreams) s.fail(new ConnectError("connection reset", Code.Unavailable));
  }

  /** Resolves when a log stream is open. */
  async logStreamOpened(): Promise<void> {
    if (this.logStreams.length) return;
    await new Promise<void>((resolve) => this.logWaiters.push(resolve));
  }

  openStreams() {
    return this.streams.length;
  }

  /** Resolves when a stream is open. */
  async streamOpened(): Promise<void> {
    if (this.streams.length) return;
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  private authorize(ctx: HandlerContext) {
    const header = ctx.requestHeader.get("authorization") ?? "";
    this.tokensSeen.push(header);
    if (header !== "Bearer good-token") throw new ConnectError("token expired", Code.Unauthenticated);
  }

  clients(): (token: () => string | null) => Clients {
    const server = this;
    const transport = (token: () => string | null) =>
      createRouterTransport(
        ({ service }) => {
          service(AuthService, {
            login(req) {
              if (req.username === "busy") throw new ConnectError("slow down", Code.ResourceExhausted);
              if (req.password !== "secret") throw new ConnectError("wrong", Code.Unauthenticated);
              if (req.username === "offline") throw new ConnectError("down", Code.Unavailable);
              return {
                token: "good-token",
                expiresAtUnixMs: BigInt(Date.now() + 3_600_000),
                user: create(UserSchema, { username: req.username, role: server.role }),
              };
            },
            whoAmI(_req, ctx) {
              server.authorize(ctx);
              return { user: create(UserSchema, { username: "ada", role: server.role }) };
            },
          });
          service(JobService, {
            async *watchJobs(req, ctx) {
              server.authorize(ctx);
              server.watchRequests.push(req);
              const queue: WatchJobsResponse[] = [];
              let wake: (() => void) | null = null;
              let failure: Error | null = null;
              const entry = {
                push: (m: WatchJobsResponse) => {
                  queue.push(m);
                  wake?.();
                },
                fail: (e: Error) => {
                  failure = e;
                  wake?.();
                },
              };
              if (req.afterSequence === 0n) {
                for (const j of server.jobs)
                  queue.push(create(WatchJobsResponseSchema, { kind: WatchJobsResponse_Kind.SNAPSHOT, sequence: server.sequence, job: j }));
                queue.push(create(WatchJobsResponseSchema, { kind: WatchJobsResponse_Kind.SNAPSHOT_COMPLETE, sequence: server.sequence }));
              }
              server.streams.push(entry);
              server.waiters.splice(0).forEach((w) => w());
              try {
                while (!ctx.signal.aborted) {
                  while (queue.length) yield queue.shift()!;
                  if (failure) throw failure;
                  await new Promise<void>((resolve) => {
                    wake = resolve;
                    ctx.signal.addEventListener("abort", () => resolve());
                  });
                  wake = null;
                }
              } finally {
                server.streams = server.streams.filter((s) => s !== entry);
              }
            },
            async *watchJobLog(req, ctx) {
              server.authorize(ctx);
              server.logRequests.push(req);
              if (server.logError) throw server.logError;
              const entries = (server.logs.get(req.jobId) ?? []).filter((e) => e.id > req.afterId);
              yield* feed(
                ctx.signal,
                entries.map((entry) => create(WatchJobLogResponseSchema, { entry })),
                (entry) => {
                  const stream = { jobId: req.jobId, ...entry };
                  server.logStreams.push(stream);
                  server.logWaiters.splice(0).forEach((w) => w());
                  return () => {
                    server.logStreams = server.logStreams.filter((s) => s !== stream);
                  };
                },
              );
            },
            async cancelJob(req, ctx) {
              server.authorize(ctx);
              const answer = await server.cancelAnswer(req.jobId);
              return create(CancelJobResponseSchema, answer);
            },
          });
        },
        { transport: { interceptors: [bearerInterceptor(token)] } },
      );
    return (token) => createClients(transport(token));
  }
}
