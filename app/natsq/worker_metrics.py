"""The worker's Prometheus metrics: Dramatiq's own, plus how long tasks waited in the queue.

Dramatiq's exporter reads prometheus-client's multiprocess files, so (like Dramatiq's
middleware) the extra metric is created after process boot, once Dramatiq has set
``PROMETHEUS_MULTIPROC_DIR``, and prometheus-client is imported only then: importing it
earlier would fix it in single-process mode and the exporter would see nothing.
"""

from __future__ import annotations

from dramatiq.common import current_millis
from dramatiq.middleware.prometheus import Prometheus

#: Upper bounds of the time-in-queue buckets, in seconds: from an idle queue (a few ms)
#: to a backlog of an hour.
QUEUE_WAIT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class WorkerMetrics(Prometheus):
    """Dramatiq's Prometheus middleware plus ``natsq_task_queue_wait_seconds``.

    The wait runs from the message's ``message_timestamp`` (set when the gateway accepted
    the task) to the start of its first attempt; retries are left out because their wait
    is mostly the retry backoff. A delayed task's wait includes its delay.
    """

    def after_process_boot(self, broker):
        super().after_process_boot(broker)
        import prometheus_client as prom  # after Dramatiq set PROMETHEUS_MULTIPROC_DIR, see above

        self.queue_wait = prom.Histogram(
            "natsq_task_queue_wait_seconds",
            "Time from the gateway accepting a task to a worker starting its first attempt.",
            ["queue_name", "actor_name"],
            buckets=QUEUE_WAIT_BUCKETS_S,
            registry=prom.CollectorRegistry(),
        )

    def before_process_message(self, broker, message):
        super().before_process_message(broker, message)
        if message.options.get("retries", 0) == 0:
            waited_ms = max(current_millis() - message.message_timestamp, 0)
            self.queue_wait.labels(message.queue_name, message.actor_name).observe(waited_ms / 1000)
