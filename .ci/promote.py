"""Point an overlay at one image digest: the GitOps promotion step of the release workflow.

    .venv/bin/python .ci/promote.py k8s/overlays/staging sha256:<64 hex>
    .venv/bin/python .ci/promote.py k8s/overlays/prod sha256:<64 hex> [--image ghcr.io/natsq/natsq]

Sets the overlay's kustomize `images:` entry for the image to the digest (the same edit as
`kustomize edit set image ghcr.io/natsq/natsq@sha256:...`, without needing the kustomize
binary), keeping the file's comments and every other entry. Argo CD syncs the overlay from Git,
so the commit of this change is the deployment, and reverting that commit is the rollback.
Prints the previous reference; exits 0 whether or not the file changed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ruamel.yaml import YAML

APP_IMAGE = "ghcr.io/natsq/natsq"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def set_image_digest(overlay: Path, image: str, digest: str) -> str | None:
    """Pin ``image`` to ``digest`` in ``overlay``/kustomization.yaml; the reference it had before."""
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"not an image digest: {digest!r} (expected sha256:<64 hex digits>)")
    path = overlay / "kustomization.yaml"
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # a digest stays on its line
    yaml.indent(mapping=2, sequence=4, offset=2)
    document = yaml.load(path.read_text())
    images = document.setdefault("images", [])
    entry = next((e for e in images if e.get("name") == image), None)
    if entry is None:
        entry = {"name": image}
        images.append(entry)
    previous = entry.get("digest") or entry.get("newTag")
    # A digest names the content exactly; a tag left next to it would only mislead.
    for key in ("newTag", "newName"):
        entry.pop(key, None)
    entry["digest"] = digest
    with path.open("w") as out:
        yaml.dump(document, out)
    return previous


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overlay", type=Path, help="overlay directory, e.g. k8s/overlays/staging")
    parser.add_argument("digest", help="sha256:<64 hex digits>, as pushed to the registry")
    parser.add_argument("--image", default=APP_IMAGE, help=f"image name in the manifests (default {APP_IMAGE})")
    args = parser.parse_args(argv)
    try:
        previous = set_image_digest(args.overlay, args.image, args.digest)
    except (ValueError, OSError) as e:
        print(f"promote: {e}", file=sys.stderr)
        return 1
    print(f"{args.overlay}: {args.image} {previous or '(base tag)'} -> {args.digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
