"""Alert rules and every PromQL expression, checked with promtool."""

from __future__ import annotations

import pytest
import yaml

import observability_support as obs

needs_promtool = pytest.mark.skipif(obs.PROMTOOL is None, reason=obs.NO_PROMTOOL)

REQUIRED_ALERTS = {
    "NatsqBacklogGrowing",  # backlog growing
    "NatsqDeadLetters",  # dead letters appearing
    "NatsqNoWorkerConsuming",  # no worker consuming
    "NatsqGatewayErrorRatio",  # gateway 5xx ratio
    "NatsqJetStreamStorageNearlyFull",  # JetStream storage nearly full
    "NatsqValkeyReplicationBroken",  # Valkey replication broken
    "NatsqValkeyMemoryNearlyFull",  # Valkey (noeviction) about to refuse writes
    "NatsqNatsClusterDegraded",  # NATS cluster degraded
}
RUNBOOK_PREFIX = "https://github.com/natsq/natsq/blob/main/docs/observability.md#"


def test_required_alerts_exist():
    assert {rule["alert"] for rule in obs.alert_rules()} == REQUIRED_ALERTS


@pytest.mark.parametrize("rule", obs.alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_has_runbook_anchor_severity_and_summary(rule):
    anchors = obs.github_anchors(obs.DOCS.read_text())
    url = rule["annotations"]["runbook_url"]
    assert url.startswith(RUNBOOK_PREFIX), url
    assert url.removeprefix(RUNBOOK_PREFIX) in anchors, f"no heading for {url} in docs/observability.md"
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_prometheusrule_carries_exactly_the_rules_file():
    """Kubernetes and promtool must see the same rules (generate.py derives one from the other)."""
    resource = yaml.safe_load((obs.COMPONENT / "prometheusrule.yaml").read_text())
    assert resource["kind"] == "PrometheusRule"
    assert resource["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert resource["spec"]["groups"] == yaml.safe_load(obs.ALERTS.read_text())["groups"]


def test_every_alert_has_a_promtool_unit_test():
    tests = yaml.safe_load((obs.ROOT / "tests/observability/alerts_test.yaml").read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert firing == REQUIRED_ALERTS


@needs_promtool
def test_promtool_check_rules():
    result = obs.promtool("check", "rules", str(obs.ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_test_rules():
    result = obs.promtool("test", "rules", "alerts_test.yaml", cwd=obs.ROOT / "tests/observability")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_dashboard_and_alert_expression_parses(tmp_path):
    named = [(title, obs.substitute(expr)) for title, expr in obs.dashboards.prometheus_queries()]
    named += obs.alert_queries()
    result = obs.check_exprs_with_promtool(named, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(named)} rules found" in result.stdout


@needs_promtool
def test_a_typo_in_an_expression_fails_the_parse_check(tmp_path):
    """The parse check above is only worth something if promtool rejects bad PromQL."""
    result = obs.check_exprs_with_promtool([("typo", "sum by (queue (natsq_queue_messages)")], tmp_path)
    assert result.returncode != 0


def test_selector_extraction_finds_metrics_not_functions_or_labels():
    expr = (
        'sum by (namespace, queue_name) (rate(dramatiq_messages_total{namespace="natsq"}[5m])) '
        "unless on (namespace) max by (le) (natsq_queue_messages)"
    )
    assert obs.selectors(expr) == [
        ("dramatiq_messages_total", '{namespace="natsq"}'),
        ("natsq_queue_messages", ""),
    ]
