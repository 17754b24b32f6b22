"""Dramatiq's Results middleware, with the task records in Valkey as its backend.

A task's result belongs in its record (``<ns>:task:<id>``, read by ``GET /task/<id>``),
written in the same update that marks it succeeded. Plugging that store in as
the Results backend, rather than returning values Dramatiq then discards, is
also what keeps the worker from warning on every task that results are lost.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from dramatiq.results import ResultBackend, ResultMissing, ResultTimeout

from .store import TaskStore

#: Records an update with retries while Valkey is unavailable (TaskState.record).
Recorder = Callable[..., None]


class TaskStoreResults(ResultBackend):
    """Stores a succeeded task's result in its record; failures are recorded by TaskState."""

    def __init__(self, store: TaskStore, record: Recorder) -> None:
        super().__init__()
        self.store = store
        self.record = record

    def store_result(self, message, result: Any, ttl: int) -> None:
        # The record's TTL is NATSQ_RESULT_TTL_S, the same as every other field of it.
        self.record(self.store.mark_succeeded, message.message_id, result)

    def store_exception(self, message, exception: Exception, ttl: int) -> None:
        """Nothing to add: TaskState records the error and the dead-lettered state."""

    def get_result(self, message, *, block: bool = False, timeout: int | None = None) -> Any:
        """The result of a succeeded task, as ``message.get_result(backend=...)`` expects."""
        deadline = time.monotonic() + (timeout or 10_000) / 1000
        while True:
            task = self.store.get(message.message_id)
            if task and task["state"] == "succeeded":
                return task["result"]
            if not block:
                raise ResultMissing(message)
            if time.monotonic() > deadline:
                raise ResultTimeout(message)
            time.sleep(0.05)
