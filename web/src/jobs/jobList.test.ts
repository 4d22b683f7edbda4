import { create } from "@bufbuild/protobuf";
import { JobStatus, WatchJobsResponseSchema, WatchJobsResponse_Kind } from "../gen/presswork/v1/jobs_pb";
import { job } from "../test/fakeServer";
import { applyWatch, applyWatchAll, emptyJobList, upsert, visibleJobs } from "./jobList";

const msg = (kind: WatchJobsResponse_Kind, sequence: bigint, j?: ReturnType<typeof job>) =>
  create(WatchJobsResponseSchema, { kind, sequence, job: j });

describe("applyWatch", () => {
  it("shows a snapshot only once it is complete, then applies changes in order", () => {
    let list = emptyJobList();
    list = applyWatch(list, msg(WatchJobsResponse_Kind.SNAPSHOT, 5n, job("a", JobStatus.QUEUED)));
    expect(list.jobs.size).toBe(0);
    expect(list.loaded).toBe(false);
    list = applyWatch(list, msg(WatchJobsResponse_Kind.SNAPSHOT_COMPLETE, 5n));
    expect(list.loaded).toBe(true);
    expect(list.sequence).toBe(5n);
    expect(list.jobs.get("a")?.status).toBe(JobStatus.QUEUED);

    list = applyWatch(list, msg(WatchJobsResponse_Kind.CHANGE, 6n, job("a", JobStatus.RUNNING, { version: 2n })));
    expect(list.jobs.get("a")?.status).toBe(JobStatus.RUNNING);
    // A change already applied is not applied again.
    const again = applyWatch(list, msg(WatchJobsResponse_Kind.CHANGE, 6n, job("a", JobStatus.QUEUED)));
    expect(again).toBe(list);
    expect(applyWatch(list, msg(WatchJobsResponse_Kind.UNSPECIFIED, 9n))).toBe(list);
  });

  it("keeps the newer version of a job", () => {
    const jobs = upsert(new Map(), job("a", JobStatus.CANCELLING, { version: 3n }));
    expect(upsert(jobs, job("a", JobStatus.RUNNING, { version: 2n }))).toBe(jobs);
    expect(upsert(jobs, job("a", JobStatus.CANCELLED, { version: 4n })).get("a")?.status).toBe(
      JobStatus.CANCELLED,
    );
  });
});

describe("visibleJobs", () => {
  it("filters by status and puts the newest first", () => {
    let jobs = new Map();
    jobs = upsert(jobs, job("old", JobStatus.RUNNING, { createdAtUnixMs: 1n }));
    jobs = upsert(jobs, job("new", JobStatus.RUNNING, { createdAtUnixMs: 2n }));
    jobs = upsert(jobs, job("done", JobStatus.SUCCEEDED, { createdAtUnixMs: 3n }));
    jobs = upsert(jobs, job("also", JobStatus.SUCCEEDED, { createdAtUnixMs: 3n }));
    expect(visibleJobs(jobs, "all").map((j) => j.id)).toEqual(["done", "also", "new", "old"]);
    expect(visibleJobs(jobs, JobStatus.RUNNING).map((j) => j.id)).toEqual(["new", "old"]);
  });
});

describe("applyWatchAll", () => {
  it("applies a batch exactly as the same messages one by one", () => {
    const messages = [
      msg(WatchJobsResponse_Kind.SNAPSHOT, 5n, job("a", JobStatus.QUEUED)),
      msg(WatchJobsResponse_Kind.SNAPSHOT, 5n, job("b", JobStatus.RUNNING)),
      msg(WatchJobsResponse_Kind.SNAPSHOT_COMPLETE, 5n),
      msg(WatchJobsResponse_Kind.CHANGE, 5n, job("a", JobStatus.FAILED, { version: 9n })),
      msg(WatchJobsResponse_Kind.CHANGE, 6n, job("a", JobStatus.RUNNING, { version: 2n })),
      msg(WatchJobsResponse_Kind.CHANGE, 7n, job("b", JobStatus.SUCCEEDED, { version: 0n })),
      msg(WatchJobsResponse_Kind.CHANGE, 8n, job("c", JobStatus.QUEUED)),
    ];
    const one = messages.reduce(applyWatch, emptyJobList());
    const all = applyWatchAll(emptyJobList(), messages);
    expect(all.sequence).toBe(8n);
    expect([...all.jobs.values()].map((j) => [j.id, j.status])).toEqual(
      [...one.jobs.values()].map((j) => [j.id, j.status]),
    );
    expect(all.jobs.get("a")?.status).toBe(JobStatus.RUNNING);
    expect(all.jobs.get("b")?.status).toBe(JobStatus.RUNNING);
  });

  it("never changes the maps of the list it was given", () => {
    const start = applyWatchAll(emptyJobList(), [
      msg(WatchJobsResponse_Kind.SNAPSHOT, 1n, job("a", JobStatus.QUEUED)),
      msg(WatchJobsResponse_Kind.SNAPSHOT_COMPLETE, 1n),
    ]);
    const before = new Map(start.jobs);
    const next = applyWatchAll(start, [
      msg(WatchJobsResponse_Kind.CHANGE, 2n, job("a", JobStatus.RUNNING, { version: 2n })),
      msg(WatchJobsResponse_Kind.CHANGE, 3n, job("z", JobStatus.QUEUED)),
    ]);
    expect(start.jobs).toEqual(before);
    expect(next.jobs.size).toBe(2);
    // A resync's snapshot does not disturb the list shown meanwhile.
    const resync = applyWatchAll(next, [msg(WatchJobsResponse_Kind.SNAPSHOT, 9n, job("n", JobStatus.QUEUED))]);
    expect(resync.jobs).toBe(next.jobs);
    expect(resync.incoming?.size).toBe(1);
  });

  it("takes a snapshot of 10,000 jobs in one pass", () => {
    const messages = Array.from({ length: 10_000 }, (_, i) =>
      msg(WatchJobsResponse_Kind.SNAPSHOT, 1n, job(`j${i}`, JobStatus.QUEUED)),
    );
    messages.push(msg(WatchJobsResponse_Kind.SNAPSHOT_COMPLETE, 1n));
    const list = applyWatchAll(emptyJobList(), messages);
    expect(list.jobs.size).toBe(10_000);
    expect(list.loaded).toBe(true);
  });
});
