"""Submit tasks through the gateway, then prove every accepted one finished: no task lost.

    python3 chaos/check_loss.py --url http://127.0.0.1:8000 --tasks 300 [--token $TOKEN]

Start it, run a chaos experiment while it submits, and wait for the verdict. Every task the
gateway answered 202 for must end `succeeded` or `dead-lettered` (GET /task/<id>); 503 answers
(refused while a dependency was down) are counted but are not losses. Also prints the change
of GET /stats counters over the run. Exit code 0 only when nothing was lost. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

FINAL_STATES = {"succeeded", "dead-lettered"}


def call(url: str, token: str | None, body: dict | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except OSError:
        return 0, {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--token", default=None, help="JWT with tasks:write, tasks:read and stats:read")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=0.5, help="how long each `wait` task runs")
    parser.add_argument("--rate", type=float, default=20.0, help="submissions per second")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the tasks to finish")
    args = parser.parse_args(argv)

    _, stats_before = call(f"{args.url}/stats", args.token)
    accepted: list[str] = []
    refused = 0

    def submit(n: int) -> None:
        nonlocal refused
        time.sleep(n / args.rate)
        status, body = call(f"{args.url}/task", args.token, {"actor": "wait", "payload": {"seconds": args.seconds}})
        if status == 202:
            accepted.append(body["task_id"])
        else:
            refused += 1

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(submit, range(args.tasks)))
    print(f"submitted {args.tasks}: {len(accepted)} accepted (202), {refused} refused", flush=True)

    deadline = time.monotonic() + args.timeout
    pending = set(accepted)
    states: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        for task_id in list(pending):
            status, body = call(f"{args.url}/task/{task_id}", args.token)
            if status == 200 and body.get("state") in FINAL_STATES:
                states[task_id] = body["state"]
                pending.discard(task_id)
        if pending:
            time.sleep(1)

    _, stats_after = call(f"{args.url}/stats", args.token)
    succeeded = sum(1 for s in states.values() if s == "succeeded")
    dead = sum(1 for s in states.values() if s == "dead-lettered")
    print(f"succeeded {succeeded}, dead-lettered {dead}, unfinished {len(pending)}")
    try:
        processed = stats_after["workers"]["processed"] - stats_before["workers"]["processed"]
        queues = stats_after["queues"]["default"]
        print(f"GET /stats: processed +{processed} (>= succeeded: tasks may run more than once), "
              f"outstanding pending={queues['pending']} in_flight={queues['in_flight']} scheduled={queues['scheduled']}, "
              f"dead_lettered={queues['dead_lettered']}")
    except (KeyError, TypeError):
        print("GET /stats unavailable")
    if pending:
        print("LOST or stuck:", " ".join(sorted(pending)[:20]))
        return 1
    print("no task lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
