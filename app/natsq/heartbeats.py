"""Worker heartbeats in Valkey: who is working, on which queues, on which tasks.

Each worker process writes one small JSON document every
``NATSQ_HEARTBEAT_INTERVAL_S`` seconds (one pipelined SET with a TTL and one
ZADD), so a process that dies vanishes after two missed beats, and the
sorted set remembers when it was last seen.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any

import valkey
from dramatiq.middleware import Middleware
from valkey.exceptions import ValkeyError

from .store import now_iso

logger = logging.getLogger("natsq.heartbeats")

#: Gone workers are listed for this long after their last heartbeat.
REMEMBER_S = 3600


def _workers_key(namespace: str) -> str:
    return f"{namespace}:workers"


def _worker_key(namespace: str, worker_id: str) -> str:
    return f"{namespace}:worker:{worker_id}"


class Heartbeat(Middleware):
    """Writes this worker process's heartbeat: host, pid, queues, threads, current tasks."""

    def __init__(self, client: valkey.Valkey, namespace: str, interval_s: float) -> None:
        self.client = client
        self.namespace = namespace
        self.interval_s = interval_s
        # Missing two beats makes a worker gone: its document expires.
        self.ttl_s = math.ceil(2 * interval_s + 1)
        self._running: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker_id = ""
        self._document: dict[str, Any] = {}

    def after_worker_boot(self, broker, worker):
        host, pid = socket.gethostname(), os.getpid()
        self._worker_id = f"{host}:{pid}"
        self._document = {
            "id": self._worker_id,
            "host": host,
            "pid": pid,
            "queues": sorted(worker.consumer_whitelist or broker.get_declared_queues()),
            "threads": worker.worker_threads,
            "started_at": now_iso(),
        }
        self._stop.clear()
        threading.Thread(target=self._beat, name="natsq-heartbeat", daemon=True).start()

    def before_worker_shutdown(self, broker, worker):
        self._stop.set()
        try:
            # Off the list at once; its document expires with its TTL (workers may not DEL).
            self.client.zrem(_workers_key(self.namespace), self._worker_id)
        except ValkeyError as e:
            logger.warning("Could not remove the heartbeat: %s", e)

    def before_process_message(self, broker, message):
        with self._lock:
            self._running[message.message_id] = {
                "task_id": message.message_id,
                "actor": message.actor_name,
                "queue": message.queue_name,
                "started_at": now_iso(),
            }

    def after_process_message(self, broker, message, *, result=None, exception=None):
        with self._lock:
            self._running.pop(message.message_id, None)

    after_skip_message = after_process_message

    def _beat(self) -> None:
        while True:
            try:
                self.send()
            except ValkeyError as e:
                logger.warning("Could not write the heartbeat: %s", e)
            if self._stop.wait(self.interval_s):
                return

    def send(self) -> None:
        with self._lock:
            current = list(self._running.values())
        document = {**self._document, "current_tasks": current, "last_heartbeat": now_iso()}
        pipe = self.client.pipeline(transaction=False)
        pipe.set(_worker_key(self.namespace, self._worker_id), json.dumps(document), ex=self.ttl_s)
        pipe.zadd(_workers_key(self.namespace), {self._worker_id: time.time()})
        pipe.execute()


def recent_workers(client: valkey.Valkey, namespace: str) -> list[dict[str, Any]]:
    """Workers seen within the last hour, alive ones first; ``alive`` is False once a heartbeat expired."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.zremrangebyscore(_workers_key(namespace), "-inf", now - REMEMBER_S)
    pipe.zrevrange(_workers_key(namespace), 0, -1, withscores=True)
    _, seen = pipe.execute()
    if not seen:
        return []
    ids = [worker_id.decode() for worker_id, _ in seen]
    documents = client.mget([_worker_key(namespace, worker_id) for worker_id in ids])
    workers = []
    for worker_id, (_, last_seen), document in zip(ids, seen, documents):
        if document is not None:
            workers.append({**json.loads(document), "alive": True})
        else:
            host, _, pid = worker_id.rpartition(":")
            workers.append({
                "id": worker_id, "host": host, "pid": int(pid), "queues": [], "threads": None, "current_tasks": [],
                "started_at": None, "alive": False,
                "last_heartbeat": datetime.fromtimestamp(last_seen, timezone.utc).isoformat(timespec="milliseconds"),
            })
    return sorted(workers, key=lambda w: not w["alive"])

