"""Static checks over the HCL (python-hcl2): module conventions, pinning,
backends, secrets, and that the three environments look alike from outside."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tfhelpers import ENVIRONMENTS, MODULES, TERRAFORM_DIR, load_hcl

ALL_DIRS = MODULES + ENVIRONMENTS
ids = [f"{p.parent.name}/{p.name}" for p in ALL_DIRS]


def blocks(directory: Path, kind: str) -> list[tuple[Path, dict]]:
    out = []
    for tf in sorted(directory.glob("*.tf")):
        for block in load_hcl(tf).get(kind, []):
            out.append((tf, block))
    return out


def named(directory: Path, kind: str) -> dict[str, tuple[Path, dict]]:
    return {name: (tf, body) for tf, block in blocks(directory, kind) for name, body in block.items()}


@pytest.mark.parametrize("directory", ALL_DIRS, ids=ids)
def test_layout_has_versions_variables_outputs(directory):
    for name in ("versions.tf", "outputs.tf"):
        assert (directory / name).is_file(), f"{directory} lacks {name}"
    assert any(directory.glob("variables*.tf")), f"{directory} lacks variables.tf"


@pytest.mark.parametrize("directory", ALL_DIRS, ids=ids)
def test_every_variable_is_typed_and_described(directory):
    variables = named(directory, "variable")
    assert variables, f"{directory} declares no variables"
    for name, (tf, body) in variables.items():
        assert "type" in body, f"{tf.name}: variable {name} has no type"
        assert str(body.get("description", "")).strip(), f"{tf.name}: variable {name} has no description"


@pytest.mark.parametrize("directory", ALL_DIRS, ids=ids)
def test_every_output_is_described(directory):
    for name, (tf, body) in named(directory, "output").items():
        assert str(body.get("description", "")).strip(), f"{tf.name}: output {name} has no description"


@pytest.mark.parametrize("directory", ALL_DIRS, ids=ids)
def test_terraform_and_providers_are_pinned(directory):
    terraform_blocks = [b for _, b in blocks(directory, "terraform")]
    required_version = [b["required_version"] for b in terraform_blocks if "required_version" in b]
    assert required_version and "<" in required_version[0], "required_version needs a lower and an upper bound"
    for b in terraform_blocks:
        for rp in b.get("required_providers", []):
            for name, spec in rp.items():
                assert "/" in spec.get("source", ""), f"provider {name} has no explicit source"
                version = spec.get("version", "")
                assert version.startswith("~>") or "<" in version or re.fullmatch(r"\d+\.\d+\.\d+", version), (
                    f"provider {name} version {version!r} has no upper bound"
                )


@pytest.mark.parametrize("directory", MODULES, ids=[p.name for p in MODULES])
def test_reusable_modules_have_no_provider_or_backend_blocks(directory):
    assert not blocks(directory, "provider"), f"{directory.name}: provider blocks belong in environments/"
    for _, b in blocks(directory, "terraform"):
        assert "backend" not in b and "cloud" not in b, f"{directory.name}: backends belong in environments/"


@pytest.mark.parametrize("directory", MODULES, ids=[p.name for p in MODULES])
def test_modules_hard_code_no_region(directory):
    region_literal = re.compile(
        r'"(?:(?:us|eu|ap|sa|ca|me|af|il)-(?:central|west|east|north|south|southeast|northeast)-\d'
        r"|fsn1|nbg1|hel1|ash|hil|sin|GRA\d*|SBG\d*|BHS\d*|WAW\d*|UK\d*|DE\d*|EU-WEST-PAR)\""
    )
    for tf in directory.glob("*.tf"):
        for lineno, line in enumerate(tf.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not region_literal.search(code), f"{tf.name}:{lineno} hard-codes a region: {line.strip()}"


@pytest.mark.parametrize("directory", ENVIRONMENTS, ids=[p.name for p in ENVIRONMENTS])
def test_backend_is_remote_locked_and_encrypted(directory):
    backends = [b["backend"] for _, b in blocks(directory, "terraform") if "backend" in b]
    assert len(backends) == 1, f"{directory.name}: exactly one backend block"
    (kind, settings), = backends[0][0].items()
    assert kind == "s3", f"{directory.name}: expected the s3 backend, got {kind}"
    assert settings.get("encrypt") is True, f"{directory.name}: backend must set encrypt = true"
    assert settings.get("use_lockfile") is True, f"{directory.name}: backend must lock (use_lockfile = true)"
    assert settings.get("key", "").startswith(f"natsq/{directory.name}/"), "one state key per environment"
    for forbidden in ("access_key", "secret_key", "token"):
        assert forbidden not in settings, f"{directory.name}: credentials never go in the backend block"
    assert (directory / "backend.hcl.example").is_file()


def test_every_environment_has_its_own_state_key():
    keys = []
    for directory in ENVIRONMENTS:
        for _, b in blocks(directory, "terraform"):
            if "backend" in b:
                keys.append(next(iter(b["backend"][0].values()))["key"])
    assert len(keys) == len(set(keys)) == 3


def test_environments_are_aws_hetzner_ovh():
    assert [p.name for p in ENVIRONMENTS] == ["aws", "hetzner", "ovh"]


def test_environments_expose_the_same_outputs():
    outputs = {p.name: set(named(p, "output")) for p in ENVIRONMENTS}
    reference = outputs["aws"]
    for env, names in outputs.items():
        assert names == reference, f"{env} differs from aws: +{sorted(names - reference)} -{sorted(reference - names)}"


def test_environments_apply_the_addons_and_topology_modules():
    for directory in ENVIRONMENTS:
        sources = {body["source"] for _, body in named(directory, "module").values()}
        assert "../../modules/cluster-addons" in sources, f"{directory.name} does not install the add-ons"
        assert "../../modules/multicloud-topology" in sources, f"{directory.name} does not join the fleet"


SECRET_PATTERNS = {
    "AWS access key": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "64-char token literal (hcloud)": re.compile(r'"[A-Za-z0-9]{64}"'),
    "password/secret/token literal": re.compile(
        r'^\s*[a-z_]*(password|secret|token|secret_key|access_key|application_key|consumer_key)\s*=\s*"[^"$]{6,}"',
        re.I | re.M,
    ),
}


def _committed_text_files():
    for path in sorted(TERRAFORM_DIR.rglob("*")):
        if path.is_file() and ".terraform" not in path.parts and path.suffix in {".tf", ".hcl", ".example", ".tftpl", ".yaml", ".tfvars"}:
            yield path


@pytest.mark.parametrize("name", sorted(SECRET_PATTERNS))
def test_no_secret_literals(name):
    pattern = SECRET_PATTERNS[name]
    hits = [f"{p.relative_to(TERRAFORM_DIR)}: {m.group(0)[:40]}" for p in _committed_text_files() for m in pattern.finditer(p.read_text())]
    assert not hits, f"{name} found:\n" + "\n".join(hits)


def test_secret_variables_are_sensitive():
    for directory in ALL_DIRS:
        for name, (tf, body) in named(directory, "variable").items():
            if re.search(r"(token|password|passphrase|secret)$", name):
                assert body.get("sensitive") is True, f"{directory.name}/{tf.name}: variable {name} must be sensitive"


@pytest.mark.parametrize("directory", ENVIRONMENTS, ids=[p.name for p in ENVIRONMENTS])
def test_lock_file_covers_every_provider(directory):
    lock = directory / ".terraform.lock.hcl"
    if not lock.exists():
        pytest.skip(
            f"{directory.name}/.terraform.lock.hcl not committed: it can only be generated with registry access "
            "(terraform providers lock -platform=linux_amd64 -platform=darwin_arm64), see docs/runbooks"
        )
    locked = {name.removeprefix("registry.terraform.io/") for b in load_hcl(lock).get("provider", []) for name in b}
    needed = {spec["source"] for _, b in blocks(directory, "terraform") for rp in b.get("required_providers", []) for spec in rp.values()}
    assert needed <= locked, f"lock file lacks {sorted(needed - locked)}"
