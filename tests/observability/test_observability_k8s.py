"""The kustomize component: renders, lands in natsq-monitoring, and is used by the overlays."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

import observability_support as obs

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize) not installed")
OVERLAYS = ("staging", "prod")

# The parts of the PrometheusRule CRD (monitoring.coreos.com/v1) the rules use.
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": "string"},
                                        "for": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                                        "keep_firing_for": {"type": "string"},
                                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                                    },
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


def render(directory: Path) -> list[dict]:
    result = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_component(tmp_path: Path) -> list[dict]:
    # A Component cannot be built alone: wrap it in a throwaway Kustomization.
    relative = os.path.relpath(obs.COMPONENT, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"components:\n  - {relative}\n"
    )
    return render(tmp_path)


def ours(documents: list[dict]) -> dict[tuple[str, str], dict]:
    wanted = {("PrometheusRule", "natsq"), ("ConfigMap", "natsq-dashboards")}
    return {
        (doc["kind"], doc["metadata"]["name"]): doc
        for doc in documents
        if (doc["kind"], doc["metadata"]["name"]) in wanted
    }


def test_component_is_a_kustomize_component():
    kustomization = yaml.safe_load((obs.COMPONENT / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert kustomization["kind"] == "Component"


def test_prometheus_rule_matches_crd_schema():
    resource = yaml.safe_load((obs.COMPONENT / "prometheusrule.yaml").read_text())
    jsonschema.validate(resource, PROMETHEUS_RULE_SCHEMA)


def check_rendered(objects: dict[tuple[str, str], dict]) -> None:
    assert len(objects) == 2, sorted(objects)
    for doc in objects.values():
        assert doc["metadata"]["namespace"] == "natsq-monitoring"
    rule = objects[("PrometheusRule", "natsq")]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboards = objects[("ConfigMap", "natsq-dashboards")]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dashboards["data"]["natsq-overview.json"])
    assert board == json.loads((obs.ROOT / "grafana" / "natsq-overview.json").read_text())


@needs_kubectl
def test_component_renders(tmp_path):
    check_rendered(ours(render_component(tmp_path)))


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_includes_component(overlay):
    directory = obs.ROOT / "k8s" / "overlays" / overlay
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert "../../components/observability" in kustomization.get("components", [])
    check_rendered(ours(render(directory)))
