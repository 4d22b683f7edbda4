#!/usr/bin/env python3
"""A Presswork source connector in Python, standard library only (docs/pdk.md).

Sends sales rows to the worker as JSON lines on stdout: read from a CSV file
(param `path`, with the columns region, product, quarter, amount) or generated
(param `rows`, default 1000). Rows go out in batches of `batch` (default 100),
with `delay_ms` (default 0) between batches to make a slow source.

It honours cancellation the way docs/pdk.md asks: a `{"type":"cancel"}` line on
stdin, the end of stdin (the worker is gone) and SIGTERM all set one flag; every
wait watches that flag and the flag is checked between batches, so it stops
within milliseconds. It then deletes the files it made in its work directory
and exits.

Try it:  presswork-worker connector-check examples/connectors/python/sales_source.py --param rows=5000 --param delay_ms=10
"""

import csv
import json
import os
import random
import signal
import sys
import threading

stop = threading.Event()


def send(message):
    """Writes one protocol message (one line) and flushes it."""
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def log(message):
    """Diagnostics go to stderr; the worker copies them into the job's log."""
    print(message, file=sys.stderr, flush=True)


def watch_stdin():
    """A cancel message or the end of stdin (the worker went away) stops the connector."""
    for line in sys.stdin:
        try:
            if json.loads(line).get("type") == "cancel":
                break
        except ValueError:
            continue
    stop.set()


def generated_rows(count):
    regions = ["North", "South", "East", "West", "Central"]
    products = ["Widget", "Gadget", "Gizmo"]
    rng = random.Random(count)
    for i in range(count):
        yield {
            "region": regions[i % len(regions)],
            "product": rng.choice(products),
            "quarter": "Q%d" % (i % 4 + 1),
            "amount": round(rng.uniform(10, 1000), 2),
        }


def csv_rows(path):
    with open(path, newline="") as file:
        for record in csv.DictReader(file):
            yield {key.strip().lower(): value for key, value in record.items() if key}


def main():
    start = json.loads(sys.stdin.readline() or "{}")
    if start.get("type") != "start":
        log("expected a start message on stdin; run me from a Presswork worker or connector-check")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=watch_stdin, daemon=True).start()

    params = start.get("params", {})
    try:
        batch_size = max(1, int(params.get("batch", "100")))
        delay = max(0, int(params.get("delay_ms", "0"))) / 1000
        total = int(params.get("rows", "1000"))
    except ValueError as error:
        send({"type": "error", "message": "bad parameter (%s); batch, delay_ms and rows are whole numbers" % error})
        return 1
    path = params.get("path")
    if path and not os.path.isfile(path):
        send({"type": "error", "message": "cannot open %s: no such file; check source.path" % path})
        return 1
    rows = csv_rows(path) if path else generated_rows(total)

    # A stand-in for the temporary files a real connector makes (a download, a spool):
    # whatever happens, it is gone before the connector exits.
    checkpoint = os.path.join(start["work_dir"], "checkpoint.json")
    sent = 0
    try:
        batch = []
        for row in rows:
            batch.append(row)
            if len(batch) < batch_size:
                continue
            if stop.is_set():
                break
            send({"type": "rows", "rows": batch})
            sent += len(batch)
            batch = []
            with open(checkpoint, "w") as file:
                json.dump({"sent": sent}, file)
            if not path:
                send({"type": "progress", "fraction": sent / max(total, 1)})
            if delay and stop.wait(delay):
                break
        if stop.is_set():
            log("cancelled after %d rows; cleaned up" % sent)
            return 0
        if batch:
            send({"type": "rows", "rows": batch})
            sent += len(batch)
        send({"type": "log", "level": "info", "message": "sent %d rows" % sent})
        send({"type": "done"})
        return 0
    except BrokenPipeError:
        return 0  # the worker stopped reading: it is stopping us anyway
    finally:
        if os.path.exists(checkpoint):
            os.remove(checkpoint)


if __name__ == "__main__":
    sys.exit(main())
