"""The two distributions install and run on their own, outside this repository.

- `broker/` builds the `dramatiq-nats` wheel; in a clean venv, another project drains a queue
  with Dramatiq's stock CLI, with nothing of natsq installed.
- The service wheel (`natsq`, from `app/`) claims no generic top-level name.
- The image's install steps (`uv sync --no-editable`, see the Dockerfile) give a venv that runs
  the gateway and the worker modules without the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_until

#: The uv the Makefile installs (`make venv`), pinned there.
UV = ROOT / ".cache" / "uv-tool" / "bin" / "uv"

pytestmark = pytest.mark.timeout(240)


def uv(*args: str, **env: str) -> str:
    assert UV.exists(), f"{UV} is missing: run the tests through `make test`"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_", "PYTHONPATH"))}
    result = subprocess.run([str(UV), *args], env={**clean, **env}, capture_output=True, text=True, timeout=200)
    assert result.returncode == 0, result.stderr
    return result.stdout


def build_wheel(source: Path, out: Path) -> Path:
    uv("build", "--wheel", "--quiet", "--out-dir", str(out), str(source))
    (wheel,) = out.glob("*.whl")
    return wheel


def wheel_metadata(wheel: Path) -> tuple[set[str], list[str]]:
    """Top-level names in the wheel, and its Requires-Dist lines."""
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        metadata_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    return top, metadata.get_all("Requires-Dist") or []


def test_the_broker_wheel_drains_a_queue_with_the_stock_dramatiq_cli_in_a_clean_venv(tmp_path, nats_server, namespace):
    wheel = build_wheel(ROOT / "broker", tmp_path / "dist")
    top, requires = wheel_metadata(wheel)
    assert {name for name in top if not name.endswith(".dist-info")} == {"dramatiq_nats"}
    assert sorted(r.split(">")[0].split("=")[0].split("<")[0].strip() for r in requires) == ["dramatiq", "nats-py"]

    venv = tmp_path / "venv"
    uv("venv", "--quiet", "--python", sys.executable, str(venv))
    python = venv / "bin" / "python"
    uv("pip", "install", "--quiet", "--python", str(python), str(wheel))

    project, done = tmp_path / "shop", tmp_path / "done"
    project.mkdir()
    done.mkdir()
    (project / "shop_tasks.py").write_text(textwrap.dedent("""
        import os
        from pathlib import Path

        import dramatiq
        from dramatiq_nats import NatsBroker

        dramatiq.set_broker(NatsBroker(url=os.environ["NATS_URL"], namespace=os.environ["NAMESPACE"]))

        @dramatiq.actor
        def ship(order: int) -> None:
            (Path(os.environ["DONE_DIR"]) / str(order)).touch()
    """))
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "NATS_URL": nats_server.url, "NAMESPACE": namespace,
           "DONE_DIR": str(done)}
    probe = subprocess.run([str(python), "-c", "import flask"], cwd=project, env=env, capture_output=True)
    assert probe.returncode != 0, "the broker's venv must not contain the service's dependencies"
    subprocess.run([str(python), "-c", "import shop_tasks\nfor i in range(20): shop_tasks.ship.send(i)"],
                   cwd=project, env=env, check=True, timeout=60)

    worker = subprocess.Popen([str(venv / "bin" / "dramatiq"), "shop_tasks", "--processes", "1", "--threads", "2"],
                              cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "worker.log", "w"))
    try:
        wait_until(lambda: len(list(done.iterdir())) == 20, 60, message="the stock worker to run every task")
    finally:
        worker.terminate()
        worker.wait(30)
    assert sorted(int(p.name) for p in done.iterdir()) == list(range(20))


def test_the_service_wheel_claims_only_the_natsq_name(tmp_path):
    wheel = build_wheel(ROOT, tmp_path / "dist")
    top, requires = wheel_metadata(wheel)
    assert {name for name in top if not name.endswith(".dist-info")} == {"natsq"}
    assert any(r.startswith("dramatiq-nats") for r in requires)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "natsq = natsq.cli:main" in entry_points
    # The console's templates and stylesheet travel with the package.
    assert "natsq/templates/console/base.html" in names and "natsq/static/console.css" in names


def test_the_images_install_steps_run_the_service_without_the_source_tree(tmp_path):
    venv = tmp_path / "venv"
    # The Dockerfile's build stage: locked runtime dependencies, then both packages as wheels.
    uv("sync", "--frozen", "--quiet", "--no-dev", "--no-editable", "--project", str(ROOT), UV_PROJECT_ENVIRONMENT=str(venv))
    probe = textwrap.dedent("""
        import natsq.gateway, natsq.worker, dramatiq_nats
        print(natsq.gateway.__file__)
        print(dramatiq_nats.__file__)
    """)
    result = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "NATSQ_ENV": "development"}, timeout=60)
    assert result.returncode == 0, result.stderr
    for path in result.stdout.split():
        assert path.startswith(str(venv)), f"{path} was imported from outside the image's venv"
