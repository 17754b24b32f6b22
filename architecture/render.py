"""Render architecture/diagrams.dot (two graphs) to one diagrams.png and record the source's hash.

    python3 architecture/render.py          # needs Graphviz `dot` (Debian: apt-get install graphviz)

tests/docs/test_docs_diagrams.py fails when diagrams.sha256 does not match the source, i.e. when
diagrams.dot was edited without re-rendering the picture.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "diagrams.dot"
IMAGE = HERE / "diagrams.png"
SIDECAR = HERE / "diagrams.sha256"


def source_digest() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def main() -> int:
    tools = {name: shutil.which(name) for name in ("dot", "gvpack", "neato")}
    if not all(tools.values()):
        print("Graphviz is not installed (dot, gvpack, neato): apt-get install graphviz", file=sys.stderr)
        return 1
    # Lay out each graph with dot, stack them in one column with gvpack, draw the result as is.
    laid_out = subprocess.run([tools["dot"], str(SOURCE)], check=True, capture_output=True).stdout
    packed = subprocess.run([tools["gvpack"], "-array_1", "-m", "40"], input=laid_out, check=True,
                            capture_output=True).stdout
    subprocess.run([tools["neato"], "-s", "-n2", "-Gdpi=100", "-Tpng", "-o", str(IMAGE)], input=packed, check=True)
    SIDECAR.write_text(f"{source_digest()}  {SOURCE.name}\n")
    print(f"wrote {IMAGE.relative_to(HERE.parent)} and {SIDECAR.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
