"""Shared fixtures of the diffusion tests; puts this folder on ``sys.path`` so every test
below it (``samplers/`` included) imports the analytic cases of ``_diffusion_cases``."""

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from _diffusion_cases import small_tree_like  # noqa: E402


@pytest.fixture(scope="module")
def mix():
    return small_tree_like(0)
