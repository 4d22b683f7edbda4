import { act, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { Code, ConnectError } from "@connectrpc/connect";
import { App, EXPIRED_NOTICE } from "./App";
import { Role } from "./gen/presswork/v1/auth_pb";
import { create } from "@bufbuild/protobuf";
import { CancelOutcome, CancelResolution, CancelStateSchema, JobStatus, Stage } from "./gen/presswork/v1/jobs_pb";
import { saveSession } from "./session/session";
import { FakeServer, job, logEntry } from "./test/fakeServer";

function signedIn(role = Role.ADMINISTRATOR, token = "good-token", expiresAtMs = Date.now() + 3_600_000) {
  saveSession({ token, expiresAtMs, username: "ada", role });
}

function setup(server: FakeServer) {
  const makeClients = server.clients();
  return render(<App makeClients={makeClients} />);
}

const row = (id: string) => screen.getByText(id).closest("tr")!;

describe("sign-in", () => {
  it("signs in, shows the jobs and signs out", async () => {
    const server = new FakeServer();
    server.jobs = [job("job-1", JobStatus.QUEUED)];
    const user = userEvent.setup();
    setup(server);
    await user.type(screen.getByLabelText("Username"), "ada");
    await user.type(screen.getByLabelText("Password"), "wrong");
    await user.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByText("Wrong username or password.")).toBeInTheDocument();

    await user.clear(screen.getByLabelText("Password"));
    await user.type(screen.getByLabelText("Password"), "secret");
    await user.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByText("job-1")).toBeInTheDocument();
    expect(screen.getByText("Live")).toBeInTheDocument();
    expect(JSON.parse(sessionStorage.getItem("presswork.session")!).token).toBe("good-token");
    expect(server.tokensSeen).toContain("Bearer good-token");

    await user.click(screen.getByRole("button", { name: "Sign out" }));
    expect(screen.getByLabelText("Username")).toBeInTheDocument();
    expect(sessionStorage.getItem("presswork.session")).toBeNull();
  });

  it("says when the control plane cannot be reached", async () => {
    const user = userEvent.setup();
    setup(new FakeServer());
    await user.type(screen.getByLabelText("Username"), "offline");
    await user.type(screen.getByLabelText("Password"), "secret");
    await user.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByText(/could not be reached/)).toBeInTheDocument();
  });

  it("says when sign-in attempts are rate limited", async () => {
    const user = userEvent.setup();
    setup(new FakeServer());
    await user.type(screen.getByLabelText("Username"), "busy");
    await user.type(screen.getByLabelText("Password"), "secret");
    await user.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByText(/Too many sign-in attempts/)).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Sign in" })).toBeEnabled();
  });

  it("returns to sign-in with a message when the server refuses the token", async () => {
    signedIn(Role.ADMINISTRATOR, "stale-token");
    setup(new FakeServer());
    expect(await screen.findByText(EXPIRED_NOTICE)).toBeInTheDocument();
    expect(screen.getByLabelText("Username")).toBeInTheDocument();
  });

  it("returns to sign-in when the token's time is up", async () => {
    signedIn(Role.ADMINISTRATOR, "good-token", Date.now() + 50);
    setup(new FakeServer());
    expect(await screen.findByText(EXPIRED_NOTICE)).toBeInTheDocument();
  });
});

describe("job table", () => {
  it("offers cancel to administrators only on queued and running jobs", async () => {
    const server = new FakeServer();
    server.jobs = [
      job("q1", JobStatus.QUEUED),
      job("r1", JobStatus.RUNNING),
      job("c1", JobStatus.CANCELLING),
      job("s1", JobStatus.SUCCEEDED),
      job("f1", JobStatus.FAILED),
      job("x1", JobStatus.CANCELLED),
    ];
    signedIn();
    setup(server);
    await screen.findByText("q1");
    const buttons = screen.getAllByRole("button", { name: /^Cancel job/ });
    expect(buttons.map((b) => b.getAttribute("aria-label")).sort()).toEqual([
      "Cancel job q1 (demo-slow)",
      "Cancel job r1 (demo-slow)",
    ]);
    for (const id of ["c1", "s1", "f1", "x1"])
      expect(within(row(id)).queryByRole("button", { name: /^Cancel job/ })).toBeNull();
    expect(within(row("r1")).getByText("Generate 50%")).toBeInTheDocument();
  });

  it("shows no cancel to a viewer, even when the stored role says administrator", async () => {
    const server = new FakeServer();
    server.role = Role.VIEWER;
    server.jobs = [job("q1", JobStatus.QUEUED)];
    signedIn(Role.ADMINISTRATOR);
    setup(server);
    await screen.findByText("q1");
    await waitFor(() => expect(screen.getByText(/\(viewer\)/)).toBeInTheDocument());
    expect(screen.queryByRole("button", { name: /^Cancel job/ })).toBeNull();
    expect(screen.queryByRole("columnheader", { name: "Actions" })).toBeNull();
  });

  it("filters by status and follows the stream", async () => {
    const server = new FakeServer();
    server.jobs = [job("q1", JobStatus.QUEUED), job("s1", JobStatus.SUCCEEDED)];
    signedIn();
    const user = userEvent.setup();
    setup(server);
    await screen.findByText("q1");
    await user.selectOptions(screen.getByLabelText("Status"), "Succeeded");
    expect(screen.queryByText("q1")).toBeNull();
    expect(screen.getByText("s1")).toBeInTheDocument();
    await user.selectOptions(screen.getByLabelText("Status"), "Queued");
    act(() => server.change(job("q1", JobStatus.RUNNING, { version: 2n })));
    expect(await screen.findByText("No jobs to show.")).toBeInTheDocument();
    await user.selectOptions(screen.getByLabelText("Status"), "All statuses");
    expect(within(row("q1")).getByText("Running")).toBeInTheDocument();
  });

  it("reconnects after a drop and resumes after the last sequence", async () => {
    const server = new FakeServer();
    server.jobs = [job("q1", JobStatus.QUEUED)];
    signedIn();
    setup(server);
    await screen.findByText("q1");
    await server.streamOpened();
    act(() => server.change(job("q1", JobStatus.RUNNING, { version: 2n })));
    await waitFor(() => expect(within(row("q1")).getByText("Running")).toBeInTheDocument());
    act(() => server.drop());
    expect(await screen.findByText("Connection lost, reconnecting...")).toBeInTheDocument();
    await server.streamOpened();
    expect(server.watchRequests.map((r) => r.afterSequence)).toEqual([0n, 11n]);
    act(() => server.change(job("q1", JobStatus.SUCCEEDED, { version: 3n })));
    expect(await screen.findByText("Live")).toBeInTheDocument();
    await waitFor(() => expect(within(row("q1")).getByText("Succeeded")).toBeInTheDocument());
  });

  it("starts afresh when the server cannot resume", async () => {
    const server = new FakeServer();
    server.jobs = [job("q1", JobStatus.QUEUED)];
    signedIn();
    setup(server);
    await screen.findByText("q1");
    await server.streamOpened();
    server.sequence = 0n;
    server.jobs = [job("n1", JobStatus.QUEUED)];
    const original = server.watchRequests.length;
    // The next watch is refused as out of range once, as after a database reset.
    const push = server.watchRequests.push.bind(server.watchRequests);
    server.watchRequests.push = (...r) => {
      const n = push(...r);
      if (r[0].afterSequence > server.sequence) throw new ConnectError("ahead", Code.OutOfRange);
      return n;
    };
    act(() => server.drop());
    expect(await screen.findByText("n1", {}, { timeout: 4000 })).toBeInTheDocument();
    expect(screen.queryByText("q1")).toBeNull();
    expect(server.watchRequests.length).toBeGreaterThan(original);
  });
});

describe("cancel", () => {
  it("cancels a queued job after confirmation, showing Cancelled at once", async () => {
    const server = new FakeServer();
    server.jobs = [job("q1", JobStatus.QUEUED)];
    let answer!: () => void;
    const base = server.cancelAnswer;
    server.cancelAnswer = (id) => new Promise((resolve) => (answer = () => resolve(base(id))));
    signedIn();
    const user = userEvent.setup();
    setup(server);
    const opener = await screen.findByRole("button", { name: /Cancel job q1/ });
    await user.click(opener);
    const dialog = screen.getByRole("dialog");
    expect(dialog).toHaveTextContent(
      "Are you sure you want to cancel this job? This action cannot be undone.",
    );
    await user.click(within(dialog).getByRole("button", { name: "Confirm" }));
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(within(row("q1")).getByText("Cancelled")).toBeInTheDocument();
    expect(within(row("q1")).queryByRole("button", { name: /^Cancel job/ })).toBeNull();
    await act(async () => answer());
    expect(await screen.findByText("Job q1 cancelled. It will not run.")).toBeInTheDocument();
    expect(within(row("q1")).getByText("Cancelled")).toBeInTheDocument();
    expect(row("q1")).toHaveFocus();
  });

  it("shows Cancelling... even when the job progressed while the dialog was open", async () => {
    const server = new FakeServer();
    server.jobs = [job("r1", JobStatus.RUNNING)];
    let answer!: () => void;
    const base = server.cancelAnswer;
    server.cancelAnswer = (id) => new Promise((resolve) => (answer = () => resolve(base(id))));
    signedIn();
    const user = userEvent.setup();
    setup(server);
    await user.click(await screen.findByRole("button", { name: /Cancel job r1/ }));
    act(() => server.change(job("r1", JobStatus.RUNNING, { version: 2n, progress: 0.7 })));
    await waitFor(() => expect(within(row("r1")).getByText("Generate 70%")).toBeInTheDocument());
    await user.click(screen.getByRole("button", { name: "Confirm" }));
    expect(within(row("r1")).getByText("Cancelling...")).toBeInTheDocument();
    act(() => server.change(job("r1", JobStatus.RUNNING, { version: 3n, progress: 0.8 })));
    await waitFor(() => expect(within(row("r1")).getByText("Generate 80%")).toBeInTheDocument());
    expect(within(row("r1")).getByText("Cancelling...")).toBeInTheDocument();
    await act(async () => answer());
    await screen.findByText("Cancelling job r1...");
    expect(within(row("r1")).getByText("Cancelling...")).toBeInTheDocument();
  });

  it("shows Cancelling... for a running job, then the final state from the stream", async () => {
    const server = new FakeServer();
    server.jobs = [job("r1", JobStatus.RUNNING)];
    signedIn();
    const user = userEvent.setup();
    setup(server);
    await user.click(await screen.findByRole("button", { name: /Cancel job r1/ }));
    await user.click(screen.getByRole("button", { name: "Confirm" }));
    expect(within(row("r1")).getByText("Cancelling...")).toBeInTheDocument();
    await screen.findByText("Cancelling job r1...");
    act(() => server.change(job("r1", JobStatus.CANCELLED, { version: 3n })));
    expect(await screen.findByText("Job r1: Cancelled.")).toBeInTheDocument();
    expect(within(row("r1")).getByText("Cancelled")).toBeInTheDocument();
  });

  it("sends nothing when the dialog is dismissed with Esc or Cancel, and gives focus back", async () => {
    const server = new FakeServer();
    server.jobs = [job("q1", JobStatus.QUEUED)];
    const cancel = vi.fn(server.cancelAnswer);
    server.cancelAnswer = cancel;
    signedIn();
    const user = userEvent.setup();
    setup(server);
    const opener = await screen.findByRole("button", { name: /Cancel job q1/ });
    opener.focus();
    await user.keyboard("{Enter}");
    expect(screen.getByRole("dialog")).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Cancel" })).toHaveFocus();
    await user.tab();
    expect(screen.getByRole("button", { name: "Confirm" })).toHaveFocus();
    await user.tab();
    expect(screen.getByRole("button", { name: "Cancel" })).toHaveFocus();
    await user.keyboard("{Escape}");
    expect(screen.queryByRole("dialog")).toBeNull();
    await waitFor(() => expect(opener).toHaveFocus());
    await user.keyboard("{Enter}");
    await user.click(screen.getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(cancel).not.toHaveBeenCalled();
    expect(within(row("q1")).getByText("Queued")).toBeInTheDocument();
  });

  it.each([
    [Code.PermissionDenied, /only administrators may cancel jobs/],
    [Code.FailedPrecondition, /not in a cancellable state/],
    [Code.Unavailable, /could not be reached/],
  ])("reports a refused cancel (%s) and shows the job as it was", async (code, text) => {
    const server = new FakeServer();
    server.jobs = [job("r1", JobStatus.RUNNING)];
    server.cancelAnswer = async () => {
      throw new ConnectError("no", code);
    };
    signedIn();
    const user = userEvent.setup();
    setup(server);
    await user.click(await screen.findByRole("button", { name: /Cancel job r1/ }));
    await user.click(screen.getByRole("button", { name: "Confirm" }));
    const message = await screen.findByText(text);
    expect(message).toHaveAttribute("aria-live", "polite");
    expect(within(row("r1")).getByText("Running")).toBeInTheDocument();
  });

  it("says when the job finished before the cancel", async () => {
    const server = new FakeServer();
    server.jobs = [job("r1", JobStatus.RUNNING)];
    server.cancelAnswer = async () => ({
      outcome: CancelOutcome.ALREADY_FINISHED,
      job: job("r1", JobStatus.SUCCEEDED, { version: 5n }),
    });
    signedIn();
    const user = userEvent.setup();
    setup(server);
    await user.click(await screen.findByRole("button", { name: /Cancel job r1/ }));
    await user.click(screen.getByRole("button", { name: "Confirm" }));
    expect(await screen.findByText("Job r1 finished before the cancel took effect: Succeeded.")).toBeInTheDocument();
    expect(within(row("r1")).getByText("Succeeded")).toBeInTheDocument();
  });

  it("returns to sign-in when the session expired before the cancel", async () => {
    const server = new FakeServer();
    server.jobs = [job("r1", JobStatus.RUNNING)];
    server.cancelAnswer = async () => {
      throw new ConnectError("expired", Code.Unauthenticated);
    };
    signedIn();
    const user = userEvent.setup();
    setup(server);
    await user.click(await screen.findByRole("button", { name: /Cancel job r1/ }));
    await user.click(screen.getByRole("button", { name: "Confirm" }));
    expect(await screen.findByText(EXPIRED_NOTICE)).toBeInTheDocument();
  });
});

describe("job detail", () => {
  const statusButton = (id: string) => screen.getByRole("button", { name: new RegExp(`details of job ${id}\\)`) });

  it("explains a cancel in the row's tooltip, in one line", async () => {
    const server = new FakeServer();
    server.jobs = [
      job("x1", JobStatus.CANCELLED, {
        cancel: create(CancelStateSchema, {
          requestedBy: "ada",
          requestedAtUnixMs: 1_700_000_005_000n,
          stoppedAtUnixMs: 1_700_000_005_018n,
          stoppedStage: Stage.GENERATE,
          resolution: CancelResolution.STOPPED,
        }),
      }),
    ];
    signedIn();
    const user = userEvent.setup();
    setup(server);
    await screen.findByText("x1");
    await user.hover(statusButton("x1"));
    expect(await screen.findByRole("tooltip")).toHaveTextContent(
      "Cancelled by ada: stopped in Generate +18 ms after the request.",
    );
  });

  it("shows the job, its cancel's milestones and its log, live, and gives focus back", async () => {
    const server = new FakeServer();
    const requested = 1_700_000_005_000n;
    server.jobs = [job("r1", JobStatus.RUNNING, { workerId: "worker-1", params: { month: "2026-10" } })];
    server.logs.set("r1", [
      logEntry("r1", "job.submitted", { actor: "ada", message: "submitted" }),
      logEntry("r1", "job.started", { actor: "worker:worker-1", message: "started on worker-1" }),
    ]);
    signedIn();
    const user = userEvent.setup();
    setup(server);
    await screen.findByText("r1");
    const opener = statusButton("r1");
    await user.click(opener);
    const detail = screen.getByRole("dialog", { name: "Job r1" });
    expect(detail).toHaveTextContent("month=2026-10");
    expect(await within(detail).findByText("started on worker-1")).toBeInTheDocument();
    expect(within(detail).queryByRole("heading", { name: "Cancel" })).toBeNull();
    await server.logStreamOpened();
    expect(within(detail).getByText("Following the log as it grows.")).toBeInTheDocument();

    // The cancel arrives: the timeline fills in as the stream reports each milestone.
    const cancel = (extra: object, status = JobStatus.CANCELLING, version = 2n) =>
      job("r1", status, {
        workerId: "worker-1",
        version,
        cancel: create(CancelStateSchema, {
          requestedBy: "ada",
          reason: "wrong month",
          requestedAtUnixMs: requested,
          resolution: CancelResolution.PENDING,
          ...extra,
        }),
      });
    act(() => server.change(cancel({})));
    act(() => server.log(logEntry("r1", "cancel.requested", { actor: "ada", message: "cancel requested by ada" })));
    const milestone = (key: string) => detail.querySelector(`[data-milestone="${key}"]`)!;
    await waitFor(() => expect(milestone("requested")).toHaveTextContent('by ada, "wrong month"'));
    expect(milestone("delivered")).toHaveTextContent("waiting...");
    expect(await within(detail).findByText("cancel requested by ada")).toBeInTheDocument();

    act(() =>
      server.change(
        cancel(
          {
            deliveredAtUnixMs: requested + 3n,
            acknowledgedAtUnixMs: requested + 5n,
            stoppedAtUnixMs: requested + 9n,
            stoppedStage: Stage.GENERATE,
            stopDurationUs: 300n,
            resolution: CancelResolution.STOPPED,
          },
          JobStatus.CANCELLED,
          3n,
        ),
      ),
    );
    await waitFor(() => expect(milestone("stopped")).toHaveTextContent("+9 ms"));
    expect(milestone("delivered")).toHaveTextContent("+3 ms");
    expect(milestone("acknowledged")).toHaveTextContent("+5 ms");
    expect(milestone("stopped")).toHaveTextContent("in Generate; the stage stopped 0.30 ms after the signal");
    act(() => server.endLog("r1"));
    expect(await within(detail).findByText("The job has ended: the log is complete.")).toBeInTheDocument();

    await user.keyboard("{Escape}");
    expect(screen.queryByRole("dialog")).toBeNull();
    await waitFor(() => expect(statusButton("r1")).toHaveFocus());
  });

  it("resumes the log after a drop without repeating an entry", async () => {
    const server = new FakeServer();
    server.jobs = [job("r1", JobStatus.RUNNING)];
    const first = logEntry("r1", "job.submitted", { message: "first entry" });
    server.logs.set("r1", [first]);
    signedIn();
    const user = userEvent.setup();
    setup(server);
    await screen.findByText("r1");
    await user.click(statusButton("r1"));
    const detail = screen.getByRole("dialog");
    await within(detail).findByText("first entry");
    await server.logStreamOpened();
    act(() => server.dropLogs());
    await server.logStreamOpened();
    await waitFor(() => expect(server.logRequests.map((r) => r.afterId)).toEqual([0n, first.id]));
    act(() => server.log(logEntry("r1", "stage.started", { message: "second entry" })));
    expect(await within(detail).findByText("second entry")).toBeInTheDocument();
    expect(within(detail).getAllByText("first entry")).toHaveLength(1);
  });

  it("says why the log cannot be shown", async () => {
    const server = new FakeServer();
    server.jobs = [job("r1", JobStatus.RUNNING)];
    server.logError = new ConnectError("job r1 not found", Code.NotFound);
    signedIn();
    const user = userEvent.setup();
    setup(server);
    await screen.findByText("r1");
    await user.click(statusButton("r1"));
    expect(await screen.findByText(/The log of job r1 cannot be shown: no such job/)).toBeInTheDocument();
  });
});

describe("many jobs", () => {
  const many = (n: number) =>
    Array.from({ length: n }, (_, i) =>
      job(`job-${String(i).padStart(5, "0")}`, i % 2 ? JobStatus.SUCCEEDED : JobStatus.QUEUED, {
        createdAtUnixMs: 1_700_000_000_000n + BigInt(i),
      }),
    );

  it("shows 50 jobs a page, newest first, and pages through them", async () => {
    const server = new FakeServer();
    server.jobs = many(120);
    signedIn();
    const user = userEvent.setup();
    setup(server);
    await screen.findByText("job-00119");
    expect(screen.getAllByRole("row")).toHaveLength(51);
    expect(screen.getByText(/Jobs 1–50 of 120/)).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Previous page" })).toBeDisabled();
    await user.click(screen.getByRole("button", { name: "Next page" }));
    expect(screen.getByText(/Jobs 51–100 of 120/)).toBeInTheDocument();
    expect(screen.getByText("job-00069")).toBeInTheDocument();
    expect(screen.queryByText("job-00119")).toBeNull();
    await user.click(screen.getByRole("button", { name: "Next page" }));
    expect(screen.getByText(/Jobs 101–120 of 120/)).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Next page" })).toBeDisabled();
    // A filter starts again from its first page.
    await user.selectOptions(screen.getByLabelText("Status"), "Succeeded");
    expect(screen.getByText(/Jobs 1–50 of 60/)).toBeInTheDocument();
    expect(screen.getByText("job-00119")).toBeInTheDocument();
  });

  it("renders one page of a 10,000-job snapshot", async () => {
    const server = new FakeServer();
    server.jobs = many(10_000);
    signedIn();
    setup(server);
    expect(await screen.findByText("job-09999", {}, { timeout: 10_000 })).toBeInTheDocument();
    expect(screen.getByText(/Jobs 1–50 of 10,000/)).toBeInTheDocument();
    expect(document.querySelectorAll("tbody tr")).toHaveLength(50);
  }, 20_000);
});
