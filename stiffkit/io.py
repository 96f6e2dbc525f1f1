"""Atomic file writes and a config-keyed on-disk cache for experiment results.

Nothing is half-written: every file is written to a temporary sibling and then renamed
over its target (``os.replace`` is atomic on POSIX), so an interrupted run leaves either
the old file or no file, never a corrupt one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["atomic_write", "config_key", "cached_frame", "save_figure", "save_frame"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and atomically move the result to `path`.

    Parameters
    ----------
    path : path-like
        Final destination; parent folders are created.
    write : callable
        Writes the complete file to the temporary path it receives.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates owner-only files; give the result the usual 0666 & ~umask mode.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    """Return the process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def config_key(config: Mapping[str, Any]) -> str:
    """Return a short stable hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_frame(df: pd.DataFrame, path: str | os.PathLike, *, float_format: str | None = None) -> Path:
    """Write `df` atomically; the format follows the suffix (``.csv`` or ``.pkl``).

    `float_format` (CSV only, e.g. ``"%.6g"``) bounds the digits written per float.
    """
    path = Path(path)
    if path.suffix == ".csv":
        return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, float_format=float_format))
    if path.suffix == ".pkl":
        return atomic_write(path, lambda tmp: df.to_pickle(tmp))
    raise ValueError(f"`path` must end in .csv or .pkl, got {path.suffix!r}.")


def cached_frame(
    config: Mapping[str, Any],
    compute: Callable[[], pd.DataFrame],
    cache_dir: str | os.PathLike,
    *,
    name: str = "result",
    refresh: bool = False,
) -> pd.DataFrame:
    """Return ``compute()``, cached on disk under a key derived from `config`.

    The cache file is ``{cache_dir}/{name}-{config_key(config)}.pkl`` with the config
    stored beside it as JSON; a changed config never reads a stale result.
    """
    key = config_key(config)
    path = Path(cache_dir) / f"{name}-{key}.pkl"
    if path.exists() and not refresh:
        return pd.read_pickle(path)
    df = compute()
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"`compute` must return a pandas DataFrame, got {type(df).__name__}.")
    save_frame(df, path)
    atomic_write(path.with_suffix(".json"),
                 lambda tmp: Path(tmp).write_text(json.dumps(dict(config), indent=2, default=str)))
    return df


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Save a matplotlib figure atomically (format from the suffix)."""
    path = Path(path)
    kwargs = dict(dpi=150, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    kwargs.update(savefig_kwargs)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, **kwargs))
