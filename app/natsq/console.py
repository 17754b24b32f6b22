"""The operator console at ``/ui``: server-rendered pages over the admin operations.

With authentication on, an operator pastes a token with the ``admin`` scope
once; it is kept in an HttpOnly, SameSite=Strict cookie scoped to ``/ui`` (never
in a URL) and checked on every request like a bearer header. Actions that
change anything are POST forms behind a confirmation page; a POST from another
origin is refused.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from pydantic import ValidationError

from . import admin
from .auth import verify_token
from .errors import ApiError
from .gateway import _unprocessable, services
from .store import STATES
from .task_api import TaskQuery

console = Blueprint("console", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")

#: The cookie that holds the operator's token.
COOKIE = "natsq_console"
_OPEN_ENDPOINTS = {"console.login", "console.static"}
_SEARCH_FIELDS = ("state", "actor", "created_after", "created_before", "cursor")
_HAS_ZONE = re.compile(r"(Z|[+-]\d\d:?\d\d)$")


@console.before_request
def authenticate():
    verifier = services().verifier
    g.auth_enabled = verifier is not None
    if request.method == "POST" and not _same_origin():
        raise ApiError(403, "forbidden", "a console form must be sent from the console itself")
    if verifier is None or request.endpoint in _OPEN_ENDPOINTS:
        return None
    token = request.cookies.get(COOKIE)
    if not token:
        return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
    try:
        g.auth_claims = verify_token(verifier, token, "admin")
    except ApiError as e:
        response = Response(render_template("console/login.html", error=e.message, next=request.full_path), e.status)
        response.delete_cookie(COOKIE, path=console.url_prefix)
        return response
    return None


def _same_origin() -> bool:
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    return origin is None or urlsplit(origin).netloc == request.host


@console.errorhandler(ApiError)
def error_page(error: ApiError):
    return render_template("console/error.html", error=error), error.status, error.headers


@console.route("/login", methods=["GET", "POST"])
def login():
    target = _local_path(request.values.get("next"))
    verifier = services().verifier
    if verifier is None:
        return redirect(target)
    if request.method == "GET":
        return render_template("console/login.html", next=target)
    token = request.form.get("token", "").strip()
    try:
        claims = verify_token(verifier, token, "admin")
    except ApiError as e:
        return render_template("console/login.html", error=e.message, next=target), e.status
    response = redirect(target)
    response.set_cookie(
        COOKIE, token, max_age=max(int(claims["exp"] - time.time()), 0), path=console.url_prefix,
        httponly=True, samesite="Strict", secure=request.is_secure,
    )
    return response


@console.post("/logout")
def logout():
    response = redirect(url_for("console.login"))
    response.delete_cookie(COOKIE, path=console.url_prefix)
    return response


def _local_path(target: str | None) -> str:
    """Where to go after logging in: a console page, never another site."""
    if target and target.startswith(console.url_prefix + "/") and not target.startswith("//"):
        return target
    return url_for("console.overview")


@console.get("/")
def overview():
    return render_template("console/overview.html", overview=admin.queues(), workers=admin.workers()["workers"])


@console.get("/queues/<queue_name>")
def queue(queue_name: str):
    after = request.args.get("after", "0")
    page = admin.dead_letters(queue_name, after=int(after) if after.isdigit() else 0)
    return render_template("console/queue.html", queue=admin.queue(queue_name), page=page, after=after)


@console.get("/queues/<queue_name>/dead-letters/<int:seq>")
def dead_letter(queue_name: str, seq: int):
    letter = admin.dead_letter(queue_name, seq)
    return render_template("console/dead_letter.html", letter=admin.dead_letter_details(letter))


@console.route("/queues/<queue_name>/dead-letters/<int:seq>/replay", methods=["GET", "POST"])
def replay(queue_name: str, seq: int):
    letter = admin.dead_letter(queue_name, seq)
    if request.method == "GET":
        return _confirm(
            f"Replay dead letter {seq}?",
            f"Task {letter.message_id} ({_actor(letter)}) is enqueued again as a new task on queue {queue_name!r}; "
            "the dead letter is removed.",
            "Replay",
        )
    replayed = admin.replay(letter)
    return redirect(url_for("console.task", task_id=replayed["replayed_as"]), 303)


@console.route("/queues/<queue_name>/dead-letters/<int:seq>/delete", methods=["GET", "POST"])
def delete(queue_name: str, seq: int):
    letter = admin.dead_letter(queue_name, seq)
    if request.method == "GET":
        return _confirm(
            f"Delete dead letter {seq}?",
            f"Task {letter.message_id} ({_actor(letter)}) will not run again. This cannot be undone.",
            "Delete",
            danger=True,
        )
    admin.delete(queue_name, seq)
    return redirect(url_for("console.queue", queue_name=queue_name), 303)


@console.route("/queues/<queue_name>/dead-letters/replay", methods=["GET", "POST"])
def replay_all(queue_name: str):
    count = admin.queue(queue_name)["dead_lettered"]
    if request.method == "GET":
        return _confirm(
            f"Replay all {count} dead letters of {queue_name!r}?",
            f"Each is enqueued again as a new task (at most {admin.MAX_REPLAY_BATCH} per confirmation); "
            "the dead letters are removed.",
            "Replay all",
        )
    return render_template("console/replayed.html", result=admin.replay_all(queue_name))


@console.route("/queues/<queue_name>/dead-letters/purge", methods=["GET", "POST"])
def purge(queue_name: str):
    count = admin.queue(queue_name)["dead_lettered"]
    if request.method == "GET":
        return _confirm(
            f"Purge all {count} dead letters of {queue_name!r}?",
            "Their tasks will not run again. This cannot be undone.",
            "Purge",
            danger=True,
        )
    admin.purge(queue_name)
    return redirect(url_for("console.queue", queue_name=queue_name), 303)


@console.get("/tasks")
def find_task():
    """Look a task up by id, or search them by state, actor and creation time (newest first)."""
    task_id = request.args.get("task_id", "").strip()
    if task_id:
        return redirect(url_for("console.task", task_id=task_id))
    filters = {name: value for name in _SEARCH_FIELDS if (value := request.args.get(name, "").strip())}
    query = {**filters}
    for name in ("created_after", "created_before"):
        if name in query and not _HAS_ZONE.search(query[name]):
            query[name] += "Z"  # the form's times are UTC
    try:
        tasks, next_cursor = services().store.list_tasks(**TaskQuery.model_validate(query).model_dump())
    except ValidationError as e:
        raise _unprocessable(e) from None
    except ValueError as e:
        raise ApiError(422, "invalid_request", str(e), field="cursor") from None
    filters.pop("cursor", None)
    return render_template("console/tasks.html", tasks=tasks, next_cursor=next_cursor, filters=filters, states=STATES)


@console.get("/tasks/<task_id>")
def task(task_id: str):
    return render_template("console/task.html", task=admin.task(task_id))


@console.get("/workers")
def workers():
    return render_template("console/workers.html", workers=admin.workers()["workers"])


@console.app_template_filter("when")
def when(iso: str | None) -> str:
    """An ISO 8601 UTC timestamp as ``2026-12-03 03:13:14`` (pages say the zone once, in headings)."""
    return iso[:19].replace("T", " ") if iso else "–"


def _confirm(title: str, description: str, action: str, *, danger: bool = False) -> str:
    back = request.referrer if request.referrer and _same_origin() else url_for("console.overview")
    return render_template("console/confirm.html", title=title, description=description, action=action,
                           danger=danger, back=back)


def _actor(letter) -> str:
    return letter.message.actor_name if letter.message else "undecodable"
