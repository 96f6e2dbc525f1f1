"""Atomic file writes and an on-disk cache of experiment results keyed by config and code.

Nothing is half-written: every file is written to a temporary sibling and then renamed
over its target (``os.replace`` is atomic on POSIX), so an interrupted run leaves either
the old file or no file, never a corrupt one; temporary files that a killed process left
behind in a cache folder are swept by the next :func:`cached_frame`.

A cached result is served only for the same configuration computed by the same code: the key
covers the configuration and a fingerprint of the source files that compute it
(:func:`source_fingerprint`: the installed ``stiffkit`` package, its version, and whatever
scripts the caller names). A cache file that cannot be read, or that holds something other
than a DataFrame, is reported with a warning and recomputed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "atomic_write",
    "config_key",
    "cached_frame",
    "ensure_folder",
    "save_figure",
    "save_frame",
    "source_fingerprint",
]

#: Temporary files of :func:`atomic_write` older than this (seconds) belong to a killed
#: writer and are removed by :func:`cached_frame` (a live write takes seconds at most).
STALE_TMP_SECONDS = 3600.0
#: The installed package whose sources every fingerprint covers.
_PACKAGE_DIR = Path(__file__).resolve().parent


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and atomically move the result to `path`.

    Parameters
    ----------
    path : path-like
        Final destination; parent folders are created.
    write : callable
        Writes the complete file to the temporary path it receives.

    Raises
    ------
    TypeError
        If `path` is not path-like or `write` not callable.
    OSError
        Naming `path`: it is a folder, a parent of it is a file, or its folder cannot be
        created or written (the subclass of the underlying error is kept).
    """
    path = _as_path(path, "path")
    if not callable(write):
        raise TypeError(f"`write` must be callable, got {type(write).__name__}.")
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"`path` {path} is a folder, not a file")
    ensure_folder(path.parent, "path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise type(err)(err.errno, f"cannot write into the folder {path.parent} of `path` "
                        f"({err.strerror})") from err
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


def _as_path(path, name: str) -> Path:
    """`path` as a :class:`Path`, raising ``TypeError`` naming `name` unless it is path-like."""
    if not isinstance(path, str | os.PathLike) or isinstance(path, bytes):
        raise TypeError(f"`{name}` must be a path (str or os.PathLike), got "
                        f"{type(path).__name__}.")
    return Path(path)


def ensure_folder(folder: str | os.PathLike, name: str) -> Path:
    """Create `folder` (and its parents) unless it exists; return it as a :class:`Path`.

    Raises
    ------
    OSError
        Naming the argument `name`: `folder` or one of its parents is a file, or it cannot
        be created (permissions, a read-only file system); the subclass of the underlying
        error is kept (``NotADirectoryError``, ``PermissionError``, …).
    """
    folder = _as_path(folder, name)
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise NotADirectoryError(errno.ENOTDIR,
                                     f"`{name}`: {part} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise type(err)(err.errno, f"`{name}`: cannot create the folder {folder} "
                        f"({err.strerror})") from err
    return folder


def _umask() -> int:
    """Return the process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def config_key(config: Mapping[str, Any]) -> str:
    """Return a short stable hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def source_fingerprint(extra: Iterable[str | os.PathLike] = ()) -> str:
    """Return a hash of the ``stiffkit`` sources, its version, and the files in `extra`.

    Every ``.py`` file of the installed package is read (relative path and bytes), so any
    edit to the library changes the fingerprint; `extra` adds the scripts that compute a
    result (e.g. ``experiments/fig2.py`` and its plumbing).

    Parameters
    ----------
    extra : iterable of path-like
        Further source files; each must exist.

    Returns
    -------
    str
        16 hex digits.
    """
    from stiffkit import __version__

    if isinstance(extra, str | os.PathLike) or not hasattr(extra, "__iter__"):
        raise TypeError(f"`extra` must be an iterable of paths, got {extra!r}; wrap a single "
                        "path in a list.")
    digest = hashlib.sha256(f"stiffkit {__version__}".encode())
    files = sorted(_PACKAGE_DIR.rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(_PACKAGE_DIR)).encode())
        digest.update(path.read_bytes())
    for item in extra:
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"`extra`: no source file at {path}.")
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _sweep_stale_tmp(folder: Path, max_age: float = STALE_TMP_SECONDS) -> None:
    """Remove :func:`atomic_write` temporaries in `folder` older than `max_age` seconds."""
    if not folder.is_dir():
        return
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > max_age:
                tmp.unlink()
        except FileNotFoundError:  # another process swept it first
            pass


def _read_cached(path: Path) -> pd.DataFrame | None:
    """Return the DataFrame cached at `path`, or None (with a warning) if it is unusable."""
    try:
        df = pd.read_pickle(path)
    except Exception as err:  # noqa: BLE001 - unpickling a corrupt file can raise anything
        warnings.warn(f"cache file {path} is unreadable ({type(err).__name__}: {err}); "
                      "recomputing.", RuntimeWarning, stacklevel=3)
        return None
    if not isinstance(df, pd.DataFrame):
        warnings.warn(f"cache file {path} holds a {type(df).__name__}, not a DataFrame; "
                      "recomputing.", RuntimeWarning, stacklevel=3)
        return None
    return df


def save_frame(df: pd.DataFrame, path: str | os.PathLike, *,
               float_format: str | None = None) -> Path:
    """Write `df` atomically; the format follows the suffix (``.csv`` or ``.pkl``).

    `float_format` (CSV only, e.g. ``"%.6g"``) bounds the digits written per float.

    Raises
    ------
    TypeError
        If `df` is not a DataFrame, `path` not path-like or `float_format` not a string.
    ValueError
        If the suffix is neither ``.csv`` nor ``.pkl``.
    OSError
        As :func:`atomic_write`.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"`df` must be a pandas DataFrame, got {type(df).__name__}.")
    path = _as_path(path, "path")
    if float_format is not None and not isinstance(float_format, str):
        raise TypeError(f"`float_format` must be a format string such as '%.6g' or None, got "
                        f"{float_format!r}.")
    if path.suffix == ".csv":
        return atomic_write(path,
                            lambda tmp: df.to_csv(tmp, index=False, float_format=float_format))
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
    fingerprint: str | None = None,
) -> pd.DataFrame:
    """Return ``compute()``, cached on disk under a key of `config` and the code's fingerprint.

    Parameters
    ----------
    config : mapping
        JSON-serialisable configuration of the computation.
    compute : callable
        ``compute() -> DataFrame``.
    cache_dir : path-like
        Cache folder; the file is ``{cache_dir}/{name}-{key}.pkl`` with the config and the
        fingerprint stored beside it as JSON.
    name : str
        File stem.
    refresh : bool
        Recompute (and overwrite) even if a cached result exists.
    fingerprint : str, optional
        Identity of the code that computes the result; default :func:`source_fingerprint`
        of the ``stiffkit`` package alone. A change of config or code never reads a stale
        result.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    TypeError
        If `config` is not a mapping, `compute` not callable or does not return a DataFrame.
    OSError
        If `cache_dir` (or a parent) is a file or cannot be created: checked before computing.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"`config` must be a mapping, got {type(config).__name__}.")
    if not callable(compute):
        raise TypeError(f"`compute` must be callable, got {type(compute).__name__}.")
    folder = ensure_folder(cache_dir, "cache_dir")  # before computing, not after
    if fingerprint is None:
        fingerprint = source_fingerprint()
    key = config_key({"config": dict(config), "code": fingerprint})
    path = folder / f"{name}-{key}.pkl"
    _sweep_stale_tmp(folder)
    if path.exists() and not refresh:
        df = _read_cached(path)
        if df is not None:
            return df
    df = compute()
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"`compute` must return a pandas DataFrame, got {type(df).__name__}.")
    save_frame(df, path)
    meta = {"config": dict(config), "code": fingerprint}
    atomic_write(path.with_suffix(".json"),
                 lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=str)))
    return df


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Save a matplotlib figure atomically (format from the suffix).

    Raises
    ------
    TypeError
        If `fig` has no ``savefig`` (not a matplotlib figure) or `path` is not path-like.
    OSError
        As :func:`atomic_write`.
    """
    if not callable(getattr(fig, "savefig", None)):
        raise TypeError(f"`fig` must be a matplotlib Figure, got {type(fig).__name__}.")
    path = _as_path(path, "path")
    kwargs = dict(dpi=150, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    kwargs.update(savefig_kwargs)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, **kwargs))
