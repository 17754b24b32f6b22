"""Users' tasks: the ``@task`` decorator, periodic schedules, and the modules that declare them.

A task module is any importable module whose functions carry ``@task``::

    from pydantic import BaseModel
    from natsq.registry import task

    class Receipt(BaseModel):
        order_id: str

    @task(payload=Receipt, queue="mail", max_retries=5)
    def send_receipt(order_id: str) -> dict:
        ...

The modules named in ``NATSQ_TASK_MODULES`` are imported by the gateway and by
the worker. The gateway accepts public tasks only and checks payloads against
the model; the worker turns every task into a Dramatiq actor and checks the
payload again before running it, so a message that bypassed the gateway cannot
bypass the schema. The function receives the payload's fields as keyword
arguments and returns a JSON-serialisable result.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pydantic import BaseModel, ValidationError

#: Names of tasks and periodic schedules: one subject token, readable in URLs.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")

#: ``@every <Go duration>``, a predefined schedule, or cron with six fields
#: (seconds first): what nats-server's repeating message schedules accept.
_SCHEDULE = re.compile(
    r"^(@every ([0-9]+(\.[0-9]+)?(ms|s|m|h))+|@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|(\S+ ){5}\S+)$"
)


class TaskDefinitionError(ValueError):
    """A task or periodic schedule is declared wrongly (raised at import, not at run time)."""


@dataclass(frozen=True)
class TaskSpec:
    """One task: its name, payload model, queue, retry policy and code."""

    name: str
    payload: type[BaseModel]
    fn: Callable[..., Any] = field(compare=False)
    queue: str = "default"
    max_retries: int = 3
    time_limit_ms: int = 3_600_000
    public: bool = True
    #: Whether callers may read the text of the task's exceptions; otherwise they
    #: see only the exception's type (the text may hold internal details).
    public_errors: bool = False

    @property
    def description(self) -> str:
        return (self.fn.__doc__ or "").strip()

    def public_error(self, exception: BaseException) -> str:
        """The error callers read: the exception's type, with its text only if the task opts in."""
        if self.public_errors:
            return f"{type(exception).__name__}: {exception}"
        return type(exception).__name__

    def validate(self, payload: object) -> BaseModel:
        """The payload as the task's model; raises pydantic's ValidationError.

        Strict, as JSON: payloads arrive as JSON, so ``"5"`` is no integer and
        ``false`` no number, while an ISO 8601 string is a datetime.
        """
        return self.payload.model_validate_json(json.dumps(payload), strict=True)

    def run(self, payload: BaseModel) -> Any:
        return self.fn(**dict(payload))

    def __call__(self, **fields: Any) -> Any:
        """Run the task here and now, payload checked as Python values (handy in unit tests)."""
        return self.run(self.payload.model_validate(fields))


@dataclass(frozen=True)
class PeriodicSpec:
    """A task run on a schedule (``@every 10m`` or ``0 30 3 * * *``) with a fixed payload."""

    name: str
    task: str
    schedule: str
    payload: dict = field(default_factory=dict)


_tasks: dict[str, TaskSpec] = {}
_periodic: dict[str, PeriodicSpec] = {}


def task(
    *,
    payload: type[BaseModel],
    name: str | None = None,
    queue: str = "default",
    max_retries: int = 3,
    time_limit_ms: int = 3_600_000,
    public: bool = True,
    public_errors: bool = False,
    schedule: str | None = None,
) -> Callable[[Callable[..., Any]], TaskSpec]:
    """Declare a function as a task.

    Parameters:
      payload: The pydantic model its payload must match.
      name: The task's name (default: the function's name).
      queue: The Dramatiq queue it runs on.
      max_retries: Retries after a failure before it is dead-lettered.
      time_limit_ms: How long one attempt may run.
      public: Whether producers may submit it through the gateway; private
        tasks run only from periodic schedules or messages sent in code.
      public_errors: Whether callers may read its exceptions' text in
        ``GET /task/<id>``; by default they see only the exception's type.
      schedule: Also run it periodically, with an empty payload.
    """
    if not (isinstance(payload, type) and issubclass(payload, BaseModel)):
        raise TaskDefinitionError(f"payload must be a pydantic model class, not {payload!r}")

    def declare(fn: Callable[..., Any]) -> TaskSpec:
        spec = TaskSpec(name or fn.__name__, payload, fn, queue, max_retries, time_limit_ms, public, public_errors)
        _check_name(spec.name, "task")
        known = _tasks.get(spec.name)
        if known is not None and _origin(known.fn) != _origin(fn):
            raise TaskDefinitionError(f"two tasks are named {spec.name!r}: {_origin(known.fn)} and {_origin(fn)}")
        _tasks[spec.name] = spec
        if schedule is not None:
            periodic(spec.name, schedule)
        return spec

    return declare


def periodic(task_name: str, schedule: str, payload: dict | None = None, *, name: str | None = None) -> PeriodicSpec:
    """Run a task on a schedule: ``@every 30s``, ``@hourly`` or six-field cron (seconds first).

    The schedule lives in JetStream, so it fires once per tick however many
    workers run. ``name`` (default: the task's name) tells schedules apart.
    """
    spec = _periodic_spec(task_name, schedule, payload, name)
    _periodic[spec.name] = spec
    return spec


def _periodic_spec(task_name: str, schedule: str, payload: dict | None, name: str | None) -> PeriodicSpec:
    spec = PeriodicSpec(name or task_name, task_name, schedule.strip(), dict(payload or {}))
    _check_name(spec.name, "periodic schedule")
    if not _SCHEDULE.match(spec.schedule):
        raise TaskDefinitionError(
            f"periodic {spec.name!r}: schedule {schedule!r} is neither '@every <duration>' (e.g. '@every 10m'), "
            "a predefined one ('@hourly', '@daily', ...) nor cron with six fields, seconds first ('0 30 3 * * *')"
        )
    return spec


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise TaskDefinitionError(f"{what} name {name!r} may only contain letters, digits, '-' and '_'")


def _origin(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


@dataclass(frozen=True)
class Registry:
    """The tasks and periodic schedules the configured modules declared."""

    tasks: dict[str, TaskSpec]
    periodic: dict[str, PeriodicSpec]

    @property
    def public(self) -> dict[str, TaskSpec]:
        return {name: spec for name, spec in self.tasks.items() if spec.public}

    @property
    def queues(self) -> frozenset[str]:
        return frozenset(spec.queue for spec in self.tasks.values())


def load(modules: Iterable[str], periodic_config: str | None = None) -> Registry:
    """Import the task modules and check every periodic schedule against its task.

    ``periodic_config`` is a JSON list of ``{"task", "schedule", "payload"?, "name"?}``
    (``NATSQ_PERIODIC_TASKS``), added to the schedules declared in code.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise TaskDefinitionError(f"cannot import task module {module!r}: {e}") from e
    configured = [_periodic_spec(**entry) for entry in _parse_periodic_config(periodic_config)]
    registry = Registry(dict(_tasks), {**_periodic, **{spec.name: spec for spec in configured}})
    for spec in registry.periodic.values():
        target = registry.tasks.get(spec.task)
        if target is None:
            raise TaskDefinitionError(f"periodic {spec.name!r} runs an unknown task {spec.task!r}")
        try:
            target.validate(spec.payload)
        except ValidationError as e:
            raise TaskDefinitionError(f"periodic {spec.name!r}: its payload does not match {spec.task!r}: {e}") from None
    return registry


def _parse_periodic_config(config: str | None) -> list[dict]:
    if not config:
        return []
    try:
        entries = json.loads(config)
    except json.JSONDecodeError as e:
        raise TaskDefinitionError(f"NATSQ_PERIODIC_TASKS is not JSON: {e}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise TaskDefinitionError("NATSQ_PERIODIC_TASKS must be a JSON list of objects")
    allowed = {"task", "schedule", "payload", "name"}
    for entry in entries:
        if not {"task", "schedule"} <= set(entry) <= allowed:
            raise TaskDefinitionError(
                f"NATSQ_PERIODIC_TASKS: {entry} needs 'task' and 'schedule' (and may have 'payload', 'name')"
            )
    return [{"task_name": e["task"], "schedule": e["schedule"], "payload": e.get("payload"), "name": e.get("name")}
            for e in entries]
