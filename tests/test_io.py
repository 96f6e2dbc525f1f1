"""Atomic writes and the config-keyed cache."""

import matplotlib

matplotlib.use("Agg")

import os
from pathlib import Path

import pandas as pd
import pytest

from stiffkit.io import atomic_write, cached_frame, config_key, save_figure, save_frame


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def broken(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temporary left behind


def test_cached_frame_computes_once_per_config(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"a": [1, 2]})

    a = cached_frame({"n": 1}, compute, tmp_path)
    b = cached_frame({"n": 1}, compute, tmp_path)
    c = cached_frame({"n": 2}, compute, tmp_path)
    assert len(calls) == 2 and a.equals(b) and a.equals(c)
    assert config_key({"n": 1, "m": 2}) == config_key({"m": 2, "n": 1})
    cached_frame({"n": 1}, compute, tmp_path, refresh=True)
    assert len(calls) == 3
    with pytest.raises(TypeError, match="`compute`"):
        cached_frame({"n": 3}, lambda: [1], tmp_path)


def test_save_frame_and_figure(tmp_path):
    import matplotlib.pyplot as plt

    df = pd.DataFrame({"x": [1.0]})
    save_frame(df, tmp_path / "a.csv")
    assert pd.read_csv(tmp_path / "a.csv").equals(df)
    with pytest.raises(ValueError, match="`path`"):
        save_frame(df, tmp_path / "a.txt")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    save_figure(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000
    plt.close(fig)


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "f.txt", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(mask)
    assert (path.stat().st_mode & 0o777) == 0o644
