"""Task state, results and counters in Valkey.

Keys (``<ns>`` is NATSQ_NAMESPACE):
- ``<ns>:task:<id>``: hash with the state of one task, expiring NATSQ_RESULT_TTL_S
  after its last change;
- ``<ns>:idem:<sha256 of owner and key>``: the task an Idempotency-Key created
  and the fingerprint of its request, with the same TTL (keys are per caller);
- ``<ns>:tasks``: sorted set indexing tasks by creation time (members
  ``<epoch ms, 13 digits>:<id>``, all of score 0, so ranges by time are ranges
  by name); entries older than the TTL are trimmed as new tasks arrive;
- ``<ns>:stats``: hash of cluster-wide worker counters (processed, failed);
- channel ``<ns>:ended:<id>``: a message when the task ends, for long polls.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import datetime, timezone
from typing import Any

import valkey
from valkey.exceptions import ConnectionError, OutOfMemoryError, ReadOnlyError, ResponseError, TimeoutError, ValkeyError
from valkey.backoff import NoBackoff
from valkey.retry import Retry
from valkey.sentinel import Sentinel

from .limits import outstanding_prefix
from .settings import Settings

#: The states a task goes through; "queued" until a worker picks it up.
#: "failed" is a failure for good on its way to the dead-letter stream.
STATES = ("queued", "running", "retrying", "succeeded", "failed", "dead-lettered", "cancelled")

#: States after which nothing more happens to a task.
ENDED = ("succeeded", "dead-lettered", "cancelled")

#: Task records a listing examines at most per page, matching or not.
LIST_SCAN_BUDGET = 2_000

#: What a cursor of list_tasks looks like (an index member: creation time in ms and task id).
CURSOR_PATTERN = r"^[0-9]{13}:[0-9a-f-]{36}$"
_CURSOR = re.compile(CURSOR_PATTERN)

# KEYS: the task's hash, the task index, then the idempotency key if there is one (never an
# empty key name: ACL key patterns would refuse it). ARGV: TTL, idempotency value, index member,
# expired index range, then the record's fields.
_CREATE = """
local ttl = tonumber(ARGV[1])
if KEYS[3] then
  local existing = redis.call('GET', KEYS[3])
  if existing then return existing end
  redis.call('SET', KEYS[3], ARGV[2], 'EX', ttl)
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], 0, ARGV[3])
redis.call('ZREMRANGEBYLEX', KEYS[2], '-', ARGV[4])
return false
"""

# Start an attempt unless a cancellation came first (atomically, so a task
# cancelled while queued never starts). A task that never went through the
# gateway (a periodic run, a message sent in code) is indexed on its first start.
_START = """
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return 0 end
local now = ARGV[3]
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'created_at', now)
  redis.call('ZADD', KEYS[2], 0, ARGV[4])
  redis.call('ZREMRANGEBYLEX', KEYS[2], '-', ARGV[6])
end
redis.call('HSET', KEYS[1], 'state', 'running', 'actor', ARGV[5], 'attempts', ARGV[2],
           'started_at', now, 'updated_at', now, 'error', '')
-- A worker has the message, so its publish did land after all.
redis.call('HDEL', KEYS[1], 'progress', 'publish_failed')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""

# Cancel: a task not yet running ends at once; a running one gets the flag it
# may check. Returns the state after the request (nil for an unknown task).
_CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state == 'succeeded' or state == 'dead-lettered' or state == 'cancelled' or state == 'failed' then
  return state
end
local now = ARGV[2]
redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'updated_at', now)
if state == 'queued' or state == 'retrying' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', now)
  redis.call('PUBLISH', KEYS[2], 'cancelled')
  state = 'cancelled'
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return state
"""

# A retry may start (and report "running") before the failed attempt reports
# "retrying": only the latest attempt may set the state.
_SET_IF_ATTEMPT = """
if redis.call('HGET', KEYS[1], 'attempts') == ARGV[2] then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
end
"""


# A task ended: it no longer counts against its owner's outstanding tasks (app/natsq/limits.py).
_RELEASE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then redis.call('ZREM', ARGV[1] .. redis.sha1hex(owner), ARGV[2]) end
"""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _index_member(task_id: str, at_ms: int) -> str:
    return f"{at_ms:013d}:{task_id}"


#: Replies of a Valkey that cannot take writes right now (failover, lost
#: replicas with min-replicas-to-write, loading its data).
_UNAVAILABLE_REPLIES = ("NOREPLICAS", "MASTERDOWN", "LOADING", "READONLY", "TRYAGAIN")


def is_full(error: ValkeyError) -> bool:
    """Whether Valkey refused a write because it reached maxmemory (it evicts nothing)."""
    return isinstance(error, OutOfMemoryError)


def is_unavailable(error: ValkeyError) -> bool:
    """Whether an error means "Valkey is unavailable now", not a bug."""
    if isinstance(error, (ConnectionError, TimeoutError, ReadOnlyError)):
        return True
    return isinstance(error, ResponseError) and str(error).startswith(_UNAVAILABLE_REPLIES)


def connect_valkey(settings: Settings) -> valkey.Valkey:
    """A client for the primary (asking the Sentinels for it when they are configured)."""
    password = settings.valkey_password.get_secret_value() if settings.valkey_password else None
    timeouts = {
        "socket_timeout": 2.0,
        "socket_connect_timeout": 2.0,
        "health_check_interval": 15,
        # A pooled connection to a restarted server fails once: retry on a fresh one.
        "retry": Retry(NoBackoff(), 1),
        "retry_on_error": [ConnectionError],
    }
    tls = _valkey_tls(settings)
    if settings.valkey_sentinel_addresses:
        sentinel_password = settings.valkey_sentinel_password
        timeouts |= tls
        sentinel = Sentinel(
            settings.valkey_sentinel_addresses,
            sentinel_kwargs={
                "password": sentinel_password.get_secret_value() if sentinel_password else None,
                "socket_timeout": 1.0,
                **tls,
            },
            **timeouts,
        )
        return sentinel.master_for(settings.valkey_sentinel_master, username=settings.valkey_user, password=password, **timeouts)
    if tls:
        if not settings.valkey_url.startswith("rediss://"):
            raise ValueError("NATSQ_VALKEY_TLS_* are set: NATSQ_VALKEY_URL must be a rediss:// URL")
        timeouts |= {k: v for k, v in tls.items() if k != "ssl"}  # the scheme selects TLS
    return valkey.Valkey.from_url(settings.valkey_url, username=settings.valkey_user, password=password, **timeouts)


def _valkey_tls(settings: Settings) -> dict[str, Any]:
    """Client TLS options for Valkey and Sentinel; empty when TLS is not configured."""
    if not (settings.valkey_tls_ca_file or settings.valkey_tls_cert_file):
        return {}
    return {
        "ssl": True,
        "ssl_ca_certs": settings.valkey_tls_ca_file,
        "ssl_certfile": settings.valkey_tls_cert_file,
        "ssl_keyfile": settings.valkey_tls_key_file,
        "ssl_cert_reqs": "required",
    }


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before for a different request."""


class TaskStore:
    def __init__(self, client: valkey.Valkey, namespace: str, ttl_s: int) -> None:
        self.client = client
        self.namespace = namespace
        self.ttl_s = ttl_s
        self._create = client.register_script(_CREATE)
        self._set_if_attempt = client.register_script(_SET_IF_ATTEMPT)
        self._start = client.register_script(_START)
        self._cancel = client.register_script(_CANCEL)
        self._release = client.register_script(_RELEASE)

    def _key(self, task_id: str) -> str:
        return f"{self.namespace}:task:{task_id}"

    def _ended_channel(self, task_id: str) -> str:
        return f"{self.namespace}:ended:{task_id}"

    def _idempotency_key(self, owner: str, idempotency_key: str) -> str:
        # Hashed: any owner and key make a key of one fixed shape.
        scoped = hashlib.sha256(f"{owner}\0{idempotency_key}".encode()).hexdigest()
        return f"{self.namespace}:idem:{scoped}"

    @property
    def _index_key(self) -> str:
        return f"{self.namespace}:tasks"

    @property
    def _stats_key(self) -> str:
        return f"{self.namespace}:stats"

    # -- gateway ------------------------------------------------------------

    def create(
        self,
        task_id: str,
        actor: str,
        *,
        owner: str = "",
        idempotency_key: str | None = None,
        fingerprint: str = "",
        message: bytes | None = None,
        not_before_ms: int | None = None,
    ) -> str | None:
        """Record a new queued task of ``owner``.

        With an idempotency key the same owner used before, nothing is written
        and the id of the task it created is returned instead; if that request's
        ``fingerprint`` differs, IdempotencyConflict is raised. ``message`` and
        ``not_before_ms`` (epoch ms) let a replay publish the same message again.
        """
        now = now_iso()
        fields = ["state", "queued", "actor", actor, "owner", owner, "attempts", "0", "created_at", now, "updated_at", now]
        if message is not None:
            fields += ["message", message]
        if not_before_ms is not None:
            fields += ["not_before_ms", not_before_ms]
        now_ms = int(time.time() * 1000)
        keys = [self._key(task_id), self._index_key]
        if idempotency_key:
            keys.append(self._idempotency_key(owner, idempotency_key))
        existing = self._create(
            keys=keys,
            args=[self.ttl_s, f"{task_id} {fingerprint}", _index_member(task_id, now_ms), self._expired_below(now_ms), *fields],
        )
        if not existing:
            return None
        existing_id, _, existing_fingerprint = existing.decode().partition(" ")
        # A key recorded before requests had fingerprints (a rolling upgrade) matches any request.
        if existing_fingerprint and existing_fingerprint != fingerprint:
            raise IdempotencyConflict(existing_id)
        return existing_id

    def _expired_below(self, now_ms: int) -> str:
        """The index range (exclusive) of tasks whose records have expired."""
        return "(" + _index_member("", now_ms - self.ttl_s * 1000)

    def request_cancel(self, task_id: str) -> str | None:
        """Ask a task to stop: its state afterwards, or None for an unknown task.

        A queued, scheduled or retrying task is ``cancelled`` at once and never
        starts again; a running one keeps ``running`` with a flag it may check.
        """
        state = self._cancel(keys=[self._key(task_id), self._ended_channel(task_id)], args=[self.ttl_s, now_iso()])
        if state == b"cancelled":
            self._release_slot(task_id)
        return state.decode() if state else None

    def wait(self, task_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The task once it ended, or as it is after ``timeout_s`` seconds.

        Blocks on the task's pub/sub channel (no polling); subscribing before
        reading the state means an end between the two is not missed.
        """
        task = self.get(task_id)
        if task is None or task["state"] in ENDED or timeout_s <= 0:
            return task
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self._ended_channel(task_id))
            deadline = time.monotonic() + timeout_s
            task = self.get(task_id)
            while task is not None and task["state"] not in ENDED and (left := deadline - time.monotonic()) > 0:
                if pubsub.get_message(timeout=min(left, 1.0)) is not None:
                    task = self.get(task_id)
        finally:
            pubsub.close()
        return task if task is not None else self.get(task_id)

    def list_tasks(
        self,
        *,
        state: str | None = None,
        actor: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Tasks, newest first, filtered; and the cursor of the next page (None at the end).

        ``owner``: only that caller's tasks (None: everyone's).

        A page examines at most LIST_SCAN_BUDGET records, so a rare state or
        actor may give a short (even empty) page with a cursor: follow it.

        Raises:
          ValueError: A cursor this method did not hand out.
        """
        if cursor is not None and not _CURSOR.match(cursor):
            raise ValueError("cursor: not a cursor from a previous page")
        high = "(" + cursor if cursor else "+"
        if created_before is not None:
            before = "(" + _index_member("", int(created_before.timestamp() * 1000))
            high = min(high, before) if cursor else before
        low = "[" + _index_member("", int(created_after.timestamp() * 1000)) if created_after else "-"
        found: list[dict[str, Any]] = []
        scanned = 0
        while scanned < LIST_SCAN_BUDGET:
            batch = min(max(limit - len(found), 50), LIST_SCAN_BUDGET - scanned)
            members = [m.decode() for m in self.client.zrevrangebylex(self._index_key, high, low, start=0, num=batch)]
            if not members:
                return found, None
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(self._key(member.partition(":")[2]))
            for member, raw in zip(members, pipe.execute()):
                scanned += 1
                high = "(" + member
                task = self._decode(member.partition(":")[2], raw)
                if (task is None or (state and task["state"] != state) or (actor and task["actor"] != actor)
                        or (owner is not None and task["_owner"] != owner)):
                    continue
                found.append(task)
                if len(found) == limit:
                    return found, member
        return found, high[1:]

    def mark_published(self, task_id: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self._key(task_id), "published", "1")
        pipe.hdel(self._key(task_id), "publish_failed")
        pipe.execute()

    def mark_publish_failed(self, task_id: str) -> None:
        """Hide a task whose publish failed (the client got a 503) until its replay publishes it."""
        self.client.hset(self._key(task_id), "publish_failed", "1")

    def unpublished(self, task_id: str) -> tuple[bytes, int | None] | None:
        """The message and due time (epoch ms) of a task created with an idempotency key whose
        publish was never acknowledged; None if it was (or the record is gone)."""
        message, not_before_ms, published = self.client.hmget(self._key(task_id), "message", "not_before_ms", "published")
        if message is None or published == b"1":
            return None
        return message, int(not_before_ms) if not_before_ms is not None else None

    def forget(self, task_id: str, *, owner: str = "", idempotency_key: str | None = None) -> None:
        """Remove a task that was never stored in JetStream, and the Idempotency-Key that made it."""
        keys = [self._key(task_id)]
        if idempotency_key:
            keys.append(self._idempotency_key(owner, idempotency_key))
        self.client.delete(*keys)

    def get(self, task_id: str) -> dict[str, Any] | None:
        return self._decode(task_id, self.client.hgetall(self._key(task_id)))

    @staticmethod
    def _decode(task_id: str, raw: dict[bytes, bytes]) -> dict[str, Any] | None:
        if not raw or b"state" not in raw or b"publish_failed" in raw:
            return None  # unknown, or never accepted (its publish failed)
        record = {k.decode(): v for k, v in raw.items()}
        task = {
            "task_id": task_id,
            "actor": record["actor"].decode() if "actor" in record else None,
            "state": record["state"].decode(),
            "attempts": int(record.get("attempts", b"0")),
            "result": json.loads(record["result"]) if "result" in record else None,
            "error": record["error"].decode() if record.get("error") else None,
            "progress": json.loads(record["progress"]) if "progress" in record else None,
            "cancel_requested": record.get("cancel_requested") == b"1",
        }
        for field in ("created_at", "started_at", "finished_at", "updated_at"):
            task[field] = record[field].decode() if field in record else None
        task["_owner"] = record["owner"].decode() if "owner" in record else ""
        return task

    def stats(self) -> dict[str, Any]:
        pipe = self.client.pipeline(transaction=False)
        pipe.dbsize()
        pipe.hgetall(self._stats_key)
        keys, counters = pipe.execute()
        counters = {k.decode(): int(v) for k, v in counters.items()}
        return {"keys": keys, "processed": counters.get("processed", 0), "failed": counters.get("failed", 0)}

    def ping(self) -> bool:
        return bool(self.client.ping())

    # -- worker -------------------------------------------------------------

    def _update(self, task_id: str, counter: str | None = None, **fields: Any) -> None:
        fields["updated_at"] = now_iso()
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self._key(task_id), mapping=fields)
        pipe.expire(self._key(task_id), self.ttl_s)
        if counter:
            pipe.hincrby(self._stats_key, counter, 1)
        if fields.get("state") in ENDED:
            pipe.publish(self._ended_channel(task_id), fields["state"])
        pipe.execute()
        if fields.get("state") in ENDED:
            self._release_slot(task_id)

    def start(self, task_id: str, actor: str, attempt: int) -> bool:
        """Record an attempt as running; False if the task was cancelled and must not run."""
        now_ms = int(time.time() * 1000)
        member = _index_member(task_id, now_ms)
        return bool(self._start(
            keys=[self._key(task_id), self._index_key],
            args=[self.ttl_s, attempt, now_iso(), member, actor, self._expired_below(now_ms)],
        ))

    def cancel_requested(self, task_id: str) -> bool:
        return self.client.hget(self._key(task_id), "cancel_requested") == b"1"

    def set_progress(self, task_id: str, fraction: float, meta: Any = None) -> None:
        progress = json.dumps({"fraction": fraction, "meta": meta, "at": now_iso()})
        self._update(task_id, progress=progress)

    def mark_cancelled(self, task_id: str) -> None:
        self._update(task_id, state="cancelled", finished_at=now_iso())

    def _release_slot(self, task_id: str) -> None:
        """The task ended: it no longer counts against its owner's outstanding tasks."""
        self._release(keys=[self._key(task_id)], args=[outstanding_prefix(self.namespace), task_id])

    def mark_succeeded(self, task_id: str, result: Any) -> None:
        self._update(task_id, "processed", state="succeeded", result=json.dumps(result), finished_at=now_iso())

    def mark_retrying(self, task_id: str, attempt: int, error: str) -> None:
        now = now_iso()
        self._set_if_attempt(
            keys=[self._key(task_id)],
            args=[self.ttl_s, attempt, "state", "retrying", "error", error, "updated_at", now],
        )
        self.client.hincrby(self._stats_key, "failed", 1)

    def mark_failed(self, task_id: str, error: str) -> None:
        self._update(task_id, "failed", state="failed", error=error, finished_at=now_iso())

    def mark_dead_lettered(self, task_id: str) -> None:
        self._update(task_id, state="dead-lettered")

    # -- operators ----------------------------------------------------------

    def link_replay(self, original_id: str | None, replay_id: str) -> None:
        """Record that ``replay_id`` re-runs the dead-lettered ``original_id``, in both records."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self._key(replay_id), "replay_of", original_id or "")
        if original_id and self.client.exists(self._key(original_id)):  # never resurrect an expired record
            pipe.hset(self._key(original_id), "replayed_as", replay_id)
        pipe.execute()

    def replay_links(self, task_id: str) -> dict[str, str | None]:
        """``replay_of`` and ``replayed_as`` of a task (None where it has none)."""
        replay_of, replayed_as = self.client.hmget(self._key(task_id), "replay_of", "replayed_as")
        return {"replay_of": replay_of.decode() if replay_of else None,
                "replayed_as": replayed_as.decode() if replayed_as else None}
