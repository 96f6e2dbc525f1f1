"""Reading stiffkit's weight files: the checks every loader shares, in one place.

A weight file is a ``torch.save`` of a dict with ``format_version``, a ``state_dict`` and
the loader's own entries. :func:`read_weights` loads it with ``weights_only=True`` and
raises one ``ValueError`` naming the path — and, through `hint`, the command that
regenerates shipped weights — for a truncated, garbled, foreign or incomplete file or
NaN / Inf weights. Building the model from the payload stays with each loader.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["read_weights", "check_dtype"]

#: What a short or garbled file surfaces as inside ``torch.load`` (``b"broken"`` raises
#: IndexError in torch's weights-only unpickler).
_UNREADABLE = (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError,
               IndexError, KeyError, TypeError, AttributeError)


def check_dtype(dtype: torch.dtype) -> None:
    """Raise ``ValueError`` unless `dtype` is float32 or float64."""
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"`dtype` must be torch.float32 or torch.float64, got {dtype}.")


def read_weights(path: Path, *, what: str, format_version: int, required: Sequence[str],
                 hint: str = "", kind: str | None = None) -> dict[str, Any]:
    """Return the checked payload of the weight file `path`.

    Parameters
    ----------
    path : Path
        The file (its existence is the caller's check, with its own message).
    what : str
        The file's kind for messages ("EnergyDenoiser", ...).
    format_version : int
        The version the loader reads.
    required : sequence of str
        Entries the payload must have besides ``format_version`` (``state_dict`` among them).
    hint : str
        Appended to every message (e.g. the regeneration command).
    kind : str, optional
        The payload's ``kind`` entry must equal it.

    Raises
    ------
    ValueError
        Naming `path`: unreadable, not this format, missing entries, NaN / Inf weights.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as err:
        raise ValueError(f"`path`: {path} is not a readable weight file "
                         f"({type(err).__name__}: {err}).{hint}") from None
    if (not isinstance(payload, dict) or payload.get("format_version") != format_version
            or (kind is not None and payload.get("kind") != kind)):
        raise ValueError(f"`path`: {path} is not a stiffkit {what} file "
                         f"(format version {format_version}).{hint}")
    missing = [k for k in required if k not in payload]
    if missing:
        raise ValueError(f"`path`: {path} lacks the entries {missing}.{hint}")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ValueError(f"`path`: {path} has no tensor state_dict.{hint}")
    bad = [k for k, v in state.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"`path`: {path} has NaN or Inf weights in {bad}.{hint}")
    return payload
