"""The per-process asyncio event loop that nats-py runs on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)


class EventLoopThread:
    """An asyncio loop in a daemon thread, started on first use.

    Starting lazily matters: gunicorn and ``dramatiq --processes N`` fork after
    the broker was built, and a loop (or a socket) inherited across fork is dead
    in the child. Each process therefore gets its own loop the first time it
    asks for one.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._start()
        assert self._loop is not None
        return self._loop

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            # Stopped: end what is left (a client whose close could not finish).
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.close()

        thread = threading.Thread(target=run, name=self._name, daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread, self._pid = loop, thread, os.getpid()

    def in_loop_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop from any other thread.

        It runs in an empty context: the caller's context variables (a
        request's task id in a log context, say) must not leak into
        long-lived tasks of the connection.
        """
        return contextvars.Context().run(asyncio.run_coroutine_threadsafe, coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run ``coro`` on the loop and wait for its result (seconds)."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("blocking call into the event loop from its own thread")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"operation did not finish within {timeout} s") from None

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(callback, *args, context=contextvars.Context())

    def stop(self, timeout: float = 5.0) -> None:
        """Stop this process's loop, if it has one; never raises.

        The loop's thread closes it once stopped. A loop that does not stop
        within ``timeout`` seconds (a callback blocks it, or this is its own
        thread) is left to stop by itself, and forgotten.
        """
        if self._pid != os.getpid() or self._loop is None:
            return
        loop, thread = self._loop, self._thread
        self._pid = self._loop = self._thread = None
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("The NATS event loop did not stop within %s s; leaving it behind.", timeout)
