"""The scripts under .ci/ and the Makefile's behaviour on a hosted runner (not root)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

BIN = Path(sys.executable).parent
SHELL_SCRIPTS = sorted((ROOT / ".ci").glob("*.sh")) + [ROOT / ".ci" / "run"]


def test_shell_scripts_pass_shellcheck():
    res = subprocess.run([str(BIN / "shellcheck"), *map(str, SHELL_SCRIPTS)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def make_dry_run(tmp_path: Path, uid: int, **variables: str) -> str:
    """`make -n system-tools` as user ``uid`` (a stand-in `id` first on PATH)."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (fake / "id").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin"}
    args = [f"{k}={v}" for k, v in variables.items()]
    res = subprocess.run(["make", "-n", "system-tools", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_makefile_installs_missing_tools_through_sudo_when_not_root(tmp_path):
    commands = make_dry_run(tmp_path, 1001, SYSTEM_TOOLS_MISSING="prometheus")
    assert "sudo apt-get update" in commands
    assert "sudo env DEBIAN_FRONTEND=noninteractive apt-get install" in commands and "prometheus" in commands


def test_makefile_installs_directly_as_root_and_nothing_when_present(tmp_path):
    as_root = make_dry_run(tmp_path, 0, SYSTEM_TOOLS_MISSING="graphviz")
    assert "apt-get install" in as_root and "sudo" not in as_root
    assert "apt-get" not in make_dry_run(tmp_path, 1001, SYSTEM_TOOLS_MISSING="")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")
def test_deployed_images_are_the_overlays_third_party_images():
    res = subprocess.run([sys.executable, str(ROOT / ".ci" / "deployed_images.py"), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    listed = json.loads(res.stdout)
    # Independently: every image the base kustomizations set (name:newTag or name@digest).
    expected = set()
    for path in (ROOT / "k8s" / "base").glob("*/kustomization.yaml"):
        for image in yaml.safe_load(path.read_text()).get("images", []):
            if image["name"] != "ghcr.io/natsq/natsq":
                ref = image.get("newName", image["name"])
                expected.add(f"{ref}@{image['digest']}" if "digest" in image else f"{ref}:{image['newTag']}")
    assert expected and set(listed) == expected
    assert listed == sorted(listed)
