// End-to-end: the dashboard in Debian's Chromium against a real control plane and a real
// worker. Run by scripts/test after `npm run build` and `cargo build`.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { AxeBuilder } from "@axe-core/playwright";
import { Cluster, USERS, launchChromium } from "./cluster.mjs";

const WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];
const SLOW = { slow_stage: "generate", duration_ms: "120000" };

let cluster;
let browser;
let context;
let failed = false;

before(async () => {
  cluster = new Cluster({ workers: 1, capacity: 1 });
  await cluster.start();
  browser = await launchChromium({ timeoutMs: 15_000 });
  context = browser.context;
});

after(async () => {
  await browser?.close();
  if (failed) console.error(`cluster logs (kept in ${cluster.dir}):\n${cluster.logs()}`);
  await cluster?.stop({ keep: failed });
});

/** Marks the run failed (for the logs) and rethrows. */
async function step(fn) {
  try {
    await fn();
  } catch (error) {
    failed = true;
    throw error;
  }
}

async function signIn(user) {
  const page = await context.newPage();
  await page.goto(cluster.url);
  await page.getByLabel("Username").fill(user);
  await page.getByLabel("Password").fill(USERS[user].password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Live", { exact: true }).waitFor();
  return page;
}

const row = (page, id) => page.locator(`tr[id="job-row-${id}"]`);
const cancelButton = (page, id) => page.getByRole("button", { name: `Cancel job ${id} (` });

async function statusText(page, id) {
  return (await row(page, id).locator(".status").textContent())?.trim();
}

async function waitForRowStatus(page, id, status, timeout = 20_000) {
  await row(page, id).locator(".status", { hasText: status }).waitFor({ timeout });
}

/** Records every status a row shows from now on (transient ones included). */
async function recordStatuses(page, id) {
  await page.evaluate((rowId) => {
    const seen = [];
    window.__seen = seen;
    const read = () => {
      const text = document.getElementById(rowId)?.querySelector(".status")?.textContent;
      if (text && seen[seen.length - 1] !== text) seen.push(text);
    };
    read();
    new MutationObserver(read).observe(document.body, {
      subtree: true,
      childList: true,
      characterData: true,
    });
  }, `job-row-${id}`);
}

async function noAxeViolations(page, what) {
  const result = await new AxeBuilder({ page }).withTags(WCAG).analyze();
  const summary = result.violations.map(
    (v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`,
  );
  assert.deepEqual(summary, [], `axe found violations ${what}`);
}

/** The execution log says the administrator cancelled the job, and when (AC-001, AC-002). */
function assertCancelLogged(id) {
  const entry = cluster.log(id).find((e) => e.event === "cancel.requested");
  assert.ok(entry, `job ${id} has a cancel.requested log entry`);
  assert.equal(entry.actor, "ada");
  assert.ok(entry.at, "the entry has a timestamp");
}

let admin;
let runningId;
let queuedId;

test("an administrator cancels a queued job: Cancelled at once, and it never runs", () =>
  step(async () => {
    runningId = cluster.submit("demo-slow", SLOW);
    await cluster.waitForStatus(runningId, "RUNNING");
    queuedId = cluster.submit("demo-slow", SLOW);
    admin = await signIn("ada");
    await waitForRowStatus(admin, queuedId, "Queued");
    await waitForRowStatus(admin, runningId, "Running");

    const button = cancelButton(admin, queuedId);
    await button.hover();
    await admin.getByRole("tooltip").filter({ hasText: "Cancel Job" }).waitFor();
    await button.click();
    const dialog = admin.getByRole("dialog");
    await dialog.waitFor();
    assert.match(
      await dialog.textContent(),
      /Are you sure you want to cancel this job\? This action cannot be undone\./,
    );
    const clicked = Date.now();
    await dialog.getByRole("button", { name: "Confirm" }).click();
    await waitForRowStatus(admin, queuedId, "Cancelled", 500);
    assert.ok(Date.now() - clicked < 500, "a queued job shows Cancelled within 500 ms");
    await dialog.waitFor({ state: "hidden" });
    assert.equal(await cancelButton(admin, queuedId).count(), 0);

    const job = await cluster.waitForStatus(queuedId, "CANCELLED");
    assert.equal(job.started_at, null);
    assertCancelLogged(queuedId);
  }));

test("an administrator cancels a running job: Cancelling..., then Cancelled", () =>
  step(async () => {
    await recordStatuses(admin, runningId);
    await cancelButton(admin, runningId).click();
    await admin.getByRole("dialog").getByRole("button", { name: "Confirm" }).click();
    await waitForRowStatus(admin, runningId, "Cancelled");
    const seen = await admin.evaluate(() => window.__seen);
    assert.deepEqual(seen, ["Running", "Cancelling...", "Cancelled"]);
    await admin.getByText(`Job ${runningId}: Cancelled.`).waitFor();
    await cluster.waitForStatus(runningId, "CANCELLED");
    assertCancelLogged(runningId);
    // The worker is free now; the queued job cancelled earlier still never ran.
    const fast = cluster.submit("demo-fast");
    await cluster.waitForStatus(fast, "SUCCEEDED");
    const queued = cluster.get(queuedId);
    assert.equal(queued.status, "CANCELLED");
    assert.equal(queued.started_at, null);
  }));

test("the job detail shows the cancel's milestones and the live execution log", () =>
  step(async () => {
    // The row's tooltip answers "did my cancel work?" in one line.
    const status = admin.getByRole("button", { name: `Cancelled (details of job ${runningId})` });
    await status.hover();
    const tooltip = admin.getByRole("tooltip").filter({ hasText: "Cancelled by ada" });
    await tooltip.waitFor();
    assert.match(await tooltip.textContent(), /^Cancelled by ada: stopped in Generate \+\d+ ms after the request\.$/);

    // Opened by keyboard; the timeline shows requested → delivered → acknowledged → stopped.
    await status.focus();
    await admin.keyboard.press("Enter");
    const detail = admin.getByRole("dialog", { name: `Job ${runningId}` });
    await detail.waitFor();
    const milestone = (key) => detail.locator(`[data-milestone="${key}"]`);
    assert.match(await milestone("requested").textContent(), /by ada/);
    for (const key of ["delivered", "acknowledged", "stopped"]) {
      assert.match(await milestone(key).textContent(), /\+\d+ ms/, `${key} has a time after the request`);
    }
    assert.match(await milestone("stopped").textContent(), /in Generate/);
    await detail.getByText("The job has ended: the log is complete.").waitFor();
    const events = await detail.locator("tr[data-event]").evaluateAll((rows) =>
      rows.map((r) => r.getAttribute("data-event")),
    );
    assert.deepEqual(
      events.filter((e) => e.startsWith("cancel.")),
      ["cancel.requested", "cancel.delivered", "cancel.acknowledged", "cancel.stopped"],
    );
    assert.equal(events[0], "job.submitted");
    const requestedRow = detail.locator('tr[data-event="cancel.requested"]');
    assert.match(await requestedRow.textContent(), /ada/);
    await noAxeViolations(admin, "with the job detail open");

    await admin.keyboard.press("Escape");
    await detail.waitFor({ state: "hidden" });
    assert.equal(
      await admin.evaluate(() => document.activeElement?.getAttribute("aria-label")),
      `Cancelled (details of job ${runningId})`,
      "focus returns to the status that opened the detail",
    );
  }));

test("the detail of a running job follows its log live", () =>
  step(async () => {
    const id = cluster.submit("demo-slow", SLOW);
    await waitForRowStatus(admin, id, "Running");
    await admin.getByRole("button", { name: `Running (details of job ${id})` }).click();
    const detail = admin.getByRole("dialog", { name: `Job ${id}` });
    await detail.getByText("Following the log as it grows.").waitFor();
    await detail.locator('tr[data-event="job.started"]').waitFor();
    // A cancel from elsewhere (the CLI) appears in the open detail as it happens.
    cluster.cli(["jobs", "cancel", id]);
    await detail.locator('tr[data-event="cancel.stopped"]').waitFor();
    await detail.locator('[data-milestone="stopped"]', { hasText: "in Generate" }).waitFor();
    await detail.getByText("The job has ended: the log is complete.").waitFor();
    await detail.getByRole("button", { name: "Close" }).click();
    await detail.waitFor({ state: "hidden" });
  }));

test("a completed job has no cancel action", () =>
  step(async () => {
    const id = cluster.submit("demo-fast");
    await waitForRowStatus(admin, id, "Succeeded");
    assert.equal(await row(admin, id).getByRole("button", { name: /^Cancel job/ }).count(), 0);
  }));

test("the cancel dialog works by keyboard alone, and axe finds no violations", () =>
  step(async () => {
    const id = cluster.submit("demo-slow", SLOW);
    await waitForRowStatus(admin, id, "Running");
    await noAxeViolations(admin, "on the job table");

    const label = await cancelButton(admin, id).getAttribute("aria-label");
    const focusedLabel = () => admin.evaluate(() => document.activeElement?.getAttribute("aria-label"));
    const focusedText = () => admin.evaluate(() => document.activeElement?.textContent?.trim());
    await admin.locator("body").focus();
    let reached = false;
    for (let i = 0; i < 40 && !reached; i++) {
      await admin.keyboard.press("Tab");
      reached = (await focusedLabel()) === label;
    }
    assert.ok(reached, "Tab reaches the cancel button");

    await admin.keyboard.press("Enter");
    const dialog = admin.getByRole("dialog");
    await dialog.waitFor();
    assert.equal(await focusedText(), "Cancel", "focus starts on the safe choice");
    await admin.keyboard.press("Tab");
    assert.equal(await focusedText(), "Confirm");
    await admin.keyboard.press("Tab");
    assert.equal(await focusedText(), "Cancel", "focus stays in the dialog");
    await admin.keyboard.press("Shift+Tab");
    assert.equal(await focusedText(), "Confirm");
    await noAxeViolations(admin, "with the dialog open");

    await admin.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
    assert.equal(await focusedLabel(), label, "focus returns to the cancel button");
    assert.equal(await statusText(admin, id), "Running", "Esc cancels nothing");

    await admin.keyboard.press("Enter");
    await dialog.waitFor();
    await admin.keyboard.press("Tab");
    await admin.keyboard.press("Enter");
    await waitForRowStatus(admin, id, "Cancelled");
    await cluster.waitForStatus(id, "CANCELLED");
  }));

test("errors are announced in a live region, and axe finds no violations there either", () =>
  step(async () => {
    // A wrong password on the sign-in page.
    const page = await context.newPage();
    await page.goto(cluster.url);
    await page.getByLabel("Username").fill("ada");
    await page.getByLabel("Password").fill("not-the-password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("Wrong username or password.").waitFor();
    await noAxeViolations(page, "on the sign-in page with an error");
    await page.close();

    // A cancel refused because the job ended while the dialog was open.
    const id = cluster.submit("demo-slow", SLOW);
    await waitForRowStatus(admin, id, "Running");
    await cancelButton(admin, id).click();
    const dialog = admin.getByRole("dialog");
    await dialog.waitFor();
    cluster.cli(["jobs", "cancel", id]);
    await cluster.waitForStatus(id, "CANCELLED");
    await dialog.getByRole("button", { name: "Confirm" }).click();
    const message = admin.getByRole("status").filter({ hasText: `Could not cancel job ${id}` });
    await message.waitFor();
    assert.match(await message.textContent(), /not in a cancellable state/);
    assert.equal(await message.getAttribute("aria-live"), "polite");
    await waitForRowStatus(admin, id, "Cancelled");
    await noAxeViolations(admin, "with an error shown");
  }));

test("a viewer sees the jobs but no cancel button", () =>
  step(async () => {
    const id = cluster.submit("demo-slow", SLOW);
    const viewer = await signIn("vera");
    await waitForRowStatus(viewer, id, "Running");
    await viewer.getByText("(viewer)").waitFor();
    assert.equal(await viewer.getByRole("button", { name: /^Cancel job/ }).count(), 0);
    await noAxeViolations(viewer, "on the viewer's table");
    await viewer.close();
    // Free the worker for the next test.
    cluster.cli(["jobs", "cancel", id]);
    await cluster.waitForStatus(id, "CANCELLED");
  }));

test("the table shows a lost connection, reconnects and resumes after a control-plane restart", () =>
  step(async () => {
    const before = cluster.submit("demo-fast");
    await waitForRowStatus(admin, before, "Succeeded");
    await cluster.stopControlPlane();
    await admin.getByText("Connection lost, reconnecting...").waitFor();
    await cluster.restartControlPlane();
    await admin.getByText("Live", { exact: true }).waitFor({ timeout: 20_000 });
    const afterRestart = cluster.submit("demo-fast");
    await waitForRowStatus(admin, afterRestart, "Succeeded", 30_000);
    // Resumed, not reloaded twice: every job is in the table once.
    assert.equal(await row(admin, before).count(), 1);
    assert.equal(await admin.locator("tbody tr").count(), new Set(await admin.locator("tbody tr").evaluateAll((rows) => rows.map((r) => r.id))).size);
  }));
