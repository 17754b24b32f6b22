"""Declaring the streams on connect never undoes what an operator set."""

from __future__ import annotations

import dataclasses

from nats.js.api import RetentionPolicy, StreamConfig

from dramatiq_nats.topology import DUPLICATE_WINDOW_S


def stream_config(broker, name):
    async def read():
        await broker._connection.open()
        return (await broker._connection.js.stream_info(name)).config

    return broker._run(read())


def update_stream(broker, config):
    async def update():
        await broker._connection.js.update_stream(config)

    broker._run(update())


def test_a_new_broker_keeps_the_limits_an_operator_set(make_broker):
    first = make_broker()
    first.connect()
    stream = first.topology.task_stream
    created = stream_config(first, stream)
    assert created.duplicate_window == DUPLICATE_WINDOW_S
    update_stream(first, dataclasses.replace(created, max_bytes=64 * 1024 * 1024, duplicate_window=30.0))

    second = make_broker()
    second.connect()  # a new process (a rolling restart, say) declares again

    kept = stream_config(second, stream)
    assert kept.max_bytes == 64 * 1024 * 1024
    assert kept.duplicate_window == 30.0


def test_a_stream_made_by_an_operator_gets_only_what_the_broker_needs(make_broker):
    broker = make_broker()
    wanted = broker.topology.task_stream_config()
    # Made by hand without message schedules or direct gets, with a limit of its own.
    operator_config = StreamConfig(
        name=wanted.name, subjects=wanted.subjects[:1], retention=RetentionPolicy.WORK_QUEUE, max_msgs=1_000_000
    )

    async def create():
        import nats

        nc = await nats.connect(broker._connect_options["servers"])
        try:
            await nc.jetstream().add_stream(operator_config)
        finally:
            await nc.close()

    broker._loop.run(create(), 10)
    broker.connect()

    config = stream_config(broker, wanted.name)
    assert config.max_msgs == 1_000_000
    assert config.allow_msg_schedules and config.allow_direct
    assert sorted(config.subjects) == sorted(wanted.subjects)
