"""Fixtures for the Terraform tests (helpers live in tfhelpers.py)."""

from __future__ import annotations

import shutil

import pytest

from tfhelpers import TERRAFORM_DIR, Terraform, terraform_bin


@pytest.fixture
def tf_copy(tmp_path):
    """Copy terraform/ to a tmp dir and return a factory for Terraform runners."""
    if terraform_bin() is None:
        pytest.skip("terraform binary not on PATH")
    root = tmp_path / "terraform"
    shutil.copytree(TERRAFORM_DIR, root, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))

    def make(rel: str) -> Terraform:
        return Terraform(root / rel, tmp_path)

    return make
