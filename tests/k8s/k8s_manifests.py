"""Rendering the Kustomize overlays and walking the rendered objects (used by tests/k8s)."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS_DIR = K8S / "overlays"
ARGOCD_DIR = K8S / "argocd"

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet")
APP_IMAGE = "ghcr.io/natsq/natsq"
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"


def overlay_names() -> list[str]:
    """Every overlay directory under k8s/overlays (whatever the overlays contain gets tested)."""
    return sorted(p.parent.name for p in OVERLAYS_DIR.glob("*/kustomization.yaml"))


def kubectl() -> str | None:
    """kubectl from the venv if the project ships one, else from PATH."""
    candidate = Path(sys.executable).parent / "kubectl"
    if candidate.exists():
        return str(candidate)
    return shutil.which("kubectl")


def render(path: Path) -> list[dict]:
    """`kubectl kustomize PATH` as a list of objects."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECTL_KUSTOMIZE_WARNINGS": "false"},
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def name_of(obj: dict) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']}/{meta.get('namespace', '-')}/{meta['name']}"


def pod_spec(workload: dict) -> dict:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def pod_labels(workload: dict) -> dict:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["metadata"].get("labels", {})


def containers(workload: dict, init: bool = True) -> list[dict]:
    spec = pod_spec(workload)
    found = list(spec.get("containers", []))
    if init:
        found += spec.get("initContainers", [])
    return found


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def resolve_port(port, workload_containers: list[dict]) -> int | None:
    """A container port given by number or by name, or None if no container declares it."""
    for container in workload_containers:
        for declared in container.get("ports", []):
            if port in (declared.get("name"), declared["containerPort"]):
                return declared["containerPort"]
    return None


def probe_port(probe: dict):
    for handler in ("httpGet", "tcpSocket", "grpc"):
        if handler in probe:
            return probe[handler]["port"]
    return None


@dataclass
class Rendered:
    """One rendered overlay."""

    name: str
    objects: list[dict]

    def of_kind(self, *kinds: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] in kinds]

    def workloads(self) -> list[dict]:
        return self.of_kind(*WORKLOAD_KINDS)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        for obj in self.of_kind(kind):
            meta = obj["metadata"]
            if meta["name"] == name and (namespace is None or meta.get("namespace") == namespace):
                return obj
        return None

    def pods_selected(self, namespace: str, selector: dict) -> list[dict]:
        """Workloads in `namespace` whose pod labels match `selector`."""
        return [
            w
            for w in self.workloads()
            if w["metadata"].get("namespace") == namespace and selector_matches(selector, pod_labels(w))
        ]


def app_containers(rendered: "Rendered"):
    """(workload, container) for every container running the natsq image."""
    for workload in rendered.workloads():
        for container in containers(workload):
            if container["image"].split(":")[0].split("@")[0] == APP_IMAGE:
                yield workload, container


def container_env(rendered: "Rendered", container: dict, namespace: str = "natsq") -> dict:
    """A container's environment as rendered: its ConfigMaps (envFrom), then its own `env` values."""
    values = {}
    for source in container.get("envFrom", []):
        values |= rendered.get("ConfigMap", source["configMapRef"]["name"], namespace)["data"]
    return values | {e["name"]: e.get("value") for e in container.get("env", [])}


def run_checkov(args: list[str]) -> list[dict]:
    """checkov's JSON reports (one per framework), or a skip when checkov is not installed."""
    if not CHECKOV.exists():
        pytest.skip(f"checkov is not installed at {CHECKOV} (make venv)")
    result = subprocess.run([str(CHECKOV), "--skip-download", "--output", "json", "--compact", *args],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


def failures(reports: list[dict]) -> list[str]:
    return [f"{f['check_id']} {f['check_name']}: {f['resource']} ({f['file_path']})"
            for report in reports for f in report["results"]["failed_checks"]]
