import { JobStatus, Stage } from "../gen/presswork/v1/jobs_pb";
import { job } from "../test/fakeServer";
import { formatDuration, formatTime, isCancellable, isTerminal, jobDuration, stageAndProgress } from "./format";

describe("format", () => {
  it("says which statuses may be cancelled", () => {
    expect(isCancellable(JobStatus.QUEUED)).toBe(true);
    expect(isCancellable(JobStatus.RUNNING)).toBe(true);
    for (const s of [JobStatus.CANCELLING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
      expect(isCancellable(s)).toBe(false);
    expect(isTerminal(JobStatus.CANCELLED)).toBe(true);
    expect(isTerminal(JobStatus.CANCELLING)).toBe(false);
  });

  it("writes durations people read", () => {
    expect(formatDuration(-5)).toBe("0.0 s");
    expect(formatDuration(1234)).toBe("1.2 s");
    expect(formatDuration(42_000)).toBe("42 s");
    expect(formatDuration(184_000)).toBe("3 min 4 s");
    expect(formatDuration(7_500_000)).toBe("2 h 5 min");
  });

  it("measures a job from its start to its end or now", () => {
    expect(jobDuration(job("q", JobStatus.QUEUED), 0)).toBe("");
    const running = job("r", JobStatus.RUNNING, { startedAtUnixMs: 1000n });
    expect(jobDuration(running, 3000)).toBe("2.0 s");
    const done = job("d", JobStatus.SUCCEEDED, { startedAtUnixMs: 1000n, finishedAtUnixMs: 1500n });
    expect(jobDuration(done, 99_999)).toBe("0.5 s");
  });

  it("shows the stage, with progress while the job runs", () => {
    expect(stageAndProgress(job("r", JobStatus.RUNNING, { stage: Stage.GENERATE, progress: 0.25 }))).toBe(
      "Generate 25%",
    );
    expect(stageAndProgress(job("f", JobStatus.FAILED, { stage: Stage.DELIVER }))).toBe("Deliver");
    expect(stageAndProgress(job("q", JobStatus.QUEUED))).toBe("");
    expect(formatTime(0n)).toBe("");
    expect(formatTime(1_700_000_000_000n)).toMatch(/2023/);
  });
});
