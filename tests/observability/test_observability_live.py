"""Dashboards and alerts proven against real data.

A real Prometheus (1 s scrape and rule evaluation, with grafana/alerts.yaml loaded)
scrapes the gateway and the worker of the `stack` fixture while tasks go through
POST /task: successes (count_primes), a retry that then succeeds and a dead letter
(flaky). Then every dashboard and alert expression whose metrics come from the gateway
or the worker is evaluated through the HTTP API and must return data. Expressions over
cluster-only exporters (NATS exporter, redis_exporter, cAdvisor, kube-state-metrics)
cannot be fed here and are parse-checked in test_observability_rules.py.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse

import pytest
import requests

import observability_support as obs

pytestmark = [
    pytest.mark.skipif(obs.PROMETHEUS is None, reason=obs.NO_PROMTOOL),
    pytest.mark.timeout(240),
]

COUNT_PRIMES_TASKS = 6
# Target labels Kubernetes service discovery would add; dashboards filter on namespace.
TARGET_LABELS = {"namespace": obs.GRAFANA_VARIABLES["$namespace"]}

# The contract's metrics (CONTRACT.md "Metrics"), with the labels each must carry.
CONTRACT_METRICS = {
    "natsq_http_requests_total": {"method", "route", "status"},
    "natsq_http_request_duration_seconds_bucket": {"method", "route", "le"},
    "natsq_publish_duration_seconds_bucket": {"le"},
    "natsq_queue_messages": {"queue", "state"},
    "natsq_queue_redelivered": {"queue"},
    "natsq_tasks_submitted_total": {"queue_name", "actor_name"},
    "natsq_task_queue_wait_seconds_bucket": {"queue_name", "actor_name", "le"},
    "dramatiq_messages_total": {"queue_name", "actor_name"},
    "dramatiq_message_errors_total": {"queue_name", "actor_name"},
    "dramatiq_message_retries_total": {"queue_name", "actor_name"},
    "dramatiq_message_rejects_total": {"queue_name", "actor_name"},
    "dramatiq_messages_inprogress": {"queue_name", "actor_name"},
    "dramatiq_message_duration_milliseconds_bucket": {"queue_name", "actor_name", "le"},
}
# Labelled counters that only get a series with their first event, which this test
# cannot cause without breaking the shared stack (it would have to stop NATS).
EVENT_ONLY_METRICS = {"natsq_enqueue_failures_total": "no publish failed during the test"}


def submit(gateway: str, actor: str, **payload) -> str:
    response = requests.post(f"{gateway}/task", json={"actor": actor, "payload": payload}, timeout=10)
    assert response.status_code in (200, 201, 202), response.text
    return response.json()["task_id"]


def drive_traffic(gateway: str) -> dict[str, str]:
    ids = [submit(gateway, "count_primes", limit=20_000 + i) for i in range(COUNT_PRIMES_TASKS)]
    retried = submit(gateway, "flaky", failures=1)  # one retry, then success
    dead = submit(gateway, "flaky", failures=50)  # retries exhausted: dead letter
    for task_id in ids:
        requests.get(f"{gateway}/task/{task_id}", timeout=10)
    requests.get(f"{gateway}/stats", timeout=10)
    requests.get(f"{gateway}/task/no-such-task", timeout=10)  # a 4xx
    requests.post(f"{gateway}/task", data="not json", timeout=10)  # a 4xx
    return {"count_primes": ids[0], "retried": retried, "dead": dead}


@pytest.fixture(scope="module")
def prometheus(stack):
    gateway = urllib.parse.urlsplit(stack.gateway_url)
    worker = urllib.parse.urlsplit(stack.worker_metrics_url)
    scrape_configs = [
        {
            "job_name": "natsq-gateway",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [gateway.netloc], "labels": {**TARGET_LABELS, "pod": "natsq-gateway-0"}}],
        },
        {
            "job_name": "natsq-worker",
            "metrics_path": worker.path or "/metrics",
            "static_configs": [{"targets": [worker.netloc], "labels": {**TARGET_LABELS, "pod": "natsq-worker-0"}}],
        },
    ]
    with obs.prometheus_server(scrape_configs, [obs.ALERTS]) as server:
        assert server.wait_for('count(up{job=~"natsq-.*"} == 1) == 2', timeout=20), server.get("/api/v1/targets")
        # Let the gauges have samples from before the traffic (delta() needs a before).
        time.sleep(2)
        server.task_ids = drive_traffic(stack.gateway_url.rstrip("/"))
        server.stack = stack
        assert server.wait_for(
            f'sum(dramatiq_messages_total{{actor_name="count_primes"}}) >= {COUNT_PRIMES_TASKS}', timeout=30
        ), "count_primes tasks were not processed"
        assert server.wait_for("sum(dramatiq_message_rejects_total) > 0", timeout=75), "flaky was never dead-lettered"
        assert server.wait_for('max(natsq_queue_messages{state="dead_lettered"}) > 0', timeout=10)
        time.sleep(3)  # a few more scrapes and rule evaluations
        yield server


def selector_has_data(prometheus: obs.PrometheusServer, name: str, matchers: str) -> bool:
    return bool(prometheus.query(f"count({name}{obs.substitute(matchers)})"))


def check_selectors(prometheus: obs.PrometheusServer, expr: str) -> None:
    for name, matchers in obs.selectors(expr):
        if selector_has_data(prometheus, name, matchers):
            continue
        if name in EVENT_ONLY_METRICS:
            pytest.skip(f"{name} has no series yet: {EVENT_ONLY_METRICS[name]}")
        if "status=~\"5..\"" in matchers:
            # A healthy stack answers no 5xx: the label must exist, its 5xx values cannot.
            assert selector_has_data(prometheus, name, '{status!=""}'), f"{name} has no status label"
            continue
        raise AssertionError(f"no series for {name}{matchers}")


DASHBOARD_APP_QUERIES = [(t, e) for t, e in obs.dashboards.prometheus_queries() if obs.is_app_query(e)]
ALERT_APP_QUERIES = [(a, e) for a, e in obs.alert_queries() if obs.is_app_query(e)]


def test_both_targets_scraped(prometheus):
    targets = prometheus.get("/api/v1/targets")["activeTargets"]
    assert sorted(t["labels"]["job"] for t in targets if t["health"] == "up") == ["natsq-gateway", "natsq-worker"]


@pytest.mark.parametrize("metric", sorted(CONTRACT_METRICS))
def test_contract_metric_present_with_labels(prometheus, metric):
    series = prometheus.get("/api/v1/series", **{"match[]": metric})
    assert series, f"{metric} (CONTRACT.md) is not exposed"
    labels = set().union(*(s.keys() for s in series))
    assert CONTRACT_METRICS[metric] <= labels, f"{metric} lacks {CONTRACT_METRICS[metric] - labels}"


def test_queue_gauge_reports_every_state(prometheus):
    states = {r["metric"]["state"] for r in prometheus.query('natsq_queue_messages{queue="default"}')}
    assert states == {"pending", "in_flight", "scheduled", "dead_lettered"}


def test_http_route_label_is_the_flask_rule(prometheus):
    routes = {r["metric"]["route"] for r in prometheus.query("natsq_http_requests_total")}
    assert "/task" in routes and "/task/<task_id>" in routes, routes
    assert not any("no-such-task" in route for route in routes), routes


@pytest.mark.parametrize("title,expr", DASHBOARD_APP_QUERIES, ids=[t for t, _ in DASHBOARD_APP_QUERIES])
def test_dashboard_query_returns_data(prometheus, title, expr):
    check_selectors(prometheus, expr)
    result = prometheus.query(obs.substitute(expr))
    assert result, f"panel {title!r}: no data for {obs.substitute(expr)}"


@pytest.mark.parametrize("alert,expr", ALERT_APP_QUERIES, ids=[a for a, _ in ALERT_APP_QUERIES])
def test_alert_metrics_exist(prometheus, alert, expr):
    """The alert's series exist in real data (whether it fires is up to the thresholds)."""
    check_selectors(prometheus, expr)
    prometheus.query(expr)  # evaluates without error


def test_rules_evaluate_without_errors(prometheus):
    rules = [rule for group in prometheus.get("/api/v1/rules")["groups"] for rule in group["rules"]]
    assert len(rules) == len(obs.alert_rules())
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_dead_letter_alert_fires_on_real_dead_letter(prometheus):
    alerts = prometheus.wait_for('ALERTS{alertname="NatsqDeadLetters", alertstate="firing"}', timeout=10)
    assert {a["metric"]["queue"] for a in alerts} == {"default"}


def test_quiet_alerts_stay_quiet(prometheus):
    """A healthy stack: no 5xx, workers consuming, backlog small."""
    firing = {a["labels"]["alertname"] for a in prometheus.get("/api/v1/alerts")["alerts"]}
    assert not firing & {"NatsqGatewayErrorRatio", "NatsqNoWorkerConsuming", "NatsqBacklogGrowing"}


RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def test_logs_feed_the_alloy_pipeline(prometheus):
    """What loki/config.alloy expects of every gateway and worker line: a JSON object with
    `level`, a `ts` its RFC3339Nano timestamp stage parses, and `task_id` on task lines."""
    entries = []
    for service in prometheus.stack.services:
        for line in service.output().splitlines():
            if line.startswith("{"):
                entries.append(json.loads(line))
    assert entries, "no JSON log lines"
    for entry in entries:
        assert entry["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, entry
        assert RFC3339.fullmatch(entry["ts"]), entry
    by_task = {}
    for entry in entries:
        by_task.setdefault(entry.get("task_id"), []).append(entry)
    dead = prometheus.task_ids["dead"]
    assert dead in by_task, "no log line carries the dead-lettered task's task_id"
    assert any(entry["level"] in {"WARNING", "ERROR"} for entry in by_task[dead])
