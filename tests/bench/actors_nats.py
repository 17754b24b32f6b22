"""The benchmark's no-op actor on NatsBroker: ``dramatiq tests.bench.actors_nats``.

Environment: BENCH_NATS_URL, BENCH_NAMESPACE (see tests/bench/common.py for the rest).
Dramatiq's default middleware, as for the RedisBroker twin (actors_redis.py).
"""

import os

import dramatiq

from dramatiq_nats import NatsBroker
from tests.bench.common import ACTOR, QUEUE, noop

broker = NatsBroker(os.environ["BENCH_NATS_URL"], namespace=os.environ["BENCH_NAMESPACE"])
dramatiq.set_broker(broker)
actor = dramatiq.actor(noop, actor_name=ACTOR, queue_name=QUEUE, max_retries=0, broker=broker)
