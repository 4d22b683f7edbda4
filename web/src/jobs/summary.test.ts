import { create } from "@bufbuild/protobuf";
import { CancelResolution, CancelStateSchema, JobStatus, Stage, type CancelState } from "../gen/presswork/v1/jobs_pb";
import { job } from "../test/fakeServer";
import { cancelMilestones, formatOffset, formatStopDuration, statusSummary } from "./summary";

const T = 1_700_000_010_000n;

function cancelled(
  status: JobStatus,
  cancel: Omit<Partial<CancelState>, "$typeName" | "$unknown">,
  extra: Parameters<typeof job>[2] = {},
) {
  return job("j1", status, {
    cancel: create(CancelStateSchema, { requestedBy: "ada", requestedAtUnixMs: T, ...cancel }),
    ...extra,
  });
}

const view = (j: ReturnType<typeof job>) =>
  cancelMilestones(j).map((m) => [m.key, m.state, m.afterMs]);

describe("cancelMilestones", () => {
  it("is empty without a cancel", () => {
    expect(cancelMilestones(job("j1", JobStatus.RUNNING))).toEqual([]);
  });

  it("shows each milestone of a stopped job with its time after the request", () => {
    const j = cancelled(
      JobStatus.CANCELLED,
      {
        reason: "wrong month",
        deliveredAtUnixMs: T + 3n,
        acknowledgedAtUnixMs: T + 5n,
        stoppedAtUnixMs: T + 9n,
        stoppedStage: Stage.GENERATE,
        stopDurationUs: 420n,
        resolution: CancelResolution.STOPPED,
      },
      { workerId: "worker-1" },
    );
    expect(view(j)).toEqual([
      ["requested", "done", 0],
      ["delivered", "done", 3],
      ["acknowledged", "done", 5],
      ["stopped", "done", 9],
    ]);
    const [requested, delivered, , stopped] = cancelMilestones(j);
    expect(requested.detail).toBe('by ada, "wrong month"');
    expect(delivered.detail).toBe("worker-1");
    expect(stopped.detail).toBe("in Generate; the stage stopped 0.42 ms after the signal");
  });

  it("shows what is still awaited while the cancel is pending", () => {
    const j = cancelled(JobStatus.CANCELLING, {
      deliveredAtUnixMs: T + 2n,
      resolution: CancelResolution.PENDING,
    });
    expect(view(j)).toEqual([
      ["requested", "done", 0],
      ["delivered", "done", 2],
      ["acknowledged", "waiting", null],
      ["stopped", "waiting", null],
    ]);
  });

  it("ends with how the cancel ended when the job did not stop", () => {
    const timedOut = cancelled(
      JobStatus.FAILED,
      { deliveredAtUnixMs: T + 1n, resolution: CancelResolution.TIMED_OUT },
      { finishedAtUnixMs: T + 30_000n },
    );
    expect(view(timedOut)).toEqual([
      ["requested", "done", 0],
      ["delivered", "done", 1],
      ["acknowledged", "skipped", null],
      ["ended", "done", 30_000],
    ]);
    expect(cancelMilestones(timedOut)[3].label).toBe("Timed out");

    const finished = cancelled(
      JobStatus.SUCCEEDED,
      { resolution: CancelResolution.FINISHED_FIRST },
      { finishedAtUnixMs: T + 4n },
    );
    expect(cancelMilestones(finished)[3].detail).toMatch(/succeeded before the cancel took effect/);
    const lost = cancelled(JobStatus.FAILED, { resolution: CancelResolution.WORKER_LOST }, { finishedAtUnixMs: T + 7n });
    expect(cancelMilestones(lost)[3].label).toBe("Worker lost");
  });

  it("says a queued job was cancelled before it ever ran", () => {
    const j = cancelled(
      JobStatus.CANCELLED,
      { resolution: CancelResolution.CANCELLED_WHILE_QUEUED },
      { finishedAtUnixMs: T },
    );
    expect(view(j)).toEqual([
      ["requested", "done", 0],
      ["ended", "done", 0],
    ]);
    expect(cancelMilestones(j)[1].detail).toBe("The job never started.");
  });

  it("notes a cancel that reached the job past its point of no return", () => {
    const j = cancelled(JobStatus.CANCELLING, {
      acknowledgedAtUnixMs: T + 2n,
      pastPointOfNoReturn: true,
      resolution: CancelResolution.PENDING,
    });
    expect(cancelMilestones(j)[2].detail).toMatch(/point of no return/);
  });
});

describe("statusSummary", () => {
  it.each([
    [cancelled(JobStatus.CANCELLED, { resolution: CancelResolution.CANCELLED_WHILE_QUEUED }), "Cancelled by ada while queued; it never ran."],
    [
      cancelled(JobStatus.CANCELLED, {
        resolution: CancelResolution.STOPPED,
        stoppedAtUnixMs: T + 18n,
        stoppedStage: Stage.GENERATE,
      }),
      "Cancelled by ada: stopped in Generate +18 ms after the request.",
    ],
    [
      cancelled(JobStatus.SUCCEEDED, { resolution: CancelResolution.FINISHED_FIRST }),
      "Cancel by ada came too late: the job had already succeeded.",
    ],
    [
      cancelled(JobStatus.FAILED, { resolution: CancelResolution.TIMED_OUT }),
      "Cancel by ada timed out: the job was failed and force-stopped.",
    ],
    [
      cancelled(JobStatus.FAILED, { resolution: CancelResolution.WORKER_LOST }),
      "Cancel by ada was not confirmed: the worker was lost and the job failed.",
    ],
    [
      cancelled(JobStatus.CANCELLING, { resolution: CancelResolution.PENDING }),
      "Cancel requested by ada; not yet delivered to the worker.",
    ],
    [
      cancelled(JobStatus.CANCELLING, { resolution: CancelResolution.PENDING, deliveredAtUnixMs: T + 4n }),
      "Cancel requested by ada; delivered to the worker +4 ms after the request, waiting for it to stop.",
    ],
    [
      cancelled(JobStatus.CANCELLING, {
        resolution: CancelResolution.PENDING,
        deliveredAtUnixMs: T + 4n,
        acknowledgedAtUnixMs: T + 6n,
      }),
      "Cancel requested by ada; the worker acknowledged it +6 ms after the request and is stopping the job.",
    ],
    [job("j1", JobStatus.QUEUED), "Queued: waiting for a free worker."],
    [job("j1", JobStatus.RUNNING, { workerId: "worker-2" }), "Running: Generate 50% on worker-2."],
    [
      job("j1", JobStatus.SUCCEEDED, { startedAtUnixMs: T, finishedAtUnixMs: T + 2_500n }),
      "Succeeded in 2.5 s.",
    ],
    [job("j1", JobStatus.FAILED, { error: "input file missing" }), "Failed: input file missing."],
  ])("one line for case %#", (j, text) => {
    expect(statusSummary(j)).toBe(text);
  });
});

describe("formatting", () => {
  it("formats offsets and stop durations", () => {
    expect(formatOffset(7)).toBe("+7 ms");
    expect(formatOffset(1500)).toBe("+1.5 s");
    expect(formatStopDuration(420n)).toBe("0.42 ms");
    expect(formatStopDuration(4_200n)).toBe("4.2 ms");
    expect(formatStopDuration(42_000n)).toBe("42 ms");
    expect(formatStopDuration(4_200_000n)).toBe("4.2 s");
  });
});
