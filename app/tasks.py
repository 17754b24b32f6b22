"""The tasks producers may submit: name, payload schema, queue, retry policy, code.

The gateway validates payloads against these schemas; the worker turns each
task into a Dramatiq actor. Task functions receive the validated payload as
keyword arguments and return a JSON-serialisable result.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from dramatiq.middleware import CurrentMessage
from pydantic import BaseModel, ConfigDict, Field


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CountPrimesPayload(Payload):
    limit: int = Field(ge=2, le=20_000_000, description="Count the primes below this number.")


class WaitPayload(Payload):
    seconds: float = Field(ge=0, le=3_600, description="How long the task waits, as if on I/O.")


class FlakyPayload(Payload):
    failures: int = Field(ge=0, le=50, description="Attempts that fail before one succeeds.")
    message: str = Field("ok", max_length=1_000, description="Returned once an attempt succeeds.")


class TransientError(Exception):
    """A failure worth retrying."""


def count_primes(limit: int) -> dict[str, int]:
    """CPU-bound: a sieve of Eratosthenes."""
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\x00\x00"
    for n in range(2, math.isqrt(limit - 1) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, limit, n)))
    return {"limit": limit, "primes": sum(sieve)}


def wait(seconds: float) -> dict[str, float]:
    """I/O-bound: waits, like a call to a slow service (long tasks, graceful shutdown)."""
    time.sleep(seconds)
    return {"waited_seconds": seconds}


def flaky(failures: int, message: str = "ok") -> dict[str, Any]:
    """Fails its first ``failures`` attempts (retries, then dead letters)."""
    attempt = CurrentMessage.get_current_message().options.get("retries", 0) + 1
    if attempt <= failures:
        raise TransientError(f"attempt {attempt} of {failures + 1} fails on purpose")
    return {"message": message, "attempts": attempt}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    payload: type[Payload]
    fn: Callable[..., Any]
    queue: str = "default"
    max_retries: int = 3
    time_limit_ms: int = 3_600_000
    #: Whether callers may read the text of the task's exceptions; otherwise they
    #: see only the exception's type (the text may hold internal details).
    public_errors: bool = False

    def public_error(self, exception: BaseException) -> str:
        """The error callers read: the exception's type, with its text only if the task opts in."""
        if self.public_errors:
            return f"{type(exception).__name__}: {exception}"
        return type(exception).__name__

    @property
    def description(self) -> str:
        return (self.fn.__doc__ or "").strip()


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("count_primes", CountPrimesPayload, count_primes, time_limit_ms=300_000),
        TaskSpec("wait", WaitPayload, wait, time_limit_ms=3_700_000),
        TaskSpec("flaky", FlakyPayload, flaky, max_retries=3),
    )
}

QUEUES: frozenset[str] = frozenset(spec.queue for spec in TASKS.values())
