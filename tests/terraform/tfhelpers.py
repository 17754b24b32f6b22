"""Helpers for the Terraform tests: everything runs on copies in tmp dirs,
with TF_DATA_DIR outside the repo, so no .terraform/ is ever left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO / "terraform"
MODULES = sorted(p for p in (TERRAFORM_DIR / "modules").iterdir() if p.is_dir())
ENVIRONMENTS = sorted(p for p in (TERRAFORM_DIR / "environments").iterdir() if p.is_dir())
# Where provider binaries may exist locally (filesystem mirror layout
# <host>/<namespace>/<type>/<version>/<os_arch>/). The registry is unreachable here.
PLUGIN_DIRS = [
    Path(p)
    for p in os.environ.get("NATSQ_TF_PLUGIN_DIRS", "/opt/tf-plugins:~/.terraform.d/plugins:/usr/share/terraform/plugins").split(":")
]


def terraform_bin() -> str | None:
    return shutil.which("terraform")


def local_providers() -> dict[str, Path]:
    """Map "namespace/type" -> plugin dir holding at least one version of it."""
    found: dict[str, Path] = {}
    for base in PLUGIN_DIRS:
        base = base.expanduser()
        for type_dir in base.glob("registry.terraform.io/*/*"):
            if any(type_dir.glob("*/*/terraform-provider-*")):
                found.setdefault(f"{type_dir.parent.name}/{type_dir.name}", base)
    return found


class Terraform:
    def __init__(self, workdir: Path, tmp: Path):
        self.workdir = workdir
        cli_config = tmp / "terraformrc"
        cli_config.write_text("")  # no network mirrors, no credentials
        self.env = {
            **os.environ,
            "TF_DATA_DIR": str(tmp / "tfdata"),
            "TF_CLI_CONFIG_FILE": str(cli_config),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
        }

    def run(self, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [terraform_bin(), *args, "-no-color"] if args[0] != "fmt" else [terraform_bin(), *args],
            cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout,
        )

    def ok(self, *args: str, timeout: int = 120) -> str:
        res = self.run(*args, timeout=timeout)
        assert res.returncode == 0, f"terraform {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
        return res.stdout




def _clean(value):
    """python-hcl2 8 keeps string quotes and __is_block__ markers: drop them."""
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load_hcl(path: Path) -> dict:
    import hcl2

    return _clean(hcl2.loads(path.read_text()))
