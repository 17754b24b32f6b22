"""The one install path of the monitoring stack, rendered as a whole: every metric a dashboard
panel or an alert queries has a scrape target that Prometheus is configured and allowed to reach.

Offline, "rendered" means: the staging and prod overlays through kustomize (monitors, network
policies), the kube-prometheus-stack values Terraform installs the chart with, and the
natsq-platform chart's namespace and Prometheus egress policy (plain YAML, no templating in
them). The chart itself and Prometheus' generated scrape config need helm and the registry:
they are not rendered here.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

import observability_support as obs

ADDONS = obs.ROOT / "terraform" / "modules" / "cluster-addons"
PLATFORM_MONITORING = ADDONS / "charts" / "natsq-platform" / "templates" / "monitoring.yaml"
KPS_VALUES = obs.ROOT / "grafana" / "kube-prometheus-stack-values.yaml"
KUBECTL = shutil.which("kubectl")
MONITORING = "monitoring"
OVERLAYS = ("staging", "prod")

# Where each metric family is scraped: (monitor kind, namespace, name, container port), or a
# target of kube-prometheus-stack itself: (values key, port Prometheus must reach or None when it
# runs inside namespace monitoring). Longest prefix wins; a metric matching none fails the test.
SCRAPE_TARGETS = {
    "natsq_task_queue_wait_": ("PodMonitor", "natsq", "natsq-worker", 9191),
    "natsq_": ("ServiceMonitor", "natsq", "natsq-gateway", 8000),
    "dramatiq_": ("PodMonitor", "natsq", "natsq-worker", 9191),
    "nats_": ("PodMonitor", "natsq-data", "nats", 7777),
    "redis_": ("PodMonitor", "natsq-data", "valkey", 9121),
    "container_": ("kubelet cAdvisor", 10250),
    "kube_": ("kubeStateMetrics", None),
}


def render(overlay: str) -> list[dict]:
    result = subprocess.run([KUBECTL, "kustomize", str(obs.ROOT / "k8s" / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def queried_metrics() -> set[str]:
    exprs = [e for _, e in obs.dashboards.prometheus_queries()] + [e for _, e in obs.alert_queries()]
    return {name for expr in exprs for name in obs.metric_names(expr) if name != "ALERTS"}


def target_of(metric: str):
    matches = [prefix for prefix in SCRAPE_TARGETS if metric.startswith(prefix)]
    assert matches, f"{metric}: no known scrape target (add it to SCRAPE_TARGETS and to the stack)"
    return SCRAPE_TARGETS[max(matches, key=len)]


def platform_documents() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(PLATFORM_MONITORING.read_text()) if doc}


def prometheus_egress_allows(port: int, namespace: str | None) -> bool:
    policy = platform_documents()["NetworkPolicy"]
    assert policy["metadata"]["namespace"] == MONITORING
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    for rule in policy["spec"]["egress"]:
        ports = {p["port"] for p in rule.get("ports", [])}
        peers = rule.get("to")
        if port not in ports:
            continue
        if peers is None:
            return True  # any destination (nodes, API server)
        for peer in peers:
            if peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == namespace:
                return True
    return False


def ingress_from_monitoring_allows(documents: list[dict], namespace: str, port: int) -> bool:
    for policy in documents:
        if policy["kind"] != "NetworkPolicy" or policy["metadata"].get("namespace") != namespace:
            continue
        for rule in policy["spec"].get("ingress", []):
            from_monitoring = any(
                peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == MONITORING
                and peer.get("podSelector") == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
                for peer in rule.get("from", [])
            )
            if from_monitoring and port in {p["port"] for p in rule.get("ports", [])}:
                return True
    return False


def container_port(documents: list[dict], namespace: str, port_name: str, selector: dict) -> int | None:
    for doc in documents:
        if doc["kind"] not in ("Deployment", "StatefulSet") or doc["metadata"].get("namespace") != namespace:
            continue
        labels = doc["spec"]["template"]["metadata"]["labels"]
        if selector["matchLabels"].items() <= labels.items():
            for container in doc["spec"]["template"]["spec"]["containers"]:
                for port in container.get("ports", []):
                    if port.get("name") == port_name:
                        return port["containerPort"]
    return None


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize) not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_queried_metric_has_a_reachable_scrape_target(overlay):
    documents = render(overlay)
    values = yaml.safe_load(KPS_VALUES.read_text())
    metrics = queried_metrics()
    assert {"natsq_task_queue_wait_seconds_bucket", "container_cpu_usage_seconds_total"} <= metrics
    for metric in sorted(metrics):
        target = target_of(metric)
        if target[0] == "kubelet cAdvisor":
            assert values["kubelet"]["enabled"] and values["kubelet"]["serviceMonitor"]["cAdvisor"], metric
            assert prometheus_egress_allows(target[1], None), f"{metric}: Prometheus may not reach the kubelets"
            continue
        if target[0] == "kubeStateMetrics":
            assert values["kubeStateMetrics"]["enabled"], metric
            continue
        kind, namespace, name, port = target
        monitor = next((d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name
                        and d["metadata"]["namespace"] == namespace), None)
        assert monitor is not None, f"{metric}: {overlay} renders no {kind} {namespace}/{name}"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        endpoints = monitor["spec"].get("endpoints") or monitor["spec"]["podMetricsEndpoints"]
        ports = {container_port(documents, namespace, e["port"], monitor["spec"]["selector"]) for e in endpoints}
        if kind == "ServiceMonitor":  # the Service's port name resolves to the container's
            service = next(d for d in documents if d["kind"] == "Service" and d["metadata"]["name"] == name)
            ports = {container_port(documents, namespace, p["targetPort"], monitor["spec"]["selector"])
                     for p in service["spec"]["ports"] if p["name"] in {e["port"] for e in endpoints}}
        assert port in ports, f"{metric}: {kind} {name} scrapes {ports}, not {port}"
        assert prometheus_egress_allows(port, namespace), f"{metric}: Prometheus egress to {namespace}:{port}"
        assert ingress_from_monitoring_allows(documents, namespace, port), f"{metric}: ingress {namespace}:{port}"


def test_prometheus_may_reach_the_api_server_and_node_exporter():
    for port in (443, 6443, 9100):
        assert prometheus_egress_allows(port, None), port


def test_the_monitoring_namespace_admits_node_exporter():
    namespace = platform_documents()["Namespace"]
    assert namespace["metadata"]["name"] == MONITORING
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert yaml.safe_load(KPS_VALUES.read_text())["nodeExporter"]["enabled"] is True


def test_terraform_is_the_one_install_path_with_the_repository_values():
    main = (ADDONS / "main.tf").read_text()
    assert re.search(r'monitoring_namespace\s*=\s*"monitoring"', main)
    releases = dict(re.findall(r'resource "helm_release" "(\w+)" \{(.*?)\n\}', main, re.S))
    for name in ("kube_prometheus_stack", "loki", "alloy"):
        assert re.search(r"namespace\s*=\s*local.monitoring_namespace", releases[name]), name
        assert f"local.monitoring_values.{name}" in releases[name], f"{name} ignores its values file"
        assert "create_namespace" not in releases[name], f"{name}: the platform chart owns the namespace"
    files = dict(re.findall(r'(\w+)\s*=\s*file\("\$\{local\.repo_root\}/([^"]+)"\)', main))
    assert files == {
        "kube_prometheus_stack": "grafana/kube-prometheus-stack-values.yaml",
        "loki": "loki/values.yaml",
        "alloy": "loki/alloy-values.yaml",
        "alloy_config": "loki/config.alloy",
    }
    assert all((obs.ROOT / path).is_file() for path in files.values())
    assert re.search(r'repo_root\s*=\s*"\$\{path.module\}/../../.."', main)
    # The Loki URL Grafana and Alloy use is that release's Service in that namespace.
    datasource = yaml.safe_load(KPS_VALUES.read_text())["grafana"]["additionalDataSources"][0]
    assert datasource["url"] == "http://loki.monitoring.svc.cluster.local:3100"
    assert '"http://loki.monitoring.svc.cluster.local:3100/loki/api/v1/push"' in (obs.ROOT / "loki" / "config.alloy").read_text()
    # No second, manual path in the docs.
    assert "helm upgrade --install" not in obs.DOCS.read_text()


def test_the_one_alloy_pipeline_keeps_task_id_as_structured_metadata():
    pipelines = [p for pattern in ("*.alloy", "*.river", "*.tftpl") for p in obs.ROOT.rglob(pattern)
                 if ".venv" not in p.parts and "loki.write" in p.read_text()]
    assert pipelines == [obs.ROOT / "loki" / "config.alloy"]
    text = pipelines[0].read_text()
    assert re.search(r"stage\.structured_metadata\s*\{\s*values\s*=\s*\{\s*task_id\s*=", text)
