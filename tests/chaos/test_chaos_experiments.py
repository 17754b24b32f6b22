"""The Chaos Mesh experiments in chaos/ are well-formed and aim at pods the prod overlay runs."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from chaos_schema import SCHEMAS

REPO = Path(__file__).resolve().parents[2]
CHAOS = REPO / "chaos"
EXPERIMENTS = sorted(CHAOS.glob("*.yaml"))
WORKLOADS = ("Deployment", "StatefulSet")


def load(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, f"{path.name}: one experiment per file"
    return docs[0]


@pytest.fixture(scope="module")
def prod_pods() -> list[dict]:
    """Every pod the prod overlay would run: namespace, name (StatefulSets) and labels."""
    kubectl = Path(sys.executable).parent / "kubectl"
    kubectl = str(kubectl) if kubectl.exists() else shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    result = subprocess.run([kubectl, "kustomize", str(REPO / "k8s" / "overlays" / "prod")], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "KUBECTL_KUSTOMIZE_WARNINGS": "false"})
    assert result.returncode == 0, result.stderr
    pods = []
    for obj in yaml.safe_load_all(result.stdout):
        if not obj or obj["kind"] not in WORKLOADS:
            continue
        meta, template = obj["metadata"], obj["spec"]["template"]
        names = ([f"{meta['name']}-{i}" for i in range(obj["spec"].get("replicas", 1))]
                 if obj["kind"] == "StatefulSet" else [None])
        for name in names:
            pods.append({"namespace": meta["namespace"], "name": name, "labels": template["metadata"]["labels"],
                         "workload": f"{obj['kind']}/{meta['name']}"})
    return pods


def selected(selector: dict, pods: list[dict]) -> list[dict]:
    """Chaos Mesh PodSelectorSpec semantics for the fields we use (all must match)."""
    chosen = []
    for pod in pods:
        if pod["namespace"] not in selector["namespaces"]:
            continue
        if any(pod["labels"].get(k) != v for k, v in selector.get("labelSelectors", {}).items()):
            continue
        named = selector.get("pods")
        if named is not None and pod["name"] not in named.get(pod["namespace"], []):
            continue
        chosen.append(pod)
    return chosen


def test_the_five_experiments_exist():
    kinds = sorted((load(p)["kind"], load(p)["spec"]["action"]) for p in EXPERIMENTS)
    assert kinds == [("NetworkChaos", "netem"), ("NetworkChaos", "partition"), ("PodChaos", "pod-kill"),
                     ("PodChaos", "pod-kill"), ("PodChaos", "pod-kill")]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_matches_the_schema(path):
    experiment = load(path)
    assert experiment.get("kind") in SCHEMAS, f"{path.name}: no schema for kind {experiment.get('kind')!r}"
    jsonschema.validate(experiment, SCHEMAS[experiment["kind"]])


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_selectors_match_pods_of_the_prod_overlay(path, prod_pods):
    experiment = load(path)
    spec = experiment["spec"]
    selectors = [("selector", spec["selector"])]
    if "target" in spec:
        selectors.append(("target.selector", spec["target"]["selector"]))
    for where, selector in selectors:
        pods = selected(selector, prod_pods)
        assert pods, f"{path.name}: {where} matches no pod of k8s/overlays/prod"
        assert len({p["workload"] for p in pods}) == 1, f"{path.name}: {where} spans several workloads: {pods}"
        for namespace, names in (selector.get("pods") or {}).items():
            known = {p["name"] for p in prod_pods if p["namespace"] == namespace}
            assert set(names) <= known, f"{path.name}: pods {set(names) - known} do not exist in {namespace}"
    # The experiment lives with its targets (Chaos Mesh's namespace filter and RBAC are per namespace).
    assert spec["selector"]["namespaces"] == [experiment["metadata"]["namespace"]]


def test_the_aims_are_the_ones_the_readme_describes(prod_pods):
    aims = {path.name: {p["workload"] for p in selected(load(path)["spec"]["selector"], prod_pods)}
            for path in EXPERIMENTS}
    assert aims == {
        "worker-pod-kill.yaml": {"Deployment/natsq-worker"},
        "nats-pod-kill.yaml": {"StatefulSet/nats"},
        "nats-network-partition.yaml": {"StatefulSet/nats"},
        "valkey-primary-kill.yaml": {"StatefulSet/valkey"},
        "worker-nats-latency.yaml": {"Deployment/natsq-worker"},
    }
    latency = load(CHAOS / "worker-nats-latency.yaml")["spec"]
    assert {p["workload"] for p in selected(latency["target"]["selector"], prod_pods)} == {"StatefulSet/nats"}
    # The local latency-loss scenario of `make chaos` injects the same: 100 ms +- 20 ms, 5 % loss.
    assert (latency["delay"]["latency"], latency["delay"]["jitter"], latency["loss"]["loss"]) == ("100ms", "20ms", "5")
    partition = load(CHAOS / "nats-network-partition.yaml")["spec"]
    assert partition["mode"] == "one" and partition["direction"] == "both" and partition["target"]["mode"] == "all"


def test_the_schema_rejects_typos_and_wrong_targets(prod_pods):
    good = load(CHAOS / "worker-pod-kill.yaml")
    typo = copy.deepcopy(good)
    typo["spec"]["gracePeriods"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, SCHEMAS["PodChaos"])
    elsewhere = copy.deepcopy(good)
    elsewhere["spec"]["selector"]["namespaces"] = ["default"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(elsewhere, SCHEMAS["PodChaos"])
    wrong_label = copy.deepcopy(good)
    wrong_label["spec"]["selector"]["labelSelectors"]["app.kubernetes.io/component"] = "workers"
    assert selected(wrong_label["spec"]["selector"], prod_pods) == []


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_the_readme_describes_every_experiment(path):
    assert f"`chaos/{path.name}`" in (CHAOS / "README.md").read_text()


def test_the_loss_check_finds_no_loss_on_a_healthy_stack(stack):
    result = subprocess.run(
        [sys.executable, str(CHAOS / "check_loss.py"), "--url", stack.gateway_url, "--tasks", "20",
         "--seconds", "0", "--rate", "200", "--timeout", "60"],
        capture_output=True, text=True, timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "20 accepted (202)" in result.stdout and "succeeded 20, dead-lettered 0, unfinished 0" in result.stdout
    assert "no task lost" in result.stdout


WORKFLOW = CHAOS / "workflow" / "natsq-chaos-set.yaml"


def test_the_workflow_matches_the_schema():
    jsonschema.validate(load(WORKFLOW), SCHEMAS["Workflow"])


def test_the_workflow_runs_every_experiment_as_its_file_says():
    spec = load(WORKFLOW)["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    entry = templates[spec["entry"]]
    assert entry["templateType"] == "Serial" and set(entry["children"]) <= set(templates)
    steps = [templates[name] for name in entry["children"] if templates[name]["templateType"] != "Suspend"]
    assert [step["name"] for step in steps] == [
        "worker-pod-kill", "nats-pod-kill", "nats-network-partition", "valkey-primary-kill", "worker-nats-latency"]
    assert {f"{step['name']}.yaml" for step in steps} == {p.name for p in EXPERIMENTS}
    for step in steps:
        experiment = load(CHAOS / f"{step['name']}.yaml")
        field = {"PodChaos": "podChaos", "NetworkChaos": "networkChaos"}[experiment["kind"]]
        assert step["templateType"] == experiment["kind"]
        assert step[field] == experiment["spec"], f"{step['name']} differs from chaos/{step['name']}.yaml"
        assert step["deadline"] == experiment["spec"].get("duration", step["deadline"])


def test_the_workflow_schema_rejects_a_typo_in_a_step():
    broken = load(WORKFLOW)
    step = next(t for t in broken["spec"]["templates"] if t["templateType"] == "NetworkChaos")
    step["networkChaos"]["delay"] = {"latency": "100ms", "jiter": "20ms"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMAS["Workflow"])
    missing = load(WORKFLOW)
    del next(t for t in missing["spec"]["templates"] if t["templateType"] == "PodChaos")["podChaos"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(missing, SCHEMAS["Workflow"])


def test_the_cluster_runner_applies_the_set_checks_loss_and_cleans_up(stack, tmp_path):
    """chaos/run-in-cluster.sh against the local stack. No cluster here: a stand-in for kubectl
    records the calls (and answers the Sentinel query); the loss check runs for real."""
    calls = tmp_path / "kubectl-calls"
    fake = tmp_path / "kubectl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\ncase "$*" in *get-master-addr*) echo valkey-2.valkey;; '
                    f'apply*) cat > {tmp_path}/applied.yaml;; esac\n')
    fake.chmod(0o755)
    result = subprocess.run(
        ["bash", str(CHAOS / "run-in-cluster.sh")], capture_output=True, text=True, timeout=120,
        env={**os.environ, "KUBECTL": str(fake), "GATEWAY_URL": stack.gateway_url, "TASKS": "10", "RATE": "50"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no task lost" in result.stdout
    lines = calls.read_text().splitlines()
    assert lines[0] == "annotate ns natsq natsq-data chaos-mesh.org/inject=enabled --overwrite"
    assert lines[-2:] == [f"delete -f {CHAOS}/workflow/natsq-chaos-set.yaml --ignore-not-found",
                          "annotate ns natsq natsq-data chaos-mesh.org/inject-"]
    applied = yaml.safe_load((tmp_path / "applied.yaml").read_text())
    valkey_step = next(t for t in applied["spec"]["templates"] if t["name"] == "valkey-primary-kill")
    assert valkey_step["podChaos"]["selector"]["pods"] == {"natsq-data": ["valkey-2"]}
