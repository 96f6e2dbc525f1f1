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

# Hypothesis profiles (HYPOTHESIS_PROFILE=name; "ci" by default):
# * "ci": 100 examples per property, derandomised — the same examples on every run, so a
#   failure reproduces and CI never flakes on a new draw;
# * "dev": 100 fresh random examples per run;
# * "long" (alias "thorough"): 1000 fresh random examples per property, for occasional
#   longer runs that explore beyond the fixed CI examples.
_QUIET = [HealthCheck.too_slow]
settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True,
                          suppress_health_check=_QUIET)
settings.register_profile("dev", max_examples=100, deadline=None, suppress_health_check=_QUIET)
for _name in ("long", "thorough"):
    settings.register_profile(_name, max_examples=1000, deadline=None, derandomize=False,
                              suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    # A property runs hundreds of tiny-tensor examples; torch's intra-op threads only contend
    # for the CPU there (a 2-core machine under load measured 25× slower with 2 threads), so
    # property tests run single-threaded. Other tests keep torch's default.
    if not getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
