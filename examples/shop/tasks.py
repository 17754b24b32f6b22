"""The shop's background tasks: one mail, one long job that reports progress and can be cancelled, one periodic sweep."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from natsq.registry import task
from natsq.task_context import progress, raise_if_cancelled


class Receipt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    email: str = Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")


class Thumbnails(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: int = Field(ge=1, le=10_000, description="How many images to resize.")
    seconds_each: float = Field(0.1, ge=0, le=60, description="Time one image takes.")


class Sweep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    older_than_minutes: int = Field(60, ge=1)


@task(payload=Receipt, queue="mail", max_retries=5)
def send_receipt(order_id: str, email: str) -> dict:
    """Mails the receipt of an order (here: pretends to)."""
    return {"order_id": order_id, "sent_to": email}


@task(payload=Thumbnails, time_limit_ms=600_000)
def make_thumbnails(images: int, seconds_each: float) -> dict:
    """Resizes images one by one, reporting progress; stops between images when cancelled."""
    for done in range(images):
        raise_if_cancelled()
        time.sleep(seconds_each)  # the resize
        progress((done + 1) / images, {"done": done + 1, "of": images})
    return {"thumbnails": images}


@task(payload=Sweep, public=False, schedule="@every 10m")
def sweep_abandoned_carts(older_than_minutes: int) -> dict:
    """Empties carts left alone too long; runs every 10 minutes, never submitted by producers."""
    return {"swept_before": time.time() - older_than_minutes * 60}
