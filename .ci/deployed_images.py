"""The third-party container images natsq's overlays deploy: the release workflow scans each one.

    .venv/bin/python .ci/deployed_images.py            # one image reference per line
    .venv/bin/python .ci/deployed_images.py --json     # a JSON list (a GitHub Actions matrix)

The list is derived from the rendered overlays (`kubectl kustomize k8s/overlays/<each>`), so it
is always what the clusters run: a version or a digest pinned in a kustomization `images:` entry
shows up here as rendered. natsq's own image is left out (the release builds and scans it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "k8s" / "overlays"
APP_IMAGE = "ghcr.io/natsq/natsq"


def pod_specs(document: dict):
    spec = document.get("spec") or {}
    if document.get("kind") == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec.get("template")
    if isinstance(template, dict) and "spec" in template:
        yield template["spec"]


def rendered_images(overlay: Path) -> set[str]:
    rendered = subprocess.run(
        [shutil.which("kubectl") or "kubectl", "kustomize", str(overlay)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    found = set()
    for document in yaml.safe_load_all(rendered.stdout):
        for spec in pod_specs(document or {}):
            for container in spec.get("initContainers", []) + spec.get("containers", []):
                found.add(container["image"])
    return found


def third_party_images() -> list[str]:
    images = set().union(*(rendered_images(k.parent) for k in sorted(OVERLAYS.glob("*/kustomization.yaml"))))
    return sorted(image for image in images if not image.startswith((APP_IMAGE + ":", APP_IMAGE + "@")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    args = parser.parse_args(argv)
    images = third_party_images()
    print(json.dumps(images) if args.json else "\n".join(images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
