"""Enqueue, processing and failure rates, from counters the system already keeps.

Workers count finished attempts in Valkey (``processed``, ``failed``) and
JetStream counts each queue's backlog. Every read of the admin API keeps a
sample of those (at most one per ``SAMPLE_EVERY_S``) in Valkey, shared by all
gateway pods; a rate is the change since a sample about ``WINDOW_S`` old.
Enqueues are derived: each message enqueued (a new task or a retry) either
still waits in a backlog or has finished an attempt.
"""

from __future__ import annotations

import json
import time
from typing import Any

import valkey

#: Seconds between two kept samples.
SAMPLE_EVERY_S = 5
#: Rates are measured over about this many seconds.
WINDOW_S = 60
_KEPT = 2 * WINDOW_S // SAMPLE_EVERY_S


def rates(client: valkey.Valkey, namespace: str, *, processed: int, failed: int, outstanding: int) -> dict[str, Any]:
    """Per-second rates since a sample about a minute old (None until there is an earlier sample)."""
    key = f"{namespace}:admin:rate-samples"
    now = time.time()
    current = {"t": now, "processed": processed, "failed": failed, "outstanding": outstanding}
    samples = [json.loads(s) for s in client.lrange(key, 0, -1)]  # newest first
    if not samples or now - samples[0]["t"] >= SAMPLE_EVERY_S:
        pipe = client.pipeline(transaction=False)
        pipe.lpush(key, json.dumps(current))
        pipe.ltrim(key, 0, _KEPT - 1)
        pipe.expire(key, 4 * WINDOW_S)
        pipe.execute()
    older = [s for s in samples if now - s["t"] >= 1]
    baseline = next((s for s in older if now - s["t"] >= WINDOW_S), older[-1] if older else None)
    if baseline is None or processed < baseline["processed"] or failed < baseline["failed"]:
        return {"window_s": None, "enqueued_per_s": None, "processed_per_s": None, "failed_per_s": None}
    elapsed = now - baseline["t"]
    finished = (processed - baseline["processed"]) + (failed - baseline["failed"])
    return {
        "window_s": round(elapsed, 1),
        "enqueued_per_s": round(max(outstanding - baseline["outstanding"] + finished, 0) / elapsed, 3),
        "processed_per_s": round((processed - baseline["processed"]) / elapsed, 3),
        "failed_per_s": round((failed - baseline["failed"]) / elapsed, 3),
    }
