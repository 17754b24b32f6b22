"""Reading, replaying, deleting and purging dead letters through ``dramatiq_nats.dead_letters``."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.errors import DecodeError, QueueNotFound

from tests.conftest import wait_until


@pytest.fixture
def orders(broker, worker):
    """An actor that fails while ``broken`` holds its order, and records the orders it completed."""
    broken: set[str] = set()
    done: list[tuple[str, str]] = []

    @dramatiq.actor(max_retries=1, min_backoff=10, max_backoff=20)
    def process(order):
        if order in broken:
            raise ValueError(f"cannot process {order}")
        done.append((order, dramatiq.middleware.CurrentMessage.get_current_message().message_id))

    broker.add_middleware(dramatiq.middleware.CurrentMessage())
    worker()
    return process, broken, done


def dead_letter(broker, actor, broken, *orders):
    broken.update(orders)
    for order in orders:
        actor.send(order)
    wait_until(lambda: broker.queue_stats("default").dead_lettered == len(orders), 20, message="the dead letters")
    return broker.dead_letters.list("default")


def test_a_dead_letter_tells_what_failed_and_why(broker, orders):
    process, broken, _ = orders
    [letter] = dead_letter(broker, process, broken, "A-1")
    assert letter.queue_name == "default"
    assert letter.message.actor_name == "process" and letter.message.args == ("A-1",)
    assert letter.reason == "failed: ValueError: cannot process A-1"
    assert letter.attempts == 2  # the first run and one retry
    assert letter.deliveries == 1
    assert "ValueError: cannot process A-1" in letter.traceback
    assert letter.dead_lettered_at is not None and letter.stream == broker.topology.dead_letter_stream
    assert broker.dead_letters.get("default", letter.seq) == letter
    assert broker.dead_letters.get("default", letter.seq + 1000) is None


def test_a_replay_runs_again_as_a_new_message_and_removes_the_dead_letter(broker, orders):
    process, broken, done = orders
    [letter] = dead_letter(broker, process, broken, "B-1")
    broken.clear()  # the cause is fixed

    new = broker.dead_letters.replay(letter)

    assert new is not None
    assert new.message_id != letter.message_id
    assert new.options["replay_of"] == letter.message_id
    assert "retries" not in new.options and "traceback" not in new.options
    wait_until(lambda: done, 10, message="the replayed message to run")
    assert done == [("B-1", new.message_id)]
    assert broker.queue_stats("default").dead_lettered == 0
    assert letter.replacement().message_id == new.message_id  # a retried replay would be de-duplicated
    assert broker.dead_letters.replay(letter) is None  # gone: a second replay enqueues nothing


def test_dead_letters_page_by_sequence_and_stay_within_their_queue(broker, orders):
    process, broken, _ = orders
    broker.declare_queue("other")
    letters = dead_letter(broker, process, broken, "C-1", "C-2", "C-3")
    assert sorted(letter.message.args[0] for letter in letters) == ["C-1", "C-2", "C-3"]
    assert [letter.seq for letter in letters] == sorted(letter.seq for letter in letters)  # oldest first

    first_page = broker.dead_letters.list("default", limit=2)
    rest = broker.dead_letters.list("default", after=first_page[-1].seq, limit=2)
    assert [letter.seq for letter in first_page + rest] == [letter.seq for letter in letters]

    assert broker.dead_letters.list("other") == []
    assert broker.dead_letters.get("other", letters[0].seq) is None
    assert broker.dead_letters.delete("other", letters[0].seq) is False
    with pytest.raises(QueueNotFound):
        broker.dead_letters.list("undeclared")


def test_delete_removes_one_dead_letter_and_purge_the_rest(broker, orders):
    process, broken, _ = orders
    first, second, third = dead_letter(broker, process, broken, "D-1", "D-2", "D-3")
    assert broker.dead_letters.delete("default", second.seq) is True
    assert broker.dead_letters.delete("default", second.seq) is False
    assert [letter.seq for letter in broker.dead_letters.list("default")] == [first.seq, third.seq]
    assert broker.dead_letters.purge("default") == 2
    assert broker.dead_letters.list("default") == []
    assert broker.queue_stats("default").dead_lettered == 0


def test_an_undecodable_dead_letter_is_listed_with_its_body_and_cannot_be_replayed(broker, orders):
    async def publish():
        await broker._connection.open()
        await broker._connection.js.publish(broker.topology.queue_subject("default"), b"not json")

    broker._run(publish())
    wait_until(lambda: broker.queue_stats("default").dead_lettered == 1, 10, message="a dead letter")
    [letter] = broker.dead_letters.list("default")
    assert letter.message is None and letter.message_id is None
    assert letter.body == b"not json"
    assert letter.reason.startswith("undecodable message")
    assert letter.attempts == 0  # dead-lettered on its first delivery, never run
    with pytest.raises(DecodeError):
        broker.dead_letters.replay(letter)
    assert broker.queue_stats("default").dead_lettered == 1


def test_a_replay_retried_after_its_dead_letter_could_not_be_deleted_runs_once(broker, orders):
    process, broken, done = orders
    [letter] = dead_letter(broker, process, broken, "E-1")
    broken.clear()
    # A first replay whose answer was lost: its message was stored, the dead letter stayed.
    broker.enqueue(letter.replacement())
    new = broker.dead_letters.replay(letter)  # the operator tries again

    wait_until(lambda: done, 10, message="the replay to run")
    broker.join("default", timeout=5_000)
    assert done == [("E-1", new.message_id)]  # JetStream dropped the second copy
    assert broker.dead_letters.list("default") == []
