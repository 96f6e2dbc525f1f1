"""ERK-Guid's oracle variant: the exact dominant eigenpair in place of the pair's estimate.

With ``ErkGuid(oracle=...)`` the correction uses ``|λ₁|`` and ``v₁`` of ``∂f/∂x`` at the step's
start instead of ρ̂ and v̂ (:mod:`stiffkit.diffusion.erk`), which separates the estimator's
quality from the correction's (docs/theory/erk_guid.md). An oracle is any callable
``(sigma, x) -> (|λ₁| [batch], v₁ [batch, *dims])``; this module builds them from
:func:`stiffkit.estimators.dominant_eig` or from an exact mixture's closed-form Jacobian.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "Oracle",
    "OracleSpec",
    "ORACLE_METHODS",
    "resolve_oracle",
    "dominant_pair_oracle",
    "mixture_oracle",
]

#: An oracle maps ``(sigma, x)`` to the exact ``(|λ₁| [batch], v₁ [batch, *dims])``.
Oracle = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor]"]
#: What ``oracle=`` accepts: None (use the pair), a method of :func:`dominant_pair_oracle`,
#: or an :data:`Oracle`.
OracleSpec = None | str | Oracle
#: The named oracles: :func:`stiffkit.estimators.dominant_eig` methods.
ORACLE_METHODS = ("dense", "power", "arpack")


def resolve_oracle(oracle: OracleSpec, drift: Callable[[Tensor, Tensor], Tensor]) -> Oracle | None:
    """Return the oracle callable of an :class:`ErkGuid` ``oracle`` for the drift `drift`.

    A method name becomes :func:`dominant_pair_oracle` of ``drift(sigma, x)``; a callable
    and None pass through.
    """
    if oracle is None or callable(oracle):
        return oracle
    if oracle in ORACLE_METHODS:
        return dominant_pair_oracle(drift, oracle)
    raise ValueError(
        f"`oracle` must be None, 'dense', 'power', 'arpack' or a callable, got {oracle!r}."
    )


def dominant_pair_oracle(drift: Callable[[Tensor, Tensor], Tensor], method: str = "dense", *,
                         symmetric: bool = True, **eig_kwargs) -> Oracle:
    """Return an oracle from :func:`stiffkit.dominant_eig` on ``drift(sigma, x)``.

    ``method`` is "dense" (exact for small dimensions), "power" or "arpack" (matrix-free);
    probability-flow drifts of conservative denoisers have symmetric Jacobians.
    """
    from stiffkit.estimators.eigen import dominant_eig

    def oracle(sigma: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        eig = dominant_eig(drift, sigma, x, method=method, symmetric=symmetric, **eig_kwargs)
        value = eig.value.real if eig.value.is_complex() else eig.value
        vector = eig.vector.real if eig.vector.is_complex() else eig.vector
        return value.abs().to(x.dtype), vector.to(x.dtype)

    return oracle


def mixture_oracle(mixture) -> Oracle:
    """Return the exact oracle of an (unguided) Gaussian mixture's drift.

    The closed-form ``J_f`` (:meth:`GaussianMixture.drift_jacobian`) diagonalised in
    float64 by :func:`stiffkit.estimators.spectrum.sorted_eig`.
    """
    from stiffkit.estimators.spectrum import sorted_eig

    def oracle(sigma: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        jac = mixture.drift_jacobian(x, sigma).to(torch.float64)  # [batch, d, d]
        values, vectors = sorted_eig(jac, symmetric=True)  # largest |λ| first
        # v₁ in the state's shape: image-shaped mixtures (IsotropicMixture) flatten x for J.
        vector = vectors[:, :, 0].reshape(x.shape).contiguous().to(x.dtype)
        return values[:, 0].abs().to(x.dtype), vector

    return oracle
