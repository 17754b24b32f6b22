"""A userspace TCP proxy that injects latency, jitter, loss and black holes (this kernel has no netem).

Each direction of each connection is a FIFO: a chunk read at time t is written
at ``max(previous due time, t + latency ± jitter)``, so bytes keep their order
as TCP would. Loss cannot drop bytes out of a TCP stream without breaking it;
what a lost segment costs a TCP connection is a retransmission, so a "lost"
chunk is held for one extra retransmission timeout (Linux's minimum, 200 ms).
A black hole holds every byte (in both directions, connections stay open) until
it is lifted, like a network partition where packets are silently dropped.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from dataclasses import dataclass

#: What a lost segment costs: Linux's minimum retransmission timeout.
RETRANSMISSION_TIMEOUT_S = 0.2


@dataclass
class Faults:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    black_hole: bool = False

    def delay_s(self, rng: random.Random) -> float:
        delay = max(self.latency_ms + rng.uniform(-self.jitter_ms, self.jitter_ms), 0.0) / 1000
        if self.loss and rng.random() < self.loss:
            delay += RETRANSMISSION_TIMEOUT_S
        return delay


class FaultProxy:
    """Listens on a free loopback port and forwards to ``target_port`` with ``faults``."""

    def __init__(self, target_port: int, faults: Faults | None = None, seed: int = 0) -> None:
        self.target_port = target_port
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.forwarded_bytes = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"fault-proxy-{self.port}", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> "FaultProxy":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(5)
        return self

    def stop(self) -> None:
        async def close():
            self._server.close()
            connections = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._connection, sock=self._listener)

    async def _connection(self, client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunks: asyncio.Queue = asyncio.Queue()
        sender = asyncio.ensure_future(self._send(chunks, writer))
        last_due = 0.0
        try:
            while data := await reader.read(65536):
                last_due = max(last_due, time.monotonic() + self.faults.delay_s(self.rng))
                chunks.put_nowait((last_due, data))
        finally:
            chunks.put_nowait((last_due, b""))  # end of stream, after what is still in flight
            await asyncio.gather(sender, return_exceptions=True)

    async def _send(self, chunks: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                due, data = await chunks.get()
                while (wait := due - time.monotonic()) > 0 or self.faults.black_hole:
                    await asyncio.sleep(max(wait, 0.02))
                if not data:
                    break
                writer.write(data)
                self.forwarded_bytes += len(data)
                await writer.drain()
        finally:
            writer.close()
