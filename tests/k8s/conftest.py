"""Fixtures for tests/k8s: every overlay rendered once per session."""

import pytest

from k8s_manifests import ARGOCD_DIR, Rendered, kubectl, overlay_names, render


def pytest_generate_tests(metafunc):
    if "overlay" in metafunc.fixturenames:
        metafunc.parametrize("overlay", overlay_names(), scope="session")


@pytest.fixture(scope="session")
def all_rendered() -> dict[str, Rendered]:
    """Every overlay under k8s/overlays, rendered with `kubectl kustomize`."""
    if kubectl() is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    from k8s_manifests import OVERLAYS_DIR

    return {name: Rendered(name, render(OVERLAYS_DIR / name)) for name in overlay_names()}


@pytest.fixture(scope="session")
def rendered(all_rendered, overlay) -> Rendered:
    return all_rendered[overlay]


@pytest.fixture(scope="session")
def argocd_rendered() -> Rendered:
    if kubectl() is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    return Rendered("argocd", render(ARGOCD_DIR))
