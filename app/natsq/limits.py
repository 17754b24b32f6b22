"""Per-caller limits in Valkey: requests per minute and tasks not yet finished.

Keys (``<ns>`` is NATSQ_NAMESPACE, ``<h>`` the SHA-1 of the caller's owner id):
- ``<ns>:rate:<h>``: requests in the current one-minute window (expires with it);
- ``<ns>:outstanding:<h>``: sorted set of the caller's unfinished task ids, scored by
  submission time; workers remove a task when it ends (``TaskStore`` does it with
  the same key), and ids older than NATSQ_RESULT_TTL_S fall out.

A limit of 0 is no limit.
"""

from __future__ import annotations

import hashlib
import math
import time

import valkey

from .errors import RETRY_AFTER_S, ApiError

RATE_WINDOW_MS = 60_000

_ADMIT = """
local now, window, rate_limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_outstanding, ttl_ms = tonumber(ARGV[4]), tonumber(ARGV[6])
if rate_limit > 0 then
  local count = redis.call('INCR', KEYS[1])
  if count == 1 then redis.call('PEXPIRE', KEYS[1], window) end
  if count > rate_limit then return {'rate', redis.call('PTTL', KEYS[1])} end
end
if max_outstanding > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl_ms)
  if redis.call('ZCARD', KEYS[2]) >= max_outstanding then return {'outstanding', 0} end
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ttl_ms)
end
return false
"""


def outstanding_prefix(namespace: str) -> str:
    """Key prefix of the outstanding-task sets; the rest is the SHA-1 of the owner id."""
    return f"{namespace}:outstanding:"


def _owner_hash(owner: str) -> str:
    return hashlib.sha1(owner.encode()).hexdigest()  # Lua's redis.sha1hex() makes the same


class CallerLimits:
    def __init__(self, client: valkey.Valkey, namespace: str, *, per_minute: int, max_outstanding: int, ttl_s: int) -> None:
        self.client = client
        self.namespace = namespace
        self.per_minute = per_minute
        self.max_outstanding = max_outstanding
        self.ttl_ms = ttl_s * 1000
        self._admit = client.register_script(_ADMIT)

    def admit(self, owner: str, task_id: str) -> None:
        """Count a request of ``owner`` and reserve a slot for ``task_id``; 429 when over a limit."""
        if not (self.per_minute or self.max_outstanding):
            return
        owner_hash = _owner_hash(owner)
        refused = self._admit(
            keys=[f"{self.namespace}:rate:{owner_hash}", outstanding_prefix(self.namespace) + owner_hash],
            args=[int(time.time() * 1000), RATE_WINDOW_MS, self.per_minute, self.max_outstanding, task_id, self.ttl_ms],
        )
        if not refused:
            return
        limit, wait_ms = refused[0].decode(), int(refused[1])
        if limit == "rate":
            raise ApiError(429, "too_many_requests", f"more than {self.per_minute} requests a minute",
                           headers={"Retry-After": str(max(1, math.ceil(wait_ms / 1000)))})
        raise ApiError(429, "too_many_tasks", f"{self.max_outstanding} of your tasks are still unfinished",
                       headers={"Retry-After": str(RETRY_AFTER_S)})

    def release(self, owner: str, task_id: str) -> None:
        """Give back the slot of a task that was not created after all (a replay, a failed enqueue)."""
        if self.max_outstanding:
            self.client.zrem(outstanding_prefix(self.namespace) + _owner_hash(owner), task_id)
