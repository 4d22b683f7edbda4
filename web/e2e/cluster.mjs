// Starts a real control plane (serving the built dashboard) and real worker processes from
// target/debug, and drives the `presswork` CLI to submit and inspect jobs.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { chromium } from "playwright-core";

const repo = path.resolve(import.meta.dirname, "../..");
// The binaries `cargo build` made: PRESSWORK_BIN_DIR, else $CARGO_TARGET_DIR/debug, else target/debug.
const binDir =
  process.env.PRESSWORK_BIN_DIR ??
  path.join(path.resolve(repo, process.env.CARGO_TARGET_DIR ?? "target"), "debug");
const bin = (name) => path.join(binDir, name);

export const USERS = {
  ada: { password: "ada-administrator-pw", role: "administrator" },
  vera: { password: "vera-viewer-pw", role: "viewer" },
};

export class Cluster {
  /** `controlPlaneArgs`: more flags for the control plane. */
  constructor({ workers = 1, capacity = 1, controlPlaneArgs = [] } = {}) {
    this.controlPlaneArgs = controlPlaneArgs;
    this.dir = mkdtempSync(path.join(tmpdir(), "presswork-e2e-"));
    this.database = `sqlite://${this.dir}/presswork.db`;
    this.workerToken = `wt-${Math.random().toString(36).slice(2)}${Date.now()}`;
    this.workers = workers;
    this.capacity = capacity;
    this.processes = [];
    this.url = "";
  }

  async start() {
    for (const [username, { password, role }] of Object.entries(USERS)) {
      const added = spawnSync(
        bin("presswork-control-plane"),
        ["--database", this.database, "users", "add", "--username", username, "--role", role],
        { input: `${password}\n`, encoding: "utf8" },
      );
      if (added.status !== 0) throw new Error(`users add ${username} failed: ${added.stderr}`);
    }
    this.url = await this.startControlPlane("127.0.0.1:0");
    for (let n = 1; n <= this.workers; n++) {
      mkdirSync(path.join(this.dir, `out-${n}`));
      this.spawn(`worker-${n}`, bin("presswork-worker"), [
        "--control-plane", this.url,
        "--capacity", String(this.capacity),
        "--name", `worker-${n}`,
        "--output-dir", path.join(this.dir, `out-${n}`),
      ], { PRESSWORK_WORKER_TOKEN: this.workerToken });
    }
    this.cliLogin("ada");
  }

  /** Starts the control plane on `listen`; resolves to its URL once it serves. */
  startControlPlane(listen) {
    const cp = this.spawn("control-plane", bin("presswork-control-plane"), [
      "--listen", listen,
      "--database", this.database,
      "--web-dir", path.join(repo, "web/dist"),
      "--worker-token", this.workerToken,
      ...this.controlPlaneArgs,
    ]);
    this.controlPlane = cp;
    return new Promise((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`control plane did not start:\n${this.logs()}`)), 30_000);
      cp.stdout.on("data", (chunk) => {
        out += chunk;
        const m = out.match(/listening on (\S+)/);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      cp.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`control plane exited (${code}):\n${this.logs()}`));
      });
    });
  }

  /** Stops the control plane (SIGTERM, as an operator would). */
  async stopControlPlane() {
    await stopProcess(this.controlPlane);
  }

  /** Starts the control plane again on the same address and database. */
  async restartControlPlane() {
    const listen = new URL(this.url).host;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.startControlPlane(listen);
        return;
      } catch (error) {
        if (attempt >= 20) throw error;
        await sleep(250);
      }
    }
  }

  spawn(name, file, args, env = {}) {
    const child = spawn(file, args, {
      env: { ...process.env, RUST_LOG: "info", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.log = "";
    child.stderr.on("data", (chunk) => {
      child.log = (child.log + chunk).slice(-20_000);
    });
    child.name = name;
    this.processes.push(child);
    return child;
  }

  logs() {
    return this.processes
      .map((p) => `--- ${p.name} ---\n${p.log.split("\n").slice(-25).join("\n")}`)
      .join("\n");
  }

  cli(args, input) {
    const result = spawnSync(bin("presswork"), ["--server", this.url, "--json", ...args], {
      input,
      encoding: "utf8",
      env: { ...process.env, XDG_CONFIG_HOME: path.join(this.dir, "config"), PRESSWORK_TOKEN: "" },
    });
    if (result.status !== 0) throw new Error(`presswork ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  }

  cliLogin(user) {
    this.cli(["login", "--username", user, "--password-stdin"], `${USERS[user].password}\n`);
  }

  /** Submits a job and returns its id. */
  submit(report, params = {}) {
    const args = ["jobs", "submit", "--report", report];
    for (const [k, v] of Object.entries(params)) args.push("--param", `${k}=${v}`);
    return JSON.parse(this.cli(args)).id;
  }

  get(id) {
    return JSON.parse(this.cli(["jobs", "get", id]));
  }

  /** The job's execution log entries. */
  log(id) {
    return this.cli(["jobs", "log", id])
      .split("\n")
      .filter((line) => line.trim())
      .map((line) => JSON.parse(line));
  }

  /** Waits until the job has the status (asks the control plane; no fixed sleeps). */
  async waitForStatus(id, status, timeoutMs = 20_000) {
    const deadline = Date.now() + timeoutMs;
    let job;
    while (Date.now() < deadline) {
      job = this.get(id);
      if (job.status === status) return job;
      await sleep(100);
    }
    throw new Error(`job ${id} is ${job?.status}, not ${status}, after ${timeoutMs} ms`);
  }

  async stop({ keep = false } = {}) {
    await Promise.all(this.processes.map(stopProcess));
    if (!keep) rmSync(this.dir, { recursive: true, force: true });
  }
}

function stopProcess(p) {
  return new Promise((resolve) => {
    if (!p || p.exitCode !== null || p.signalCode !== null) return resolve();
    p.on("exit", resolve);
    p.kill("SIGTERM");
    setTimeout(() => p.kill("SIGKILL"), 5000).unref();
  });
}

/** Debian's Chromium, headless, with a fresh profile; `close()` also removes the profile. */
export async function launchChromium({ timeoutMs = 15_000 } = {}) {
  const profile = mkdtempSync(path.join(tmpdir(), "presswork-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.PRESSWORK_CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1280, height: 800 },
  });
  context.setDefaultTimeout(timeoutMs);
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
