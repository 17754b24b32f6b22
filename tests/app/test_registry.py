"""Declaring tasks and periodic schedules: mistakes are caught at import, with a clear message."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError

from natsq import registry
from natsq.registry import TaskDefinitionError, periodic, task


class Empty(BaseModel):
    pass


class Limit(BaseModel):
    limit: int


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_tasks", {})
    monkeypatch.setattr(registry, "_periodic", {})


def test_a_task_can_be_called_directly_with_its_payload_checked():
    @task(payload=Limit)
    def double(limit: int) -> int:
        return limit * 2

    assert double(limit="21") == 42
    with pytest.raises(ValidationError):
        double(limit="many")
    assert registry.load([]).public == {"double": double}


def test_private_tasks_are_not_public_and_their_queues_count():
    @task(payload=Empty, public=False, queue="maintenance")
    def sweep() -> None: ...

    loaded = registry.load([])
    assert loaded.public == {} and loaded.queues == {"maintenance"}


def test_two_tasks_with_one_name_are_refused():
    @task(payload=Empty, name="same")
    def first() -> None: ...

    with pytest.raises(TaskDefinitionError, match="two tasks are named 'same'"):
        @task(payload=Empty, name="same")
        def second() -> None: ...


@pytest.mark.parametrize(
    "declare, message",
    [
        (lambda: task(payload=dict), "pydantic model"),
        (lambda: task(payload=Empty, name="has space")(lambda: None), "may only contain"),
        (lambda: periodic("t", "every hour"), "schedule 'every hour'"),
        (lambda: periodic("t", "0 * * * *"), "six fields"),
    ],
    ids=["not-a-model", "bad-name", "bad-schedule", "five-field-cron"],
)
def test_declaration_mistakes_are_clear(declare, message):
    with pytest.raises(TaskDefinitionError, match=message):
        declare()


@pytest.mark.parametrize("schedule", ["@every 10s", "@every 1h30m", "@hourly", "0 30 3 * * *", "*/5 * * * * *"])
def test_schedules_the_server_accepts_are_accepted(schedule):
    assert periodic("t", schedule).schedule == schedule


def test_periodic_tasks_from_configuration_are_checked_against_their_task():
    @task(payload=Limit, public=False)
    def report(limit: int) -> None: ...

    config = json.dumps([{"task": "report", "schedule": "@daily", "payload": {"limit": 5}, "name": "daily-report"}])
    assert registry.load([], config).periodic["daily-report"].payload == {"limit": 5}
    for bad, message in [
        ([{"task": "nope", "schedule": "@daily"}], "unknown task 'nope'"),
        ([{"task": "report", "schedule": "@daily"}], "payload does not match 'report'"),
        ([{"task": "report"}], "needs 'task' and 'schedule'"),
        ({"task": "report"}, "JSON list of objects"),
    ]:
        with pytest.raises(TaskDefinitionError, match=message):
            registry.load([], json.dumps(bad))


def test_an_unimportable_module_is_named():
    with pytest.raises(TaskDefinitionError, match="cannot import task module 'no.such.module'"):
        registry.load(["no.such.module"])
