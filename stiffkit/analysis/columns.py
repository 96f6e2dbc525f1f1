"""The columns of stiffkit's per-step DataFrames (:func:`stiffkit.analyze` and the
torchdiffeq monitor share them; a column a source cannot fill is NaN)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["COLUMNS", "empty_frame", "conform"]

#: Column name -> meaning. Row n describes step n, from (t_n, x_n) to (t_{n+1}, x_{n+1}),
#: for one sample.
COLUMNS: dict[str, str] = {
    "step": "step index n",
    "sample": "sample index in the batch",
    "t": "start time t_n of the step (σ_n for diffusion)",
    "h": "step size |t_{n+1} − t_n|",
    "rho_hat": "cheap stiffness estimate ‖Δf‖/‖Δx‖ from the step's same-time pair "
    "(Proposition 1 / Hairer's stage difference), at t_{n+1}; no extra evaluations",
    "pair_resolved": "whether the pair's Δx lies above roundoff of the states (False: rho_hat is "
    "NaN — no information, not 'not stiff'); NA where the source has no pair",
    "h_rho": "h · rho_hat",
    "stiffness_indicator": "h · rho_hat / the step's real stability boundary (the tableau's "
    "real_stability_interval, or the sampler's per-step value): ≳ 1 means the step is "
    "limited by stability, not accuracy",
    "stiff": "stiffness flag (monitor: DOPRI5's 15-step rule; analyze: indicator ≥ threshold, "
    "NA where rho_hat is NaN)",
    "lambda_max": "|λ| of the eigenvalue of largest modulus of ∂f/∂x at (t_n, x_n) (reference)",
    "lambda_real": "real part of that eigenvalue (negative: contracting)",
    "h_lambda": "h · lambda_max",
    "reference_products": "Jacobian products the reference eigen-estimate spent (per sample)",
    "reference_converged": "whether the reference eigen-estimate converged (power iteration "
    "cannot separate a dominant complex pair; lambda_max is NaN where this is False)",
    "lte_norm": "‖LTE‖ of the step against an accurate reference step from x_n",
    "cos_lte_v1": "|cos| between the LTE and the dominant eigenvector v₁ at (t_n, x_n)",
    "cos_dx_v1": "|cos| between the pair's solution difference Δx (at t_{n+1}) and the "
    "dominant eigenvector at (t_{n+1}, x_{n+1})",
    "cos_df_v1": "|cos| between the pair's drift difference Δf (at t_{n+1}) and the "
    "dominant eigenvector at (t_{n+1}, x_{n+1})",
}


def empty_frame() -> pd.DataFrame:
    """Return an empty DataFrame with every column, in order."""
    return pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS})


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing columns as NaN and order the shared ones first (extra columns kept)."""
    out = df.copy()
    for col in COLUMNS:
        if col not in out:
            out[col] = np.nan
    extra = [c for c in out.columns if c not in COLUMNS]
    return out[list(COLUMNS) + extra]
