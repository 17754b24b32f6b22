"""The benchmark's no-op actor on Dramatiq's RedisBroker: ``dramatiq tests.bench.actors_redis``.

Environment: BENCH_VALKEY_URL, BENCH_REDIS_NAMESPACE (see tests/bench/common.py for the rest).
Dramatiq's default middleware, as for the NatsBroker twin (actors_nats.py).
"""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from tests.bench.common import ACTOR, QUEUE, noop

broker = RedisBroker(url=os.environ["BENCH_VALKEY_URL"], namespace=os.environ.get("BENCH_REDIS_NAMESPACE", "dramatiq"))
dramatiq.set_broker(broker)
actor = dramatiq.actor(noop, actor_name=ACTOR, queue_name=QUEUE, max_retries=0, broker=broker)
