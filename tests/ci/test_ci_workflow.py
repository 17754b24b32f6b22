"""The GitHub Actions pipeline: schema-valid, SHA-pinned, least privilege, checkov-clean."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
USES = re.compile(r"^\s*(?:-\s*)?uses:\s*(?P<ref>\S+)(?P<comment>\s+#.*)?$", re.M)


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_every_action_is_pinned_by_full_sha_with_version_comment():
    text = WORKFLOW.read_text()
    refs = list(USES.finditer(text))
    assert refs, "no actions used?"
    for m in refs:
        action, _, ref = m.group("ref").partition("@")
        if action.startswith("./"):
            continue
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{action} is pinned to {ref!r}, not a full commit SHA"
        assert m.group("comment") and re.search(r"#\s*v?\d+\.\d+", m.group("comment")), f"{action}: add '# vX.Y.Z'"


def test_least_privilege_permissions(workflow):
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        perms = job.get("permissions", {})
        assert all(v in ("read", "none") for v in perms.values()), f"job {name} asks for write access: {perms}"


def test_checkouts_do_not_persist_credentials(workflow):
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, f"job {name}"


def test_pipeline_runs_ci_builds_scans_and_renders(workflow):
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    runs = "\n".join(s.get("run", "") for s in steps)
    uses = [s.get("uses", "") for s in steps]
    assert "bash .ci/run" in runs
    assert any(u.startswith("docker/build-push-action@") for u in uses)
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["file"] == "Dockerfile" and build["with"]["push"] is False
    scan = next(s for s in steps if s.get("uses", "").startswith("aquasecurity/trivy-action@"))
    assert scan["with"]["exit-code"] == "1" and scan["with"]["image-ref"] == build["with"]["tags"]
    assert "kubectl kustomize" in runs
    assert all("timeout-minutes" in job for job in workflow["jobs"].values())


def _check_jsonschema() -> str | None:
    local = Path(sys.executable).parent / "check-jsonschema"
    return str(local) if local.exists() else shutil.which("check-jsonschema")


def test_workflow_matches_the_github_schema():
    tool = _check_jsonschema()
    assert tool is not None, "check-jsonschema is missing: run make venv"
    res = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_checkov_github_actions_checks_pass(tmp_path):
    if not CHECKOV.exists():
        pytest.skip(".venv-checkov/bin/checkov missing (run make venv)")
    target = tmp_path / "repo" / ".github" / "workflows"
    target.mkdir(parents=True)
    shutil.copy(WORKFLOW, target)
    res = subprocess.run([str(CHECKOV), "--skip-download", "-d", str(tmp_path / "repo"), "--framework", "github_actions",
                          "-o", "json"], capture_output=True, text=True, timeout=300)
    report = json.loads(res.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c["check_id"] for r in reports for c in r["results"]["failed_checks"]]
    passed = sum(r["summary"]["passed"] for r in reports)
    assert not failed and passed > 0, f"checkov failed: {failed}\n{res.stderr[-2000:]}"
