"""Terraform and k8s/ together: one owner per object, one ClusterSecretStore name, and the root
Application (terraform/modules/argocd-bootstrap) carrying the NATS fleet values into the overlay
the way Argo CD applies them (kustomize patches), checked by rendering k8s/ offline."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tfhelpers import REPO, TERRAFORM_DIR

ADDONS = TERRAFORM_DIR / "modules" / "cluster-addons"
CHART = ADDONS / "charts" / "natsq-platform"
K8S = REPO / "k8s"
NATSQ_NAMESPACES = {"natsq", "natsq-data", "natsq-monitoring"}


def _k8s_documents():
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                yield path, doc


def test_one_cluster_secret_store_name():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    name = values["secretStore"]["name"]
    main = (ADDONS / "main.tf").read_text()
    assert re.search(rf'secret_store_name\s*=\s*"{re.escape(name)}"', main), "cluster-addons passes another name"
    template = (CHART / "templates" / "clustersecretstore.yaml").read_text()
    assert "name: {{ required \"secretStore.name\" .Values.secretStore.name }}" in template
    referenced = {doc["spec"]["secretStoreRef"]["name"] for _, doc in _k8s_documents()
                  if doc.get("kind") == "ExternalSecret"}
    assert referenced == {name}, f"k8s/ references {referenced}, Terraform creates {name}"
    # Only Terraform creates it; every namespace with natsq ExternalSecrets may use it.
    assert not [p for p, doc in _k8s_documents() if doc.get("kind") in ("ClusterSecretStore", "SecretStore")]
    namespaces = {doc["metadata"]["namespace"] for _, doc in _k8s_documents() if doc.get("kind") == "ExternalSecret"}
    assert namespaces <= set(values["secretStore"]["namespaces"])


def test_one_internal_ca_issuer_name():
    """k8s/components/tls's Certificates are signed by the CA ClusterIssuer Terraform creates."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    template = (CHART / "templates" / "internal-ca.yaml").read_text()
    assert 'name: {{ required "internalCa.issuerName" .Values.internalCa.issuerName }}' in template
    issuers = {(doc["spec"]["issuerRef"]["kind"], doc["spec"]["issuerRef"]["name"])
               for _, doc in _k8s_documents() if doc.get("kind") == "Certificate"}
    assert issuers == {("ClusterIssuer", values["internalCa"]["issuerName"])}
    # The issuers belong to the cluster: no overlay ships one.
    assert not [p for p, doc in _k8s_documents() if doc.get("kind") in ("Issuer", "ClusterIssuer")]


def test_terraform_creates_nothing_in_the_natsq_namespaces():
    """k8s/base/namespaces owns the natsq Namespaces; Argo CD deploys everything inside them."""
    k8s_namespaces = {doc["metadata"]["name"] for _, doc in _k8s_documents() if doc.get("kind") == "Namespace"}
    assert NATSQ_NAMESPACES <= k8s_namespaces
    for tf in sorted(TERRAFORM_DIR.rglob("*.tf")):
        if ".terraform" in tf.parts:
            continue
        text = tf.read_text()
        assert "CreateNamespace=true" not in text, f"{tf}: Argo CD must not create the natsq namespaces"
        for namespace in re.findall(r'^\s*namespace\s*=\s*"([^"]+)"', text, re.M):
            assert namespace not in NATSQ_NAMESPACES, f"{tf}: Terraform puts something into {namespace}"
    for template in sorted((CHART / "templates").glob("*.yaml")):
        text = template.read_text()
        assert not re.search(r"^\s*namespace:\s*(natsq|natsq-data|natsq-monitoring)\s*$", text, re.M), template
        assert "appNamespace" not in text, template


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    return kubectl


def _render_with_patches(kubectl: str, directory: Path, patches: list[dict]) -> list[dict]:
    """What Argo CD does with spec.source.kustomize.patches: add them to the kustomization, build."""
    kustomization = directory / "kustomization.yaml"
    doc = yaml.safe_load(kustomization.read_text())
    doc["patches"] = [*doc.get("patches", []), *patches]
    kustomization.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _bootstrap_outputs(tf_copy, conf: str) -> dict:
    tf = tf_copy(".")
    root = tf.workdir / "harness-bootstrap"
    root.mkdir()
    (root / "main.tf").write_text(f"""
module "bootstrap" {{
  source               = "../modules/argocd-bootstrap"
  repo_url             = "https://git.example.com/fork/natsq.git"
  target_revision      = "release-7"
  overlay              = "prod-aws"
  nats_cluster_name    = "aws-euc1"
  nats_multicloud_conf = {json.dumps(conf)}
}}
output "root" {{ value = module.bootstrap.root_application }}
""")
    tf.workdir = root
    tf.ok("init", "-backend=false", "-input=false")
    tf.ok("apply", "-auto-approve", "-input=false")
    return json.loads(tf.ok("output", "-json", "root"))


@pytest.mark.parametrize("joins_fleet", [True, False], ids=["fleet", "single"])
def test_root_application_carries_the_fleet_values_into_the_overlay(tf_copy, tmp_path, joins_fleet):
    kubectl = _kubectl()
    conf = 'gateway {\n  name: "aws-euc1"\n  port: 7222\n}\n' if joins_fleet else ""
    root = _bootstrap_outputs(tf_copy, conf)
    source = root["source"]
    assert source["path"] == "k8s/argocd/prod-aws"
    assert "CreateNamespace=true" not in root["syncPolicy"].get("syncOptions", [])
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S, k8s)

    # Argo CD renders the root from k8s/argocd/prod-aws with the root's patches.
    argocd = _render_with_patches(kubectl, k8s / "argocd" / "prod-aws", source["kustomize"]["patches"])
    child = next(o for o in argocd if o["kind"] == "Application")
    project = next(o for o in argocd if o["kind"] == "AppProject")
    assert child["metadata"]["name"] == "natsq-prod-aws"
    assert child["spec"]["source"]["repoURL"] == project["spec"]["sourceRepos"][0] == "https://git.example.com/fork/natsq.git"
    assert child["spec"]["source"]["targetRevision"] == "release-7"
    assert child["spec"]["source"]["path"] == "k8s/overlays/prod-aws"

    # ... then the child from k8s/overlays/prod-aws with its own patches.
    objects = _render_with_patches(kubectl, k8s / "overlays" / "prod-aws",
                                   child["spec"]["source"].get("kustomize", {}).get("patches", []))
    nats = next(o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "nats")
    volume = next(v for v in nats["spec"]["template"]["spec"]["volumes"] if v["name"] == "multicloud")
    configmap = next(o for o in objects if o["kind"] == "ConfigMap"
                     and o["metadata"]["name"] == volume["configMap"]["name"])
    assert configmap["metadata"]["namespace"] == "natsq-data"
    if joins_fleet:
        assert configmap["data"] == {"multicloud.conf": conf, "cluster-name": "aws-euc1",
                                     "server-name-prefix": "aws-euc1-"}
    else:
        assert configmap["data"]["cluster-name"] == "natsq" and configmap["data"]["server-name-prefix"] == ""
        assert "gateway" not in configmap["data"]["multicloud.conf"]
    assert not [o for o in objects if o["kind"] == "ClusterSecretStore"]
