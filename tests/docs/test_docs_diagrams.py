"""architecture/diagrams.png is a real picture rendered from the committed diagrams.dot."""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import subprocess

import pytest

from docs_references import REPO

ARCH = REPO / "architecture"
SOURCE, IMAGE, SIDECAR = ARCH / "diagrams.dot", ARCH / "diagrams.png", ARCH / "diagrams.sha256"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_picture_was_rendered_from_the_current_source():
    recorded = SIDECAR.read_text().split()
    assert recorded[1:] == ["diagrams.dot"], "diagrams.sha256 must name diagrams.dot"
    assert recorded[0] == hashlib.sha256(SOURCE.read_bytes()).hexdigest(), (
        "architecture/diagrams.dot changed since diagrams.png was rendered: run python3 architecture/render.py"
    )


def test_the_picture_is_a_readable_png():
    data = IMAGE.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 800 <= width <= 8000 and 400 <= height <= 8000, f"unexpected size {width}x{height}"
    assert 20_000 < len(data) < 5_000_000
    assert data[-8:-4] == b"IEND", "truncated PNG"


def test_the_source_draws_both_diagrams():
    source = SOURCE.read_text()
    assert re.findall(r"^digraph (\w+)", source, re.M) == ["flow", "network"]
    for must_show in ("natsq-tasks", "natsq-dead", "Nats-Msg-Id", "+WPI", "4222", "6222", "6379", "26379", "natsq-data"):
        assert must_show in source


def test_the_design_document_shows_the_picture():
    assert "](diagrams.png)" in (ARCH / "design.md").read_text()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed (apt-get install graphviz)")
def test_graphviz_accepts_the_source():
    result = subprocess.run(["dot", "-Tcanon", str(SOURCE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_make_diagrams_target_runs_the_renderer():
    makefile = (REPO / "Makefile").read_text()
    match = re.search(r"^diagrams:.*\n((?:\t.*\n?)+)", makefile, re.M)
    assert match is not None, "the Makefile has no `diagrams` target"
    assert "architecture/render.py" in match.group(1)
