"""Shared test configuration: hypothesis profiles and float64 defaults."""

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings

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
