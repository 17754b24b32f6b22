"""Helpers for code running inside a task: report progress, notice a cancellation.

    from natsq.task_context import progress, raise_if_cancelled

    for i, item in enumerate(items):
        raise_if_cancelled()          # stops here once DELETE /task/<id> was called
        handle(item)
        progress((i + 1) / len(items), {"done": i + 1})

Outside a worker (a task function called directly in a unit test) they do
nothing: ``progress`` records nothing and no cancellation is ever requested.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from dramatiq.middleware import CurrentMessage, SkipMessage
from valkey.exceptions import ValkeyError

if TYPE_CHECKING:
    from .store import TaskStore

logger = logging.getLogger("natsq.task")

_store: TaskStore | None = None


class TaskCancelled(SkipMessage):
    """Raised by ``raise_if_cancelled``: the task stops, is acknowledged, and ends ``cancelled``."""


def bind(store: TaskStore) -> None:
    """Called once by the worker: where progress and cancel flags live."""
    global _store
    _store = store


def current_task_id() -> str | None:
    """The id of the task this thread is running, or None outside a task."""
    message = CurrentMessage.get_current_message()
    return message.message_id if message is not None else None


def progress(fraction: float, meta: dict[str, Any] | None = None) -> None:
    """Record how far the task got (0.0 to 1.0) and anything JSON worth showing.

    The latest value appears as ``progress`` in ``GET /task/<id>``. Best effort:
    a Valkey outage is logged and the task carries on.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"progress fraction must be between 0 and 1, not {fraction}")
    task_id = current_task_id()
    if _store is None or task_id is None:
        return
    try:
        _store.set_progress(task_id, fraction, meta)
    except ValkeyError as e:
        logger.warning("Could not record progress: %s", e)


def cancel_requested() -> bool:
    """Whether someone asked to cancel this task (``DELETE /task/<id>``)."""
    task_id = current_task_id()
    if _store is None or task_id is None:
        return False
    try:
        return _store.cancel_requested(task_id)
    except ValkeyError as e:
        logger.warning("Could not read the cancel flag: %s", e)
        return False


def raise_if_cancelled() -> None:
    """Stop the task here if it was cancelled: it is not retried and ends ``cancelled``."""
    if cancel_requested():
        raise TaskCancelled("cancelled on request")
