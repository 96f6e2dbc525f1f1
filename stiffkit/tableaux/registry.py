"""The registry of named tableaux: the shipped catalogue plus whatever users register.

The catalogue (:mod:`stiffkit.tableaux.catalogue`) is data; this module registers it once on
import, so every name it defines (and its aliases) resolves through :func:`get_tableau`.
"""

from __future__ import annotations

from stiffkit.tableaux.catalogue import CATALOGUE
from stiffkit.tableaux.tableau import ButcherTableau

__all__ = ["get_tableau", "list_tableaux", "register_tableau"]

_REGISTRY: dict[str, ButcherTableau] = {}
_ALIASES: dict[str, str] = {}


def register_tableau(tableau: ButcherTableau, *aliases: str, overwrite: bool = False) -> None:
    """Add `tableau` to the catalogue under its name (and optional aliases).

    Raises
    ------
    TypeError
        If `tableau` is not a :class:`ButcherTableau` or an alias is not a non-empty string.
    ValueError
        If a name is taken (unless `overwrite`).
    """
    if not isinstance(tableau, ButcherTableau):
        raise TypeError(f"`tableau` must be a ButcherTableau, got {type(tableau).__name__}.")
    for alias in aliases:
        if not isinstance(alias, str) or not alias:
            raise TypeError(f"`aliases` must be non-empty strings, got {alias!r}.")
    for key in (tableau.name, *aliases):
        if not overwrite and (key in _REGISTRY or key in _ALIASES):
            raise ValueError(f"A tableau named {key!r} is already registered.")
    _REGISTRY[tableau.name] = tableau
    for alias in aliases:
        _ALIASES[alias] = tableau.name


def get_tableau(name: str | ButcherTableau) -> ButcherTableau:
    """Return the catalogued tableau `name` (a tableau passes through unchanged).

    Raises
    ------
    TypeError
        If `name` is neither a string nor a :class:`ButcherTableau`.
    ValueError
        If `name` is not in the catalogue; the message lists the known names.
    """
    if isinstance(name, ButcherTableau):
        return name
    if not isinstance(name, str):
        raise TypeError(f"`tableau` must be a catalogue name (str) or a ButcherTableau, got "
                        f"{name!r} ({type(name).__name__}).")
    key = _ALIASES.get(name, name)
    try:
        return _REGISTRY[key]
    except KeyError:
        raise ValueError(
            f"Unknown tableau {name!r}; known: {', '.join(list_tableaux())}."
        ) from None


def list_tableaux() -> list[str]:
    """Return the names of all catalogued tableaux, sorted."""
    return sorted(_REGISTRY)


for _tableau, _aliases in CATALOGUE:
    register_tableau(_tableau, *_aliases)
