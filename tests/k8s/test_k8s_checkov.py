"""checkov on the rendered output of every overlay (one run for all of them)."""

import pytest
import yaml

from k8s_manifests import K8S, failures, run_checkov

CONFIG = K8S / ".checkov.yaml"


@pytest.fixture(scope="module")
def checkov_reports(all_rendered, argocd_rendered, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("rendered")
    for name, overlay in {**all_rendered, "argocd": argocd_rendered}.items():
        (out / f"{name}.yaml").write_text(yaml.safe_dump_all(overlay.objects, sort_keys=False))
    return run_checkov(["--config-file", str(CONFIG), "--directory", str(out)])


def test_rendered_overlays_pass_checkov(checkov_reports):
    assert failures(checkov_reports) == []
    assert sum(r["summary"]["passed"] for r in checkov_reports) > 1000, "checkov scanned almost nothing"


def test_skip_list_is_short_and_documented():
    config = yaml.safe_load(CONFIG.read_text())
    skipped = config.get("skip-check", [])
    assert len(skipped) <= 3
    lines = CONFIG.read_text().splitlines()
    for check in skipped:
        index = next(i for i, line in enumerate(lines) if line.strip() == f"- {check}")
        assert lines[index - 1].strip().startswith("#"), f"{check} needs a reason in a comment above it"


def test_resource_level_skips_give_reasons(all_rendered):
    for overlay in all_rendered.values():
        for obj in overlay.objects:
            for key, value in obj["metadata"].get("annotations", {}).items():
                if key.startswith("checkov.io/skip"):
                    check, _, reason = value.partition("=")
                    assert check.startswith("CKV_") and len(reason) > 20, f"{key}: {value}"
