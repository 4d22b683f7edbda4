// The same dashboard in Firefox (Debian's firefox-esr, driven by puppeteer-core over WebDriver
// BiDi): sign in, cancel a queued job and a running one through the dialog, Esc closes it,
// and the running job's detail shows how its cancel went.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import puppeteer from "puppeteer-core";
import { Cluster, USERS } from "./cluster.mjs";

const FIREFOX = process.env.PRESSWORK_FIREFOX ?? "/usr/bin/firefox-esr";
const SLOW = { slow_stage: "generate", duration_ms: "120000" };

let cluster;
let browser;
let failed = false;

before(async () => {
  // Puppeteer drives Firefox over WebDriver BiDi, whose injected helper scripts run under the
  // page's Content-Security-Policy and need eval; Chromium's DevTools protocol is exempt. So
  // this run adds 'unsafe-eval' to the default policy; the Chromium tests check the default
  // itself (no console errors).
  cluster = new Cluster({
    workers: 1,
    capacity: 1,
    controlPlaneArgs: [
      "--web-csp",
      "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
    ],
  });
  await cluster.start();
  browser = await puppeteer.launch({ browser: "firefox", executablePath: FIREFOX, headless: true });
});

after(async () => {
  await browser?.close();
  if (failed) console.error(`cluster logs (kept in ${cluster.dir}):\n${cluster.logs()}`);
  await cluster?.stop({ keep: failed });
});

const statusOf = (page, id) =>
  page.evaluate(
    (rowId) => document.getElementById(rowId)?.querySelector(".status")?.textContent ?? null,
    `job-row-${id}`,
  );

async function waitForStatus(page, id, status) {
  await page.waitForFunction(
    (rowId, want) => document.getElementById(rowId)?.querySelector(".status")?.textContent === want,
    { timeout: 20_000 },
    `job-row-${id}`,
    status,
  );
}

async function confirmCancel(page, id) {
  await page.locator(`button[aria-label^="Cancel job ${id} "]`).click();
  await page.waitForSelector("[role=dialog]");
  await page.locator("[role=dialog] button.danger").click();
}

test("in Firefox an administrator cancels a queued and a running job", async () => {
  try {
    const running = cluster.submit("demo-slow", SLOW);
    await cluster.waitForStatus(running, "RUNNING");
    const queued = cluster.submit("demo-slow", SLOW);

    const page = await browser.newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(cluster.url);
    await page.locator("#username").fill("ada");
    await page.locator("#password").fill(USERS.ada.password);
    await page.locator("button[type=submit]").click();
    await waitForStatus(page, queued, "Queued");

    // Esc closes the dialog and sends nothing.
    await page.locator(`button[aria-label^="Cancel job ${queued} "]`).click();
    await page.waitForSelector("[role=dialog]");
    await page.keyboard.press("Escape");
    await page.waitForSelector("[role=dialog]", { hidden: true });
    assert.equal(await statusOf(page, queued), "Queued");

    await confirmCancel(page, queued);
    await waitForStatus(page, queued, "Cancelled");
    assert.equal((await cluster.waitForStatus(queued, "CANCELLED")).started_at, null);

    await confirmCancel(page, running);
    await waitForStatus(page, running, "Cancelled");
    await cluster.waitForStatus(running, "CANCELLED");

    // The detail view: the cancel's milestones and the complete execution log.
    await page.locator(`button[aria-label="Cancelled (details of job ${running})"]`).click();
    await page.waitForSelector('[role=dialog] [data-milestone="stopped"]');
    await page.waitForFunction(
      () =>
        document.querySelector('[role=dialog] [data-milestone="stopped"]')?.textContent?.includes("in Generate") &&
        document.querySelector('[role=dialog] tr[data-event="cancel.stopped"]') !== null,
      { timeout: 20_000 },
    );
    await page.keyboard.press("Escape");
    await page.waitForSelector("[role=dialog]", { hidden: true });
    await page.close();
  } catch (error) {
    failed = true;
    throw error;
  }
});
