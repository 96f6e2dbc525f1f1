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
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "f.png"]  # no temporaries
    plt.close(fig)


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "f.txt", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(mask)
    assert (path.stat().st_mode & 0o777) == 0o644


def _counting():
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"a": [1.0, 2.0]})

    return calls, compute


def test_cached_frame_recomputes_when_the_code_changes(tmp_path):
    calls, compute = _counting()
    cached_frame({"n": 1}, compute, tmp_path, fingerprint="code-v1")
    cached_frame({"n": 1}, compute, tmp_path, fingerprint="code-v1")
    assert len(calls) == 1
    cached_frame({"n": 1}, compute, tmp_path, fingerprint="code-v2")
    assert len(calls) == 2


def test_source_fingerprint_covers_the_package_and_extra_files(tmp_path):
    from stiffkit.io import source_fingerprint

    script = tmp_path / "fig.py"
    script.write_text("x = 1\n")
    before = source_fingerprint([script])
    assert source_fingerprint([script]) == before
    assert source_fingerprint() != before
    script.write_text("x = 2\n")
    assert source_fingerprint([script]) != before
    with pytest.raises(FileNotFoundError, match="`extra`"):
        source_fingerprint([tmp_path / "missing.py"])


def test_source_fingerprint_changes_with_any_library_file(tmp_path, monkeypatch):
    import shutil

    import stiffkit.io as io

    copy = tmp_path / "stiffkit"
    shutil.copytree(Path(io.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("__pycache__", "weights"))
    monkeypatch.setattr(io, "_PACKAGE_DIR", copy)
    before = io.source_fingerprint()
    target = copy / "integrate" / "rk.py"
    target.write_text(target.read_text() + "\n# edited\n")
    assert io.source_fingerprint() != before


@pytest.mark.parametrize("content", [b"", b"\x80\x04truncated", b"not a pickle at all",
                                     "pickle-of-a-list"])
def test_unreadable_or_foreign_cache_file_warns_and_recomputes(tmp_path, content):
    import pickle

    calls, compute = _counting()
    cached_frame({"n": 1}, compute, tmp_path, fingerprint="f")
    (path,) = tmp_path.glob("result-*.pkl")
    path.write_bytes(pickle.dumps([1, 2]) if content == "pickle-of-a-list" else content)
    with pytest.warns(RuntimeWarning, match=str(path.name)):
        df = cached_frame({"n": 1}, compute, tmp_path, fingerprint="f")
    assert len(calls) == 2 and df.equals(pd.DataFrame({"a": [1.0, 2.0]}))
    # The recomputed result replaced the bad file: the next call reads it.
    cached_frame({"n": 1}, compute, tmp_path, fingerprint="f")
    assert len(calls) == 2


def test_cached_frame_sweeps_temporaries_of_killed_writers(tmp_path):
    from stiffkit.io import STALE_TMP_SECONDS

    stale = tmp_path / ".result-abc.pkl.x1y2.tmp"
    fresh = tmp_path / ".result-abc.pkl.z3w4.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = os.path.getmtime(stale) - 2 * STALE_TMP_SECONDS
    os.utime(stale, (old, old))
    _, compute = _counting()
    cached_frame({"n": 1}, compute, tmp_path, fingerprint="f")
    assert not stale.exists() and fresh.exists()  # a live writer's file is left alone


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda d: save_frame([1, 2], d / "x.csv"), TypeError, "`df` must be a pandas DataFrame"),
        (lambda d: save_frame(pd.DataFrame({"a": [1]}), None), TypeError, "`path` must be a path"),
        (lambda d: save_frame(pd.DataFrame({"a": [1]}), d / "x.csv", float_format=3), TypeError,
         "`float_format` must be a format string"),
        (lambda d: save_frame(pd.DataFrame({"a": [1]}), d / "afile" / "x.csv"),
         NotADirectoryError, "`path`: .*afile is a file, not a folder"),
        (lambda d: atomic_write(d / "y.txt", None), TypeError, "`write` must be callable"),
        (lambda d: atomic_write(d, lambda tmp: None), IsADirectoryError, "is a folder, not a file"),
        (lambda d: save_figure(None, d / "f.png"), TypeError, "`fig` must be a matplotlib Figure"),
        (lambda d: cached_frame(None, lambda: pd.DataFrame(), d), TypeError,
         "`config` must be a mapping"),
        (lambda d: cached_frame({"a": 1}, None, d), TypeError, "`compute` must be callable"),
        (lambda d: cached_frame({"a": 1}, lambda: pd.DataFrame(), None), TypeError,
         "`cache_dir` must be a path"),
    ],
)
def test_bad_arguments_are_named(tmp_path, call, exc, message):
    """Issue 12: AttributeErrors, pathlib's TypeErrors and a bare "File exists" before."""
    (tmp_path / "afile").write_text("x")
    with pytest.raises(exc, match=message):
        call(tmp_path)


def test_a_cache_dir_that_is_a_file_is_refused_before_computing(tmp_path):
    (tmp_path / "afile").write_text("x")
    calls = []
    with pytest.raises(NotADirectoryError, match="`cache_dir`: .*afile is a file"):
        cached_frame({"a": 1}, lambda: calls.append(1) or pd.DataFrame({"a": [1]}),
                     tmp_path / "afile" / "cache")
    assert calls == []


@pytest.mark.parametrize("error", ["{}['x']", "1/0", "int('x')"])
def test_a_cache_file_whose_unpickling_raises_anything_is_recomputed(tmp_path, error):
    """Issue 12: a pickle raising KeyError or ZeroDivisionError escaped the cache."""
    import pickle

    class Boom:
        def __reduce__(self):
            return (eval, (error,))

    fresh = pd.DataFrame({"a": [1.0]})
    cached_frame({"k": 1}, lambda: fresh, tmp_path, fingerprint="fp")
    (cache,) = tmp_path.glob("result-*.pkl")
    cache.write_bytes(pickle.dumps(Boom()))
    with pytest.warns(RuntimeWarning, match="unreadable"):
        out = cached_frame({"k": 1}, lambda: fresh, tmp_path, fingerprint="fp")
    pd.testing.assert_frame_equal(out, fresh)


def test_source_fingerprint_refuses_a_single_path(tmp_path):
    from stiffkit.io import source_fingerprint

    with pytest.raises(TypeError, match="`extra` must be an iterable of paths"):
        source_fingerprint(str(tmp_path))
