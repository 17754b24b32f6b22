"""The release workflow's order of stages and permissions (what actionlint cannot know)."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
APP_IMAGE = "ghcr.io/natsq/natsq"


@pytest.fixture(scope="module")
def jobs() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def step_index(job: dict, uses: str = "", run: str = "") -> int:
    for i, step in enumerate(job["steps"]):
        if (uses and step.get("uses", "").startswith(uses + "@")) or (run and run in step.get("run", "")):
            return i
    raise AssertionError(f"no step {uses or run!r}")


def test_runs_on_main_and_version_tags_only():
    triggers = yaml.safe_load(WORKFLOW.read_text())[True]  # PyYAML reads the key `on` as True
    assert triggers == {"push": {"branches": ["main"], "tags": ["v*.*.*"]}}


def test_write_access_only_where_needed(jobs):
    assert yaml.safe_load(WORKFLOW.read_text())["permissions"] == {}
    writes = {name: {k for k, v in job.get("permissions", {}).items() if v == "write"} for name, job in jobs.items()}
    assert writes == {
        "ci": set(), "image": {"packages", "id-token"}, "smoke-deploy": set(), "deployed-images": set(),
        "scan-deployed-images": set(), "promote": {"contents", "pull-requests"},
    }
    for name, job in jobs.items():
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name


def test_the_image_is_scanned_before_it_is_pushed_and_signed_by_digest(jobs):
    image = jobs["image"]
    assert image["needs"] == "ci" and jobs["ci"]["uses"] == "./.github/workflows/ci.yml"
    build = image["steps"][step_index(image, uses="docker/build-push-action")]
    assert build["with"]["push"] is False and build["with"]["load"] is True
    assert build["with"]["cache-from"] == "type=gha" and build["with"]["cache-to"].startswith("type=gha")
    scan = image["steps"][step_index(image, uses="aquasecurity/trivy-action")]
    assert scan["with"]["exit-code"] == "1" and scan["with"]["ignore-unfixed"] is True
    assert scan["with"]["severity"] == "CRITICAL,HIGH" and scan["with"]["image-ref"] == build["with"]["tags"]
    push_at = next(i for i, s in enumerate(image["steps"]) if s.get("id") == "push")
    assert step_index(image, uses="aquasecurity/trivy-action") < push_at
    assert any(s.get("with", {}).get("format") == "cyclonedx" for s in image["steps"][:push_at]), "no SBOM"
    sign = image["steps"][step_index(image, run="cosign sign --yes")]
    assert sign["env"]["DIGEST"] == "${{ steps.push.outputs.digest }}" and '"${REGISTRY_IMAGE}@${DIGEST}"' in sign["run"]
    assert "cosign attest" in sign["run"] and "cosign verify" in sign["run"]
    assert image["outputs"]["digest"] == "${{ steps.push.outputs.digest }}"


def test_the_smoke_deploy_runs_the_developer_script_on_the_pushed_digest(jobs):
    smoke = jobs["smoke-deploy"]
    assert smoke["needs"] == "image"
    pull = smoke["steps"][step_index(smoke, run="docker pull")]
    assert pull["env"]["DIGEST"] == "${{ needs.image.outputs.digest }}"
    deploy = smoke["steps"][step_index(smoke, run="make kind-deploy")]
    assert deploy["env"]["IMAGE"].endswith(":0.0.0-ci.${{ github.sha }}")
    assert f"{APP_IMAGE}:0.0.0-ci." in pull["run"].replace("${REGISTRY_IMAGE}", APP_IMAGE)


def test_third_party_images_come_from_the_one_list(jobs):
    listing = jobs["deployed-images"]
    assert ".ci/deployed_images.py --json" in listing["steps"][step_index(listing, run="deployed_images.py")]["run"]
    scan = jobs["scan-deployed-images"]
    assert scan["strategy"]["matrix"]["image"] == "${{ fromJSON(needs.deployed-images.outputs.images) }}"
    assert scan["strategy"]["fail-fast"] is False
    trivy = scan["steps"][step_index(scan, uses="aquasecurity/trivy-action")]
    assert trivy["with"]["image-ref"] == "${{ matrix.image }}" and trivy["with"]["exit-code"] == "1"


def test_promotion_waits_for_everything_and_happens_only_on_main(jobs):
    promote = jobs["promote"]
    assert set(promote["needs"]) == {"image", "smoke-deploy", "scan-deployed-images"}
    assert promote["if"] == "github.ref == 'refs/heads/main'"
    staging = promote["steps"][step_index(promote, run="k8s/overlays/staging")]["run"]
    assert '.ci/promote.py k8s/overlays/staging "${DIGEST}"' in staging and "git push origin HEAD:main" in staging
    prod = promote["steps"][step_index(promote, run="k8s/overlays/prod ")]["run"]
    assert '.ci/promote.py k8s/overlays/prod "${DIGEST}"' in prod and "gh pr create --base main" in prod
    assert "HEAD:main" not in prod, "prod changes only through a reviewed pull request"
