"""The solver registry: what a sampler step is, and the one table of known solvers.

A solver is a :class:`Solver`: one *step function* that advances the state from σ to
σ_next, one function giving the real stability boundary of each of its steps on a grid,
and a few facts the driver needs (its Butcher tableau when it has a fixed one, the sign of
its ERK-Guid correction, its options with their defaults and their check). Adding a solver
means writing those two functions and calling :func:`register_solver`; the driver
(:mod:`~stiffkit.diffusion.samplers.driver`) applies ERK-Guid, records the
:class:`~stiffkit.Trajectory`, calls back and shows progress for every solver alike, and
hands each solver the options it declares (``sample(..., solver_options={...})``).

**The step protocol**: ``step(drift, x, f, sigma, sigma_next, carry, **options) -> StepOut``

* ``drift(sigma, x)`` evaluates the probability-flow drift (one denoiser call, counted);
* ``x: [batch, *dims]`` is the state at ``sigma`` and ``f = drift(sigma, x)`` its drift,
  already evaluated by the driver;
* ``sigma > sigma_next > 0`` are 0-d tensors in the state's dtype (the final step to
  σ = 0 is always an Euler step, taken by the driver);
* ``carry`` is what the solver's previous step returned (None on the first step): the
  previous Euler point of Heun, the drift history of DEIS;
* ``options`` are the solver's declared options (:attr:`Solver.options`: ``r`` of
  DPM-Solver-2, ``max_order`` of DEIS), every one given, already checked.

**The boundary protocol**: ``boundaries(sigmas, **options) -> Tensor [M]`` for a float64
grid ``sigmas: [M + 1]`` of positive levels gives the real stability interval ``r_n`` of
step n's update on the linear test equation ``dx/dσ = λx``: the amplification of one step
(for a multistep method, the spectral radius of its step map on the history) is at most 1
for ``z = (σ_{n+1} − σ_n) λ ∈ [−r_n, 0]`` and exceeds 1 just beyond ``−r_n``. The ERK-Guid
correction is not part of the step: the boundary is the plain solver's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import torch
from torch import Tensor

from stiffkit.diffusion.erk import ErkPair, check_correction_sign
from stiffkit.tableaux import ButcherTableau, get_tableau, real_stability_interval

__all__ = [
    "StepOut",
    "StepFn",
    "BoundaryFn",
    "OptionsCheck",
    "Solver",
    "register_solver",
    "get_solver",
    "list_solvers",
    "tableau_boundaries",
]


class StepOut(NamedTuple):
    """What a step function returns.

    Attributes
    ----------
    x_next : Tensor, [batch, *dims]
        The state at ``sigma_next``, before any ERK-Guid correction.
    pair : ErkPair or None
        The embedded pair this step offers ERK-Guid (None: no correction at this step).
    point : tuple of Tensor or None
        ``(x̂, f(x̂; σ_next))``, a second point at ``sigma_next`` with its drift, for
        solvers that record it (:attr:`Solver.records_pair`): the trajectory's
        ``pair_states`` / ``pair_drifts``.
    carry : object
        Passed to the solver's next step.
    """

    x_next: Tensor
    pair: ErkPair | None = None
    point: tuple[Tensor, Tensor] | None = None
    carry: Any = None


#: ``step(drift, x, f, sigma, sigma_next, carry, **options) -> StepOut``.
StepFn = Callable[..., StepOut]
#: ``boundaries(sigmas [M + 1] float64, **options) -> Tensor [M] float64``.
BoundaryFn = Callable[..., Tensor]
#: ``check_options(options) -> options``: all of a solver's options in, checked ones out.
OptionsCheck = Callable[[dict[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class Solver:
    """A registered sampler: its step, its stability boundaries and what the driver needs.

    Parameters
    ----------
    name : str
        Registry name (``solver=name`` in :func:`~stiffkit.diffusion.sample`).
    step : callable
        The step function (module docstring: the step protocol).
    boundaries : callable
        Per-step real stability boundaries on a grid (module docstring).
    tableau : ButcherTableau or str, optional
        The Butcher tableau of every step, when the step is one (a registered name is
        resolved); the trajectory carries it. None for steps that are not a fixed tableau.
    correction_sign : float, optional
        The default sign of the ERK-Guid correction (−1 or +1); None when the step has no
        embedded pair (ERK-Guid is then refused).
    options : mapping of str to object
        The keyword options the step and boundary functions take, each with its default
        (``{"r": 0.5}``); stored read-only. Empty: the solver takes none.
    records_pair : bool
        Whether each step's ``point`` is the trajectory's pair (and embedded solution).
    check_options : callable, optional
        ``check_options(options) -> options``: given every option (defaults filled in),
        return them checked and converted, raising ``ValueError`` naming a bad one. None:
        taken as given. The defaults are checked on construction.

    Raises
    ------
    ValueError
        An empty name, a sign other than ±1 or None, an option name that is not an
        identifier, a default that `check_options` refuses.
    TypeError
        A `step`, `boundaries` or `check_options` that is not callable; `options` not a
        mapping; `records_pair` not a bool.
    """

    name: str
    step: StepFn
    boundaries: BoundaryFn
    tableau: ButcherTableau | None = None
    correction_sign: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    records_pair: bool = False
    check_options: OptionsCheck | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"`name` must be a non-empty string, got {self.name!r}.")
        for field_name in ("step", "boundaries"):
            if not callable(getattr(self, field_name)):
                raise TypeError(f"`{field_name}` must be callable.")
        if self.check_options is not None and not callable(self.check_options):
            raise TypeError("`check_options` must be callable or None.")
        if not isinstance(self.records_pair, bool):
            raise TypeError(
                f"`records_pair` must be a bool, got {type(self.records_pair).__name__}.")
        if self.tableau is not None:
            object.__setattr__(self, "tableau", get_tableau(self.tableau))
        check_correction_sign(self.correction_sign)
        if not isinstance(self.options, Mapping):
            raise TypeError(
                "`options` must map each option's name to its default, got "
                f"{type(self.options).__name__}."
            )
        for key in self.options:
            if not (isinstance(key, str) and key.isidentifier()):
                raise ValueError(f"Option names must be identifiers, got {key!r}.")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        self.resolve_options()  # the defaults must pass the check

    def resolve_options(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Return every option of this solver: the defaults updated by `given`, checked.

        Parameters
        ----------
        given : mapping, optional
            Some of the solver's options (``sample(..., solver_options=...)``).

        Returns
        -------
        dict
            One entry per declared option, as :attr:`check_options` returns them; what the
            step and boundary functions receive as keywords.

        Raises
        ------
        ValueError
            Naming each option in `given` that this solver does not take (and the ones it
            does), or a bad value (from :attr:`check_options`).
        TypeError
            If `given` is not a mapping.
        """
        if given is None:
            given = {}
        if not isinstance(given, Mapping):
            raise TypeError(f"`solver_options` must be a mapping, got {type(given).__name__}.")
        unknown = [key for key in given if key not in self.options]
        if unknown:
            takes = ", ".join(f"`{key}`" for key in self.options)
            raise ValueError(
                f"Solver {self.name!r} takes no option "
                f"{', '.join(f'`{key}`' for key in unknown)} "
                f"({'its options: ' + takes if takes else 'it has no options'})."
            )
        options = {**self.options, **given}
        if self.check_options is None:
            return options
        checked = dict(self.check_options(options))
        if checked.keys() != self.options.keys():
            raise TypeError(
                f"`check_options` of solver {self.name!r} must return exactly its options "
                f"{tuple(self.options)}, got {tuple(checked)}."
            )
        return checked

    @property
    def has_pair(self) -> bool:
        """Whether the steps offer ERK-Guid a pair."""
        return self.correction_sign is not None


_REGISTRY: dict[str, Solver] = {}


def register_solver(solver: Solver, *, overwrite: bool = False) -> Solver:
    """Add `solver` to the registry under its name and return it.

    Raises
    ------
    ValueError
        If the name is taken (unless `overwrite`).
    """
    if not isinstance(solver, Solver):
        raise TypeError(f"`solver` must be a Solver, got {type(solver).__name__}.")
    if solver.name in _REGISTRY and not overwrite:
        raise ValueError(f"A solver named {solver.name!r} is already registered.")
    _REGISTRY[solver.name] = solver
    return solver


def get_solver(solver: str | Solver) -> Solver:
    """Return the registered solver `solver` (a :class:`Solver` passes through).

    Raises
    ------
    ValueError
        Naming ``solver`` and listing the registered names.
    """
    if isinstance(solver, Solver):
        return solver
    try:
        return _REGISTRY[solver]
    except (KeyError, TypeError):
        raise ValueError(
            f"`solver` must be one of {tuple(_REGISTRY)}, got {solver!r}."
        ) from None


def list_solvers() -> tuple[str, ...]:
    """Return the registered solver names, in registration order."""
    return tuple(_REGISTRY)


def tableau_boundaries(tableau: ButcherTableau | str) -> BoundaryFn:
    """Return the boundary function of a solver whose every step is `tableau`.

    Each step's boundary is ``real_stability_interval(tableau)``.
    """
    boundary = real_stability_interval(get_tableau(tableau))

    def boundaries(sigmas: Tensor, **_: Any) -> Tensor:
        return torch.full((sigmas.shape[0] - 1,), boundary, dtype=torch.float64)

    return boundaries
