"""The example tasks, one task module like any user's (``NATSQ_TASK_MODULES=natsq.tasks``, the default)."""

from __future__ import annotations

import math
import time
from typing import Any

from dramatiq.middleware import CurrentMessage
from pydantic import BaseModel, ConfigDict, Field

from .registry import task


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


@task(payload=CountPrimesPayload, time_limit_ms=300_000)
def count_primes(limit: int) -> dict[str, int]:
    """CPU-bound: a sieve of Eratosthenes."""
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\x00\x00"
    for n in range(2, math.isqrt(limit - 1) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, limit, n)))
    return {"limit": limit, "primes": sum(sieve)}


@task(payload=WaitPayload, time_limit_ms=3_700_000)
def wait(seconds: float) -> dict[str, float]:
    """I/O-bound: waits, like a call to a slow service (long tasks, graceful shutdown)."""
    time.sleep(seconds)
    return {"waited_seconds": seconds}


@task(payload=FlakyPayload, max_retries=3)
def flaky(failures: int, message: str = "ok") -> dict[str, Any]:
    """Fails its first ``failures`` attempts (retries, then dead letters)."""
    attempt = CurrentMessage.get_current_message().options.get("retries", 0) + 1
    if attempt <= failures:
        raise TransientError(f"attempt {attempt} of {failures + 1} fails on purpose")
    return {"message": message, "attempts": attempt}
