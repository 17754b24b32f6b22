"""Gateway metrics, correct across gunicorn's worker processes.

prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by
app/natsq/gunicorn_conf.py) sums counters and histograms over all workers. Queue
backlog gauges come from the broker at scrape time.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from dramatiq_nats import NatsBroker

logger = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "natsq_http_requests_total", "HTTP requests answered, by route and status.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "natsq_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ENQUEUE_FAILURES = Counter(
    "natsq_enqueue_failures_total", "Tasks refused because they could not be durably enqueued.", ["reason"]
)
# Series that exist from the start at 0, so rate() and alerts see them before the first failure.
ENQUEUE_FAILURE_REASONS = ("nats_unavailable", "valkey_unavailable", "queue_full")
for _reason in ENQUEUE_FAILURE_REASONS:
    ENQUEUE_FAILURES.labels(reason=_reason)

TASKS_SUBMITTED = Counter(
    "natsq_tasks_submitted_total",
    "Tasks accepted (202) and durably enqueued, by queue and actor (idempotent replays not counted).",
    ["queue_name", "actor_name"],
)

PUBLISH_LATENCY = Histogram(
    "natsq_publish_duration_seconds",
    "Time until JetStream acknowledged a task's message.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class QueueCollector:
    """Per-queue message counts from JetStream, read when Prometheus scrapes."""

    def __init__(self, broker: NatsBroker) -> None:
        self.broker = broker

    def collect(self):
        up = GaugeMetricFamily("natsq_broker_up", "Whether queue counts could be read from JetStream.")
        messages = GaugeMetricFamily(
            "natsq_queue_messages", "Messages of a queue by state (the same on every gateway pod).", labels=["queue", "state"]
        )
        redelivered = GaugeMetricFamily(
            "natsq_queue_redelivered", "In-flight messages delivered more than once.", labels=["queue"]
        )
        try:
            stats = self.broker.stats()
        except Exception as e:
            logger.warning("Could not read queue counts: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for queue, counts in stats.items():
            messages.add_metric([queue, "pending"], counts.pending)
            messages.add_metric([queue, "in_flight"], counts.in_flight)
            messages.add_metric([queue, "scheduled"], counts.scheduled)
            messages.add_metric([queue, "dead_lettered"], counts.dead_lettered)
            redelivered.add_metric([queue], counts.redelivered)
        yield from (up, messages, redelivered)


def render(broker: NatsBroker) -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
        process_metrics = b""
    else:
        process_metrics = generate_latest(REGISTRY)
    registry.register(QueueCollector(broker))
    return process_metrics + generate_latest(registry)
