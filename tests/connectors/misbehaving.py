#!/usr/bin/env python3
"""A connector that breaks one rule of the plug-in contract on purpose, for tests.

Param `misbehave` picks the rule (anything else: it behaves):
  ignore-sigterm  ignores SIGTERM, and hangs once it gets the cancel message: only SIGKILL
                  stops it
  leave-child     starts a `sleep` in its process group and exits without stopping it
  leave-file      leaves partial.csv in its work directory
  garbage         writes a line that is not a protocol message before its rows
  exit-nonzero    sends a batch, then exits with status 3 without `done`
Otherwise it sends `rows` rows (default 200) in batches of 50, `delay_ms` (default 20)
apart, and gives up by itself after 300 s so nothing outlives a broken test run.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

stop = threading.Event()


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def watch_stdin():
    for line in sys.stdin:
        if '"cancel"' in line:
            break
    stop.set()


def main():
    start = json.loads(sys.stdin.readline())
    params = start["params"]
    mode = params.get("misbehave", "")
    rows = int(params.get("rows", "200"))
    delay = int(params.get("delay_ms", "20")) / 1000
    if mode == "ignore-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=watch_stdin, daemon=True).start()
    if mode == "leave-child":
        subprocess.Popen(["sleep", "300"])
    if mode == "leave-file":
        with open(os.path.join(start["work_dir"], "partial.csv"), "w") as file:
            file.write("region,product,quarter,amount\n")
    if mode == "garbage":
        print("Starting up...", flush=True)
    print("misbehaving connector: mode %r" % mode, file=sys.stderr, flush=True)
    deadline = time.monotonic() + 300
    sent = 0
    while sent < rows and time.monotonic() < deadline:
        if stop.is_set():
            if mode != "ignore-sigterm":
                return 0
            while time.monotonic() < deadline:  # hangs: a cancel handler that deadlocked
                time.sleep(0.1)
            return 0
        batch = [{"region": "North", "product": "W", "quarter": "Q1", "amount": 1}] * 50
        send({"type": "rows", "rows": batch})
        sent += len(batch)
        if mode == "exit-nonzero":
            print("misbehaving connector: giving up with status 3", file=sys.stderr, flush=True)
            return 3
        time.sleep(delay)
    send({"type": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
