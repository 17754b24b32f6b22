"""Supply chain: every image the overlays run is in k8s/images.yaml (the list the release pipeline
pins by digest), and each carries an explicit version."""

import yaml

from k8s_manifests import K8S, Rendered, containers

PIN_LIST = yaml.safe_load((K8S / "images.yaml").read_text())["images"]


def _images(rendered: Rendered) -> set[str]:
    return {c["image"] for w in rendered.workloads() for c in containers(w)}


def _split(image: str) -> tuple[str, str | None]:
    """(name, tag) of ``registry/name:tag@digest``; the tag is None when there is none."""
    base = image.split("@")[0]
    if ":" in base.split("/")[-1]:
        name, tag = base.rsplit(":", 1)
        return name, tag
    return base, None


def test_every_image_is_in_the_pin_list(all_rendered: dict[str, Rendered]):
    names = {_split(image)[0] for rendered in all_rendered.values() for image in _images(rendered)}
    assert names == set(PIN_LIST), f"k8s/images.yaml differs from the rendered images: {sorted(names ^ set(PIN_LIST))}"


def test_every_image_has_a_version(all_rendered: dict[str, Rendered]):
    for rendered in all_rendered.values():
        for image in _images(rendered):
            tag = _split(image)[1]
            assert "@sha256:" in image or (tag and tag != "latest"), image
