"""The README's Python examples run as written (in order, in one namespace)."""

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


def test_readme_examples_run():
    import matplotlib.pyplot as plt

    namespace: dict = {}
    for i, block in enumerate(BLOCKS):
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message is the point
            pytest.fail(f"README python block {i} failed: {type(err).__name__}: {err}\n{block}")
    plt.close("all")
    traj = namespace["traj"]
    assert traj.nfe == 2 * 16 - 1  # the ERK-Guid example: 2N - 1 evaluations, none extra
