"""The Python client of the gateway: submit tasks, wait for them, cancel them, watch their progress.

    from natsq.client import Client

    client = Client("http://127.0.0.1:8000", token=None)
    handle = client.submit("count_primes", {"limit": 100_000})
    handle.wait(timeout=30)        # {"limit": 100000, "primes": 9592}, or raises

It uses only the standard library (``urllib``): producers get no dependency
beyond natsq itself, and a request at a time is all a client needs.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterator

#: The longest long poll one request asks for (the gateway's bound).
LONG_POLL_S = 20.0


class ClientError(Exception):
    """The gateway refused a request; ``status``, ``code`` and ``message`` say why."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class TaskError(Exception):
    """A task did not produce a result; ``task`` is its record."""

    def __init__(self, task: dict[str, Any], message: str) -> None:
        super().__init__(message)
        self.task = task


class TaskFailed(TaskError):
    """The task failed for good (its error is in ``task["error"]``)."""


class TaskDeadLettered(TaskFailed):
    """The task failed for good and its message went to the dead-letter stream."""


class TaskCancelled(TaskError):
    """The task was cancelled."""


class WaitTimeout(TaskError, TimeoutError):
    """The task had not ended when ``wait`` gave up; it may still end later."""


@dataclass
class TaskHandle:
    """A submitted task. ``replayed``: an Idempotency-Key returned an earlier task."""

    client: Client
    id: str
    replayed: bool = False

    def state(self) -> dict[str, Any]:
        """The task's record: ``state``, ``attempts``, ``progress``, ``result``, ``error``, times."""
        return self.client.get_task(self.id)

    def progress(self) -> dict[str, Any] | None:
        """The latest ``{"fraction", "meta", "at"}`` the task reported, or None."""
        return self.state()["progress"]

    def wait(self, timeout: float = 60.0) -> Any:
        """The task's result once it succeeded.

        Raises:
          TaskDeadLettered, TaskFailed: It failed for good.
          TaskCancelled: It was cancelled.
          WaitTimeout: It had not ended after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = max(deadline - time.monotonic(), 0.0)
            task = self.client.get_task(self.id, wait=min(left, LONG_POLL_S))
            state = task["state"]
            if state == "succeeded":
                return task["result"]
            if state == "dead-lettered":
                raise TaskDeadLettered(task, f"task {self.id} failed and was dead-lettered: {task['error']}")
            if state == "cancelled":
                raise TaskCancelled(task, f"task {self.id} was cancelled")
            if left <= 0:
                raise WaitTimeout(task, f"task {self.id} is still {state} after {timeout} s")

    def cancel(self) -> str:
        """Cancel the task: ``"cancelled"`` if it had not started, ``"running"`` if it was asked to stop.

        Raises:
          ClientError: 409 if it had already ended, 404 if unknown.
        """
        return self.client._request("DELETE", f"/task/{_quote(self.id)}")["state"]


class Client:
    """The gateway at ``url``, with a bearer ``token`` when authentication is on.

    Raises ``ClientError`` for refusals (4xx, 5xx) and ``OSError`` (e.g.
    ``urllib.error.URLError``) when the gateway cannot be reached.
    """

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def submit(
        self, actor: str, payload: dict[str, Any] | None = None, *, delay_ms: int | None = None,
        idempotency_key: str | None = None,
    ) -> TaskHandle:
        """Submit a task; returns once JetStream has stored it."""
        body: dict[str, Any] = {"actor": actor, "payload": payload or {}}
        if delay_ms is not None:
            body["delay_ms"] = delay_ms
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        accepted, response_headers = self._exchange("POST", "/task", body, headers)
        return TaskHandle(self, accepted["task_id"], response_headers.get("Idempotent-Replayed") == "true")

    def task(self, task_id: str) -> TaskHandle:
        """A handle on a task submitted earlier."""
        return TaskHandle(self, task_id)

    def get_task(self, task_id: str, wait: float = 0.0) -> dict[str, Any]:
        """The task's record; with ``wait``, once it ended or after that many seconds."""
        query = f"?wait={wait:.3f}" if wait > 0 else ""
        return self._request("GET", f"/task/{_quote(task_id)}{query}", timeout=self.timeout + wait)

    def tasks(self, *, state: str | None = None, actor: str | None = None, created_after: str | None = None,
              created_before: str | None = None, page_size: int = 50) -> Iterator[dict[str, Any]]:
        """Every matching task, newest first, fetched page by page (times in ISO 8601 with a zone)."""
        query = {k: v for k, v in {"state": state, "actor": actor, "created_after": created_after,
                                   "created_before": created_before, "limit": page_size}.items() if v is not None}
        while True:
            page = self._request("GET", "/tasks?" + urllib.parse.urlencode(query))
            yield from page["tasks"]
            if page["next_cursor"] is None:
                return
            query["cursor"] = page["next_cursor"]

    def periodic(self) -> list[dict[str, Any]]:
        """The periodic tasks and their schedules."""
        return self._request("GET", "/periodic")["periodic"]

    def _request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        return self._exchange(method, path, body, {}, timeout)[0]

    def _exchange(self, method: str, path: str, body: Any, headers: dict[str, str],
                  timeout: float | None = None) -> tuple[Any, dict[str, str]]:
        request = urllib.request.Request(self.url + path, method=method, headers={"Accept": "application/json", **headers})
        if body is not None:
            request.data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as e:
            raise _client_error(e) from None


def _client_error(response: urllib.error.HTTPError) -> ClientError:
    try:
        error = json.loads(response.read())["error"]
        return ClientError(response.code, error["code"], error["message"], error.get("field"))
    except (ValueError, KeyError, TypeError):
        return ClientError(response.code, "http_error", response.reason or "no JSON error in the response")


def _quote(task_id: str) -> str:
    return urllib.parse.quote(task_id, safe="")
