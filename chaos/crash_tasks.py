"""A poison task that takes its worker process down, for the ``poison-crash`` chaos scenario.

Loaded only by the harness (``NATSQ_TASK_MODULES=natsq.tasks,chaos.crash_tasks``),
never by a deployed worker: submitting it kills a worker process.
"""

from __future__ import annotations

import ctypes
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from natsq.registry import task


class CrashPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    how: Literal["segfault", "exit"] = Field(
        "segfault", description="segfault: a null pointer read, as a broken C extension does; exit: os._exit(70)."
    )


@task(payload=CrashPayload)
def crash(how: str = "segfault") -> None:
    """Kills the worker process that runs it, before any middleware can nack or retry it."""
    if how == "exit":
        os._exit(70)
    ctypes.string_at(0)
