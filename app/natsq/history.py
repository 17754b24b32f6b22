"""Each task's history: what happened to it and when (attempts, errors, dead letter, replays).

The task record (``natsq.store``) holds the latest state only; the history is a
capped Valkey list beside it, with the same TTL. Writing it is best effort: a
history entry lost to a Valkey outage never holds up a task.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from typing import Any

import valkey
from dramatiq.middleware import Middleware
from valkey.exceptions import ValkeyError

from .store import now_iso

logger = logging.getLogger("natsq.history")

#: Entries kept per task (the latest ones).
MAX_ENTRIES = 100


class TaskHistory:
    def __init__(self, client: valkey.Valkey, namespace: str, ttl_s: int) -> None:
        self.client = client
        self.namespace = namespace
        self.ttl_s = ttl_s

    def _key(self, task_id: str) -> str:
        return f"{self.namespace}:history:{task_id}"

    def append(self, task_id: str, event: str, **detail: Any) -> None:
        entry = json.dumps({"at": now_iso(), "event": event, **detail})
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(self._key(task_id), entry)
        pipe.ltrim(self._key(task_id), -MAX_ENTRIES, -1)
        pipe.expire(self._key(task_id), self.ttl_s)
        pipe.execute()

    def forget(self, task_id: str) -> None:
        self.client.delete(self._key(task_id))

    def read(self, task_id: str) -> list[dict[str, Any]]:
        return [json.loads(entry) for entry in self.client.lrange(self._key(task_id), 0, -1)]


class HistoryRecorder(Middleware):
    """Appends each attempt and its outcome to the task's history."""

    def __init__(self, history: TaskHistory) -> None:
        self.history = history
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def _append(self, task_id: str, event: str, **detail: Any) -> None:
        try:
            self.history.append(task_id, event, **detail)
        except ValkeyError as e:
            logger.warning("Could not record the task's history: %s", e, extra={"event": event})

    def after_worker_boot(self, broker, worker):
        self.worker = f"{socket.gethostname()}:{os.getpid()}"  # each forked process is a worker of its own

    def before_process_message(self, broker, message):
        attempt = message.options.get("retries", 0) + 1
        self._append(message.message_id, "started", attempt=attempt, worker=self.worker)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None:
            self._append(message.message_id, "succeeded")
            return
        error = f"{type(exception).__name__}: {exception}"
        self._append(message.message_id, "failed" if message.failed else "retrying", error=error)

    def after_skip_message(self, broker, message):
        self._append(message.message_id, "skipped")  # cancelled before it started, or older than its max_age

    def after_nack(self, broker, message):
        self._append(message.message_id, "dead-lettered")
