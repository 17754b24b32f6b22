"""Declare the streams and consumers of every queue: ``python -m natsq.bootstrap``.

Run as the NATS admin user (NATSQ_NATS_USER / NATSQ_NATS_PASSWORD of the admin
role) before gateways and workers that run with NATSQ_NATS_DECLARE=false, whose
users may publish and consume but not create or change streams. Running it again
brings the editable settings of existing streams and consumers in line.
"""

from __future__ import annotations

import sys

from . import registry
from .dispatch import build_broker
from .logs import configure_logging
from .settings import Settings


def main() -> int:
    settings = Settings(nats_declare=True)
    configure_logging(settings.log_level)
    tasks = registry.load(settings.task_module_names, settings.periodic_tasks)
    broker = build_broker(settings, middleware=[], queues=tasks.queues)
    try:
        broker.connect()  # declares the streams and the hand-back bucket
        broker.declare_consumers()
        for queue_name, counts in sorted(broker.stats().items()):
            print(f"queue {queue_name}: declared ({counts.pending} pending)")
    finally:
        broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
