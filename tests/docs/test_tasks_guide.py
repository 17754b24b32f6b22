"""docs/tasks.md, followed as written: its task module and its client code, against real servers."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from tests.conftest import ROOT, Stack

pytestmark = pytest.mark.timeout(120)

GUIDE = ROOT / "docs" / "tasks.md"


def python_blocks(section: str) -> list[str]:
    text = GUIDE.read_text()
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def test_the_guide_gets_a_task_of_ones_own_running(tmp_path, nats_server, valkey_server):
    module = python_blocks("## 1. A package with a task module")[0].split("# myproj/tasks.py\n", 1)[1]
    package = tmp_path / "project" / "myproj"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(module)

    system = Stack(tmp_path, nats_server.url, valkey_server.url, NATSQ_TASK_MODULES="myproj.tasks",
                   PYTHONPATH=f"{ROOT}:{tmp_path / 'project'}")
    try:
        system.start_gateway()
        system.start_worker()
        client_code = python_blocks("## 3. Submit it and wait for the result")[0]
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(client_code.replace("http://127.0.0.1:8000", system.gateway_url), {})
        assert output.getvalue().strip() == "{'greeting': 'hello Ann', 'times': 3}"
    finally:
        system.stop()
