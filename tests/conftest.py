"""Shared test configuration: hypothesis profiles and float64 defaults."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# The scripts' shared plumbing (experiments/_lib.py, benchmarks/_common.py, _harness.py) is
# imported by the scripts as top-level modules; the tests import it the same way.
_ROOT = Path(__file__).resolve().parent.parent
for _folder in ("experiments", "benchmarks"):
    if str(_ROOT / _folder) not in sys.path:
        sys.path.insert(0, str(_ROOT / _folder))

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
    # Slow tests run only when asked for with `-m slow`.
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with `pytest -m slow`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    # One result cache for the whole session (never the user's): the figure scripts' smoke
    # tests fill it and the notebook test reuses their quick results instead of recomputing.
    config._stiffkit_cache = tempfile.mkdtemp(prefix="stiffkit-test-cache-")
    os.environ["STIFFKIT_CACHE"] = config._stiffkit_cache


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "_stiffkit_cache", ""), ignore_errors=True)
