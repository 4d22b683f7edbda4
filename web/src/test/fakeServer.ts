import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport, type HandlerContext } from "@connectrpc/connect";
import { AuthService, Role, UserSchema } from "../gen/presswork/v1/auth_pb";
import {
  CancelJobResponseSchema,
  CancelOutcome,
  JobSchema,
  JobService,
  JobStatus,
  Stage,
  WatchJobsResponseSchema,
  WatchJobsResponse_Kind,
  type Job,
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
