"""The admin API (scope ``admin``): queues, workers, dead letters, replay, purge, task lookup.

NATS calls go through the console's broker: with per-role NATS users, the user
NATSQ_CONSOLE_NATS_USER, which may read, replay, delete and purge dead letters.

The operations are plain functions of the gateway's services, so the JSON
routes here and the console's pages (``natsq.console``) share them. Every
destructive action is logged with the caller's ``sub``.
"""

from __future__ import annotations

import logging
from typing import Any

from dramatiq.errors import BrokerError, DecodeError, QueueNotFound
from flask import Blueprint, g, jsonify, request

from dramatiq_nats import DeadLetter

from .auth import require_scope
from .errors import RETRY_AFTER_S, ApiError
from .callers import is_task_id
from .gateway import public_view, services
from .heartbeats import recent_workers
from .history import TaskHistory
from .rates import rates

logger = logging.getLogger("natsq.admin")

#: Dead letters per page, by default and at most.
PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
#: Dead letters one "replay all" request replays at most (the rest stay for the next request).
#: A replay took about 15 ms in the broker alone here (docs/console.md): 200 stay
#: far inside gunicorn's 30 s request timeout.
MAX_REPLAY_BATCH = 200
#: Largest stream sequence a page may start after (JetStream sequences are unsigned 64-bit).
MAX_SEQUENCE = 2**63


def caller() -> str:
    """Who asks: the token's ``sub``, or ``anonymous`` with authentication off."""
    claims = g.get("auth_claims") or {}
    return str(claims.get("sub", "anonymous"))


def _unavailable(e: Exception) -> ApiError:
    return ApiError(503, "unavailable", f"NATS JetStream is unavailable: {e}", headers={"Retry-After": str(RETRY_AFTER_S)})


def _history(svc) -> TaskHistory:
    return TaskHistory(svc.store.client, svc.settings.namespace, svc.settings.result_ttl_s)


# -- operations ---------------------------------------------------------------------------------


def queues() -> dict[str, Any]:
    svc = services()
    try:
        stats = svc.console_broker.stats()
    except BrokerError as e:
        raise _unavailable(e) from None
    counters = svc.store.stats()
    outstanding = sum(counts.outstanding for counts in stats.values())
    return {
        "queues": [{"name": name, **vars(counts)} for name, counts in sorted(stats.items())],
        "totals": {"processed": counters["processed"], "failed": counters["failed"]},
        "rates": rates(svc.store.client, svc.settings.namespace, processed=counters["processed"],
                       failed=counters["failed"], outstanding=outstanding),
    }


def queue(name: str) -> dict[str, Any]:
    svc = services()
    try:
        counts = svc.console_broker.queue_stats(name)
    except QueueNotFound:
        raise ApiError(404, "not_found", f"no queue {name!r}") from None
    except BrokerError as e:
        raise _unavailable(e) from None
    return {"name": name, **vars(counts)}


def workers() -> dict[str, Any]:
    svc = services()
    return {"workers": recent_workers(svc.store.client, svc.settings.namespace)}


def dead_letters(queue_name: str, *, after: int = 0, limit: int = PAGE_SIZE) -> dict[str, Any]:
    letters = _dead_letter_call(lambda dl: dl.list(queue_name, after=after, limit=limit), queue_name)
    return {
        "queue": queue_name,
        "dead_letters": [dead_letter_summary(letter) for letter in letters],
        "next_after": letters[-1].seq if len(letters) == limit else None,
    }


def dead_letter(queue_name: str, seq: int) -> DeadLetter:
    letter = _dead_letter_call(lambda dl: dl.get(queue_name, seq), queue_name)
    if letter is None:
        raise _no_dead_letter(queue_name, seq)
    return letter


def replay(letter: DeadLetter) -> dict[str, Any]:
    """Replay one dead letter as a new task, linked both ways to the dead one."""
    svc = services()
    try:
        new = letter.replacement()
    except DecodeError:
        raise ApiError(422, "not_replayable", f"dead letter {letter.seq} is not a Dramatiq message") from None
    history = _history(svc)
    created = svc.store.get(new.message_id) is None  # a retried replay keeps the record of the first
    if created:
        svc.store.create(new.message_id, new.actor_name)
        history.append(new.message_id, "queued", replay_of=letter.message_id, by=caller())  # before a worker starts it
    try:
        replayed = svc.console_broker.dead_letters.replay(letter)
    except BrokerError as e:
        replayed, failure = None, _unavailable(e)
    else:
        failure = _no_dead_letter(letter.queue_name, letter.seq)
    if replayed is None:
        if created:
            svc.store.forget(new.message_id)
            history.forget(new.message_id)
        raise failure
    svc.store.link_replay(letter.message_id, new.message_id)
    if letter.message_id:
        history.append(letter.message_id, "replayed", replayed_as=new.message_id, by=caller())
    logger.warning("Dead letter replayed.", extra={
        "caller": caller(), "queue": letter.queue_name, "seq": letter.seq,
        "dead_task_id": letter.message_id, "replay_task_id": new.message_id,
    })
    return {"seq": letter.seq, "task_id": letter.message_id, "replayed_as": new.message_id}


def replay_all(queue_name: str, *, limit: int = MAX_REPLAY_BATCH) -> dict[str, Any]:
    """Replay up to ``limit`` dead letters of a queue, oldest first; undecodable ones are skipped."""
    replayed, skipped, after = [], [], 0
    while len(replayed) + len(skipped) < limit:
        page = dead_letters(queue_name, after=after, limit=min(PAGE_SIZE, limit - len(replayed) - len(skipped)))
        if not page["dead_letters"]:
            break
        for summary in page["dead_letters"]:
            after = summary["seq"]
            try:
                replayed.append(replay(dead_letter(queue_name, summary["seq"])))
            except ApiError as e:
                if e.status == 503:
                    raise
                skipped.append({"seq": summary["seq"], "reason": e.message})
    remaining = queue(queue_name)["dead_lettered"]
    return {"queue": queue_name, "replayed": replayed, "skipped": skipped, "remaining": remaining}


def delete(queue_name: str, seq: int) -> dict[str, Any]:
    letter = dead_letter(queue_name, seq)
    if not _dead_letter_call(lambda dl: dl.delete(queue_name, seq), queue_name):
        raise _no_dead_letter(queue_name, seq)
    logger.warning("Dead letter deleted.", extra={
        "caller": caller(), "queue": queue_name, "seq": seq, "dead_task_id": letter.message_id,
    })
    return {"queue": queue_name, "deleted": seq}


def purge(queue_name: str) -> dict[str, Any]:
    purged = _dead_letter_call(lambda dl: dl.purge(queue_name), queue_name)
    logger.warning("Dead letters purged.", extra={"caller": caller(), "queue": queue_name, "purged": purged})
    return {"queue": queue_name, "purged": purged}


def task(task_id: str) -> dict[str, Any]:
    """A task's record, its replay links and its history."""
    svc = services()
    record = svc.store.get(task_id) if is_task_id(task_id) else None
    if record is None:
        raise ApiError(404, "not_found", f"no task {task_id!r} (unknown, or its record expired)")
    return {
        **public_view(record),
        **svc.store.replay_links(task_id),
        "history": _history(svc).read(task_id),
    }


def dead_letter_summary(letter: DeadLetter) -> dict[str, Any]:
    message = letter.message
    return {
        "seq": letter.seq,
        "queue": letter.queue_name,
        "task_id": letter.message_id,
        "actor": message.actor_name if message else None,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "deliveries": letter.deliveries,
        "dead_lettered_at": letter.dead_lettered_at.isoformat(timespec="milliseconds") if letter.dead_lettered_at else None,
    }


def dead_letter_details(letter: DeadLetter) -> dict[str, Any]:
    message = letter.message
    details = {**dead_letter_summary(letter), "traceback": letter.traceback}
    if message is not None:
        options = {k: v for k, v in message.options.items() if k != "traceback"}  # shown on its own
        details["message"] = {"args": list(message.args), "kwargs": message.kwargs, "options": options}
    else:
        details["body"] = letter.body.decode("utf-8", errors="replace")
    return details


def _no_dead_letter(queue_name: str, seq: int) -> ApiError:
    return ApiError(404, "not_found", f"no dead letter {seq} in queue {queue_name!r} (replayed or deleted?)")


def _dead_letter_call(operation, queue_name: str):
    try:
        return operation(services().console_broker.dead_letters)
    except QueueNotFound:
        raise ApiError(404, "not_found", f"no queue {queue_name!r}") from None
    except BrokerError as e:
        raise _unavailable(e) from None


def _int_arg(name: str, default: int, maximum: int) -> int:
    value = request.args.get(name)
    if value is None:
        return default
    if not value.isdigit() or not 0 <= int(value) <= maximum:
        raise ApiError(400, "bad_request", f"{name} must be an integer from 0 to {maximum}", field=name)
    return int(value)


# -- JSON routes ----------------------------------------------------------------------------------

admin_api = Blueprint("admin", __name__, url_prefix="/admin")


@admin_api.get("/queues")
@require_scope("admin")
def get_queues():
    return jsonify(queues())


@admin_api.get("/queues/<queue_name>")
@require_scope("admin")
def get_queue(queue_name: str):
    return jsonify(queue(queue_name))


@admin_api.get("/workers")
@require_scope("admin")
def get_workers():
    return jsonify(workers())


@admin_api.get("/queues/<queue_name>/dead-letters")
@require_scope("admin")
def list_dead_letters(queue_name: str):
    after = _int_arg("after", 0, MAX_SEQUENCE)
    limit = _int_arg("limit", PAGE_SIZE, MAX_PAGE_SIZE)
    return jsonify(dead_letters(queue_name, after=after, limit=max(limit, 1)))


@admin_api.get("/queues/<queue_name>/dead-letters/<int:seq>")
@require_scope("admin")
def get_dead_letter(queue_name: str, seq: int):
    return jsonify(dead_letter_details(dead_letter(queue_name, seq)))


@admin_api.post("/queues/<queue_name>/dead-letters/<int:seq>/replay")
@require_scope("admin")
def replay_dead_letter(queue_name: str, seq: int):
    return jsonify(replay(dead_letter(queue_name, seq)))


@admin_api.post("/queues/<queue_name>/dead-letters/replay")
@require_scope("admin")
def replay_dead_letters(queue_name: str):
    return jsonify(replay_all(queue_name, limit=max(_int_arg("limit", MAX_REPLAY_BATCH, MAX_REPLAY_BATCH), 1)))


@admin_api.delete("/queues/<queue_name>/dead-letters/<int:seq>")
@require_scope("admin")
def delete_dead_letter(queue_name: str, seq: int):
    return jsonify(delete(queue_name, seq))


@admin_api.delete("/queues/<queue_name>/dead-letters")
@require_scope("admin")
def purge_dead_letters(queue_name: str):
    return jsonify(purge(queue_name))


@admin_api.get("/tasks/<task_id>")
@require_scope("admin")
def get_task(task_id: str):
    return jsonify(task(task_id))


# -- OpenAPI ----------------------------------------------------------------------------------------


def openapi_paths() -> dict[str, Any]:
    """The admin routes for the gateway's OpenAPI document."""

    def ok(description: str, schema: dict | None = None) -> dict:
        return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}

    def error(description: str) -> dict:
        return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

    queue = {"name": "queue_name", "in": "path", "required": True, "schema": {"type": "string"}}
    seq = {"name": "seq", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}
    not_found = error("No such queue, dead letter or task.")
    unavailable = error("NATS or Valkey is unavailable.")

    def operation(summary: str, operation_id: str, parameters: list, response: dict, **errors: dict) -> dict:
        return {"summary": summary, "operationId": operation_id, "tags": ["admin"], "parameters": parameters,
                "responses": {"200": response, "404": not_found, "503": unavailable, **errors}}

    page = [{"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQUENCE}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_PAGE_SIZE}}]
    bad = {"400": error("A malformed query parameter.")}
    return {
        "/admin/queues": {"get": operation("Queues: counts and rates", "adminQueues", [], ok("Every queue."))},
        "/admin/queues/{queue_name}": {"get": operation("One queue's counts", "adminQueue", [queue], ok("The queue."))},
        "/admin/workers": {"get": operation("Workers seen in the last hour", "adminWorkers", [], ok("The workers."))},
        "/admin/queues/{queue_name}/dead-letters": {
            "get": operation("A page of a queue's dead letters", "adminDeadLetters", [queue, *page],
                             ok("Dead letters, oldest first."), **bad),
            "delete": operation("Purge a queue's dead letters", "adminPurgeDeadLetters", [queue], ok("How many were purged.")),
        },
        "/admin/queues/{queue_name}/dead-letters/{seq}": {
            "get": operation("One dead letter", "adminDeadLetter", [queue, seq], ok("The dead letter with its message.")),
            "delete": operation("Delete one dead letter", "adminDeleteDeadLetter", [queue, seq], ok("Deleted.")),
        },
        "/admin/queues/{queue_name}/dead-letters/{seq}/replay": {
            "post": operation("Replay one dead letter as a new task", "adminReplayDeadLetter", [queue, seq],
                              ok("The new task's id."), **{"422": error("The dead letter is not a Dramatiq message.")}),
        },
        "/admin/queues/{queue_name}/dead-letters/replay": {
            "post": operation("Replay a queue's dead letters as new tasks", "adminReplayDeadLetters",
                              [queue, {"name": "limit", "in": "query",
                                       "schema": {"type": "integer", "minimum": 0, "maximum": MAX_REPLAY_BATCH}}],
                              ok("The new tasks' ids, what was skipped, what remains."), **bad),
        },
        "/admin/tasks/{task_id}": {
            "get": operation("A task with its replay links and history", "adminTask",
                             [{"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}], ok("The task.")),
        },
    }
