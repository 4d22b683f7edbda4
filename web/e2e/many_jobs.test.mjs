// The dashboard with 10,000 jobs, in Chromium against a real control plane (no workers, so
// every job stays queued): the snapshot loads, the table shows one page, paging and the
// filter work, and a new job appears live. Prints how long each took (a measurement, not an
// assertion: see docs/benchmarks.md).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Cluster, USERS, launchChromium } from "./cluster.mjs";

const JOBS = Number(process.env.PRESSWORK_E2E_MANY_JOBS ?? 10_000);

let cluster;
let browser;
let context;
let failed = false;

before(async () => {
  cluster = new Cluster({ workers: 0 });
  await cluster.start();
  browser = await launchChromium({ timeoutMs: 60_000 });
  context = browser.context;
});

after(async () => {
  await browser?.close();
  if (failed) console.error(`cluster logs (kept in ${cluster.dir}):\n${cluster.logs()}`);
  await cluster?.stop({ keep: failed });
});

/**
 * Submits `count` jobs from the page itself over grpc-web (many in flight at once; spawning
 * the CLI 10,000 times would take minutes). The request is encoded by hand: SubmitJobRequest
 * has one string field, `report` (field 1).
 */
function submitFromPage(page, count, concurrency = 16) {
  return page.evaluate(
    async ({ count, concurrency }) => {
      const token = JSON.parse(sessionStorage.getItem("presswork.session")).token;
      const report = new TextEncoder().encode("demo-fast");
      const message = new Uint8Array([0x0a, report.length, ...report]);
      const frame = new Uint8Array(5 + message.length);
      new DataView(frame.buffer).setUint32(1, message.length);
      frame.set(message, 5);
      let next = 0;
      let failures = 0;
      async function one() {
        while (next < count) {
          next += 1;
          const response = await fetch("/presswork.v1.JobService/SubmitJob", {
            method: "POST",
            headers: {
              "content-type": "application/grpc-web+proto",
              "x-grpc-web": "1",
              authorization: `Bearer ${token}`,
            },
            body: frame,
          });
          await response.arrayBuffer();
          const status = response.headers.get("grpc-status");
          if (!response.ok || (status && status !== "0")) failures += 1;
        }
      }
      await Promise.all(Array.from({ length: concurrency }, one));
      return failures;
    },
    { count, concurrency },
  );
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

test(`the dashboard stays usable with ${JOBS.toLocaleString("en-US")} jobs`, async () => {
  try {
    const page = await context.newPage();
    await page.goto(cluster.url);
    await page.getByLabel("Username").fill("ada");
    await page.getByLabel("Password").fill(USERS.ada.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("Live", { exact: true }).waitFor();

    let started = Date.now();
    assert.equal(await submitFromPage(page, JOBS), 0, "every submit succeeded");
    const submitMs = Date.now() - started;
    const total = `of ${JOBS.toLocaleString("en-US")}`;
    await page.getByText(new RegExp(`Jobs 1–50 ${total}`)).waitFor();

    // A fresh load: the whole snapshot arrives, one page is rendered.
    started = Date.now();
    await page.reload();
    await page.getByText(new RegExp(`Jobs 1–50 ${total}`)).waitFor();
    const loadMs = Date.now() - started;
    assert.equal(await page.locator("tbody tr").count(), 50);

    // Paging and the filter.
    await page.getByRole("button", { name: "Next page" }).click();
    await page.getByText(new RegExp(`Jobs 51–100 ${total}`)).waitFor();
    await page.getByLabel("Status").selectOption({ label: "Succeeded" });
    await page.getByText("No jobs to show.").waitFor();
    await page.getByLabel("Status").selectOption({ label: "Queued" });
    await page.getByText(new RegExp(`Jobs 1–50 ${total}`)).waitFor();

    // New jobs appear live at the top while 10,000 are held: submit one, time until its row shows.
    const seen = [];
    for (let i = 0; i < 20; i++) {
      const id = cluster.submit("demo-fast");
      const afterCli = Date.now();
      await page.locator(`tr[id="job-row-${id}"]`).waitFor();
      seen.push(Date.now() - afterCli);
    }
    seen.sort((a, b) => a - b);
    await page.getByText(new RegExp(`of ${(JOBS + 20).toLocaleString("en-US")}`)).waitFor();

    console.log(
      `dashboard with ${JOBS} jobs (debug build): ${JOBS} submits in ${submitMs} ms; ` +
        `fresh load to first page ${loadMs} ms; new job's row shown after its submit returned: ` +
        `p50 ${percentile(seen, 50)} ms, p95 ${percentile(seen, 95)} ms, max ${seen[seen.length - 1]} ms (n=${seen.length})`,
    );
    await page.close();
  } catch (error) {
    failed = true;
    throw error;
  }
});
