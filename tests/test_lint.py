"""The tree is ruff-clean with the configuration in pyproject.toml (what CI checks)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    exe = shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (it is in the `test` extra)")
    proc = subprocess.run([exe, "check", "."], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_is_installed_in_ci():
    import os

    if os.environ.get("CI") and shutil.which("ruff") is None:
        pytest.fail(f"CI must install ruff (the `test` extra); python: {sys.executable}")
