"""``natsq``: the operator's command line, over the gateway's HTTP API.

    natsq queues
    natsq workers
    natsq dlq list default
    natsq dlq show default 42
    natsq dlq replay default 42        # or: natsq dlq replay default --all
    natsq dlq purge default --yes
    natsq task show <task-id>
    natsq task wait <task-id> --timeout 60
    natsq task list --state dead-lettered --actor flaky
    natsq task cancel <task-id>

The gateway is ``--url`` or ``NATSQ_API_URL`` (default http://127.0.0.1:8000);
the token (scope ``admin``; ``tasks:read`` for ``task wait`` and ``task list``,
``tasks:write`` for ``task cancel``) comes from
``NATSQ_API_TOKEN`` or ``--token-file``, never from the command line, where
other users could read it. ``--json`` after a command prints the API's answer as it is.

Exit codes: 0 done; 1 the API refused or the task did not succeed; 2 bad
usage; 3 the gateway cannot be reached.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from .client import LONG_POLL_S, Client, ClientError

DEFAULT_URL = "http://127.0.0.1:8000"
#: States after which a task changes no more.
FINAL_STATES = {"succeeded", "failed", "dead-lettered", "cancelled"}


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Api(Client):
    """The gateway's client (``natsq.client``) with the admin routes."""

    def admin(self, method: str, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return self._request(method, f"{path}{'?' + query if query else ''}")


# -- commands ---------------------------------------------------------------------------------


def queues(api: Api, args) -> tuple[Any, str]:
    answer = api.admin("GET", "/admin/queues")
    rates = answer["rates"]

    def per_s(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}/s"

    text = _table(answer["queues"], ["name", "pending", "in_flight", "redelivered", "scheduled", "dead_lettered"])
    text += (f"\n\nenqueued {per_s(rates['enqueued_per_s'])}, succeeded {per_s(rates['processed_per_s'])}, "
             f"failed attempts {per_s(rates['failed_per_s'])}"
             + (f" over {rates['window_s']} s" if rates["window_s"] else " (rates need an earlier reading)"))
    return answer, text


def workers(api: Api, args) -> tuple[Any, str]:
    answer = api.admin("GET", "/admin/workers")
    rows = [{**w, "status": "alive" if w["alive"] else "gone", "queues": ",".join(w["queues"]),
             "current": ", ".join(f"{t['actor']} {t['task_id']}" for t in w["current_tasks"]) or "idle"}
            for w in answer["workers"]]
    return answer, _table(rows, ["host", "pid", "status", "queues", "threads", "last_heartbeat", "current"])


def dlq_list(api: Api, args) -> tuple[Any, str]:
    answer = api.admin("GET", _dead_letters(args.queue), after=args.after, limit=args.limit)
    text = _table(answer["dead_letters"], ["seq", "task_id", "actor", "attempts", "dead_lettered_at", "reason"])
    if answer["next_after"] is not None:
        text += f"\n\nmore: natsq dlq list {args.queue} --after {answer['next_after']}"
    return answer, text


def dlq_show(api: Api, args) -> tuple[Any, str]:
    answer = api.admin("GET", f"{_dead_letters(args.queue)}/{args.seq}")
    fields = ["seq", "queue", "task_id", "actor", "reason", "attempts", "deliveries", "dead_lettered_at"]
    text = "\n".join(f"{name + ':':<18}{answer[name]}" for name in fields)
    if "message" in answer:
        text += "\n\nmessage:\n" + json.dumps(answer["message"], indent=2)
    else:
        text += "\n\nbody:\n" + answer["body"]
    if answer["traceback"]:
        text += "\n\nlast error:\n" + answer["traceback"].rstrip()
    return answer, text


def dlq_replay(api: Api, args) -> tuple[Any, str]:
    if args.all == (args.seq is not None):
        raise CliError("give either a dead letter's number or --all", exit_code=2)
    if args.all:
        answer = api.admin("POST", f"{_dead_letters(args.queue)}/replay")
        text = _table(answer["replayed"], ["seq", "task_id", "replayed_as"])
        for skipped in answer["skipped"]:
            text += f"\nskipped {skipped['seq']}: {skipped['reason']}"
        return answer, text + f"\n\n{len(answer['replayed'])} replayed, {answer['remaining']} dead letters remain"
    answer = api.admin("POST", f"{_dead_letters(args.queue)}/{args.seq}/replay")
    return answer, f"dead letter {answer['seq']} (task {answer['task_id']}) replayed as task {answer['replayed_as']}"


def dlq_delete(api: Api, args) -> tuple[Any, str]:
    answer = api.admin("DELETE", f"{_dead_letters(args.queue)}/{args.seq}")
    return answer, f"dead letter {answer['deleted']} deleted"


def dlq_purge(api: Api, args) -> tuple[Any, str]:
    if not args.yes:
        raise CliError(f"purging deletes every dead letter of {args.queue!r} for good; add --yes to do it", exit_code=2)
    answer = api.admin("DELETE", _dead_letters(args.queue))
    return answer, f"{answer['purged']} dead letters of {args.queue!r} purged"


def task_show(api: Api, args) -> tuple[Any, str]:
    answer = api.admin("GET", f"/admin/tasks/{urllib.parse.quote(args.task_id, safe='')}")
    return answer, _task_text(answer)


def task_wait(api: Api, args) -> tuple[Any, str]:
    deadline = time.monotonic() + args.timeout
    while True:
        left = max(deadline - time.monotonic(), 0.0)
        answer = api.get_task(args.task_id, wait=min(left, LONG_POLL_S))
        if answer["state"] in FINAL_STATES:
            return answer, _task_text(answer)
        if left <= 0:
            raise CliError(f"task {args.task_id} is still {answer['state']} after {args.timeout:g} s")


def task_list(api: Api, args) -> tuple[Any, str]:
    found = list(itertools.islice(api.tasks(state=args.state, actor=args.actor, created_after=args.since,
                                            created_before=args.until, page_size=min(args.limit, 200)), args.limit))
    return {"tasks": found}, _table(found, ["task_id", "actor", "state", "attempts", "created_at", "error"])


def task_cancel(api: Api, args) -> tuple[Any, str]:
    state = api.task(args.task_id).cancel()
    outcome = "cancelled" if state == "cancelled" else "asked to stop (it is running)"
    return {"task_id": args.task_id, "state": state}, f"task {args.task_id} {outcome}"


def _dead_letters(queue: str) -> str:
    return f"/admin/queues/{urllib.parse.quote(queue, safe='')}/dead-letters"


def _task_text(task: dict) -> str:
    fields = ["task_id", "actor", "state", "attempts", "created_at", "started_at", "finished_at", "error",
              "replay_of", "replayed_as"]
    lines = [f"{name + ':':<13}{task[name]}" for name in fields if task.get(name) is not None]
    if task.get("result") is not None:
        lines.append(f"{'result:':<13}{json.dumps(task['result'])}")
    for entry in task.get("history", []):
        detail = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("at", "event"))
        lines.append(f"  {entry['at']}  {entry['event']}" + (f"  ({detail})" if detail else ""))
    return "\n".join(lines)


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[("-" if row.get(c) is None else str(row[c])) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


# -- arguments ---------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="natsq", description="Operate natsq: queues, workers, dead letters, tasks.")
    top.add_argument("--url", default=os.environ.get("NATSQ_API_URL", DEFAULT_URL),
                     help="the gateway (default: $NATSQ_API_URL or %(default)s)")
    top.add_argument("--token-file", type=Path, help="a file holding the bearer token (default: $NATSQ_API_TOKEN)")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print the API's JSON answer")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("queues", parents=[output], help="queues: backlog, dead letters, rates").set_defaults(run=queues)
    commands.add_parser("workers", parents=[output], help="worker processes seen in the last hour").set_defaults(run=workers)

    dlq = commands.add_parser("dlq", help="dead letters").add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = dlq.add_parser("list", parents=[output], help="a page of a queue's dead letters, oldest first")
    listing.add_argument("queue")
    listing.add_argument("--after", type=int, help="start after this dead letter number")
    listing.add_argument("--limit", type=int, help="dead letters per page (default 50)")
    listing.set_defaults(run=dlq_list)
    for name, run, text in [("show", dlq_show, "one dead letter with its message and last error"),
                            ("delete", dlq_delete, "delete one dead letter")]:
        one = dlq.add_parser(name, parents=[output], help=text)
        one.add_argument("queue")
        one.add_argument("seq", type=int)
        one.set_defaults(run=run)
    replay = dlq.add_parser("replay", parents=[output], help="enqueue dead letters again as new tasks")
    replay.add_argument("queue")
    replay.add_argument("seq", type=int, nargs="?")
    replay.add_argument("--all", action="store_true", help="replay every dead letter of the queue")
    replay.set_defaults(run=dlq_replay)
    purge = dlq.add_parser("purge", parents=[output], help="delete every dead letter of a queue")
    purge.add_argument("queue")
    purge.add_argument("--yes", action="store_true", help="confirm")
    purge.set_defaults(run=dlq_purge)

    task = commands.add_parser("task", help="tasks").add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, run, text in [("show", task_show, "a task with its history"), ("cancel", task_cancel, "cancel a task")]:
        sub = task.add_parser(name, parents=[output], help=text)
        sub.add_argument("task_id")
        sub.set_defaults(run=run)
    wait = task.add_parser("wait", parents=[output], help="wait for a task to finish; exit 0 only if it succeeded")
    wait.add_argument("task_id")
    wait.add_argument("--timeout", type=float, default=300, help="seconds (default %(default)s)")
    wait.set_defaults(run=task_wait, must_succeed=True)
    listing = task.add_parser("list", parents=[output], help="tasks, newest first, by state, actor and creation time")
    listing.add_argument("--state", help="only tasks in this state")
    listing.add_argument("--actor", help="only tasks of this actor")
    listing.add_argument("--since", help="only tasks created at or after this ISO 8601 time (with a zone)")
    listing.add_argument("--until", help="only tasks created before this ISO 8601 time (with a zone)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default %(default)s)")
    listing.set_defaults(run=task_list)
    return top


def _token(args) -> str | None:
    if args.token_file is not None:
        try:
            return args.token_file.read_text().strip()
        except OSError as e:
            raise CliError(f"cannot read the token file {args.token_file}: {e.strerror}", exit_code=2) from None
    return os.environ.get("NATSQ_API_TOKEN") or None


def _fail(message: str, exit_code: int) -> int:
    print(f"natsq: error: {message}", file=sys.stderr)
    return exit_code


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        answer, text = args.run(Api(args.url, _token(args), timeout=30), args)
    except ClientError as e:
        return _fail(f"{e.message} (HTTP {e.status})", 1)
    except CliError as e:
        return _fail(str(e), e.exit_code)
    except OSError as e:
        return _fail(f"cannot reach the gateway at {args.url}: {getattr(e, 'reason', e)}", 3)
    print(json.dumps(answer, indent=2) if args.json else text)
    return 1 if getattr(args, "must_succeed", False) and answer["state"] != "succeeded" else 0


if __name__ == "__main__":
    sys.exit(main())
