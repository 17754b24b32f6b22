"""GitOps promotion (.ci/promote.py) on a copy of k8s/: the overlay then renders with the digest."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

PROMOTE = ROOT / ".ci" / "promote.py"
KUBECTL = shutil.which("kubectl")
APP_IMAGE = "ghcr.io/natsq/natsq"
DIGEST = "sha256:" + "0123456789abcdef" * 4
NEXT_DIGEST = "sha256:" + "fedcba9876543210" * 4

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize) not installed")


@pytest.fixture
def k8s(tmp_path):
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    return tmp_path / "k8s"


def promote(overlay, digest: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROMOTE), str(overlay), digest], capture_output=True, text=True, timeout=60)


def images(overlay) -> dict[str, set[str]]:
    """Container image references of the rendered overlay, by workload name."""
    rendered = subprocess.run([KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120, check=True)
    found: dict[str, set[str]] = {}
    for doc in yaml.safe_load_all(rendered.stdout):
        if doc and doc["kind"] in ("Deployment", "StatefulSet"):
            spec = doc["spec"]["template"]["spec"]
            found[doc["metadata"]["name"]] = {c["image"] for c in spec.get("initContainers", []) + spec["containers"]}
    return found


def test_staging_renders_the_promoted_digest_and_nothing_else_changes(k8s):
    before = images(k8s / "overlays" / "staging")
    original = (k8s / "overlays" / "staging" / "kustomization.yaml").read_text()
    result = promote(k8s / "overlays" / "staging", DIGEST)
    assert result.returncode == 0, result.stderr
    assert "0.1.0 -> " + DIGEST in result.stdout

    after = images(k8s / "overlays" / "staging")
    assert after["natsq-gateway"] == after["natsq-worker"] == {f"{APP_IMAGE}@{DIGEST}"}
    assert {k: v for k, v in after.items() if not k.startswith("natsq-")} == {
        k: v for k, v in before.items() if not k.startswith("natsq-")
    }
    # One line changes; comments and everything else stay as written.
    edited = (k8s / "overlays" / "staging" / "kustomization.yaml").read_text()
    changed = [(a, b) for a, b in zip(original.splitlines(), edited.splitlines()) if a != b]
    assert changed == [('    newTag: "0.1.0"', f"    digest: {DIGEST}")]
    # prod is untouched until its own promotion.
    assert images(k8s / "overlays" / "prod")["natsq-gateway"] == {f"{APP_IMAGE}:0.1.0"}


def test_prod_promotion_reaches_every_cloud_overlay(k8s):
    assert promote(k8s / "overlays" / "prod", DIGEST).returncode == 0
    for overlay in ("prod", "prod-aws", "prod-hetzner", "prod-ovh"):
        assert images(k8s / "overlays" / overlay)["natsq-worker"] == {f"{APP_IMAGE}@{DIGEST}"}, overlay


def test_a_second_promotion_replaces_the_first_and_a_revert_restores_it(k8s):
    overlay = k8s / "overlays" / "staging"
    assert promote(overlay, DIGEST).returncode == 0
    first = (overlay / "kustomization.yaml").read_text()
    result = promote(overlay, NEXT_DIGEST)
    assert result.returncode == 0 and f"{DIGEST} -> {NEXT_DIGEST}" in result.stdout
    assert images(overlay)["natsq-gateway"] == {f"{APP_IMAGE}@{NEXT_DIGEST}"}
    # Rolling back is reverting the promotion commit: the previous file renders the previous digest.
    (overlay / "kustomization.yaml").write_text(first)
    assert images(overlay)["natsq-gateway"] == {f"{APP_IMAGE}@{DIGEST}"}


@pytest.mark.parametrize("digest", ["latest", "sha256:abc", "sha256:" + "G" * 64, "0.2.0"])
def test_anything_but_a_digest_is_refused_and_the_file_kept(k8s, digest):
    path = k8s / "overlays" / "staging" / "kustomization.yaml"
    original = path.read_text()
    result = promote(path.parent, digest)
    assert result.returncode == 1 and "not an image digest" in result.stderr
    assert path.read_text() == original
