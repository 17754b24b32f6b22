"""The no-op actor both brokers run in `make bench`, and what it records.

The actor body is the same for NatsBroker and RedisBroker. It costs one
attribute check per message unless the benchmark asks for a record:

- BENCH_MARK_DIR: on its first message each worker process writes the wall
  time into ``first-<pid>`` there (drain runs time from the first message
  processed to an empty queue, so worker start-up is not counted);
- BENCH_LATENCY_FILE: messages sent with ``sent_at`` (time.time() at enqueue)
  append ``<tag> <seconds from enqueue to actor start>`` to this file.
"""

from __future__ import annotations

import os
import threading
import time

#: Queue and actor name the throughput, drain and latency figures use.
QUEUE = "bench"
ACTOR = "noop"

_lock = threading.Lock()
_first_marked = False
_latency_out = None


def _mark_first() -> None:
    global _first_marked
    with _lock:
        if _first_marked:
            return
        _first_marked = True
        directory = os.environ.get("BENCH_MARK_DIR")
        if not directory:
            return
        now = time.time()
        path = os.path.join(directory, f"first-{os.getpid()}")
        with open(path + ".tmp", "w") as f:
            f.write(repr(now))
        os.replace(path + ".tmp", path)


def _record_latency(tag: str, seconds: float) -> None:
    global _latency_out
    with _lock:
        if _latency_out is None:
            _latency_out = open(os.environ["BENCH_LATENCY_FILE"], "a", buffering=1)
        _latency_out.write(f"{tag} {seconds!r}\n")


def noop(sent_at: float | None = None, tag: str = "") -> None:
    """Does nothing; optionally records its end-to-end latency."""
    received = time.time()
    if not _first_marked:
        _mark_first()
    if sent_at is not None:
        _record_latency(tag, received - sent_at)
