"""Test drifts shared by the JVP and eigen-estimator tests (batched, float64)."""

import math

import torch
from torch.autograd.function import once_differentiable

DT = torch.float64
EPS = torch.finfo(DT).eps


class TanhNoForward(torch.autograd.Function):
    """tanh with backward only (old-style Function): torch.func.jvp rejects it."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)  # differentiable: double backward works


class TanhOnce(TanhNoForward):
    """tanh with neither forward mode nor double backward."""

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


ACTIVATIONS = {"tanh": torch.tanh, "no_forward": TanhNoForward.apply, "once": TanhOnce.apply}


def make_mlp(dims, act="tanh", width=16, seed=1):
    """Nonlinear batched drift on ``[batch, *dims]`` with a per-sample time dependence."""
    gen = torch.Generator().manual_seed(seed)
    n = math.prod(dims)
    w1 = torch.randn(width, n, generator=gen, dtype=DT) / math.sqrt(n)
    w2 = torch.randn(n, width, generator=gen, dtype=DT) / math.sqrt(width)
    b1 = torch.randn(width, generator=gen, dtype=DT)
    phi = ACTIVATIONS[act]

    def f(t, x):
        t_col = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1)  # scalar, [1] or [batch]
        h = phi(x.reshape(x.shape[0], -1) @ w1.T + b1 * (1 + t_col))
        return (h @ w2.T).reshape(x.shape) - 0.5 * x

    return f


def block_jacobian(f, t, x):
    """Per-sample Jacobian blocks [batch, n, n] of the batched jacrev Jacobian."""
    batch, n = x.shape[0], x[0].numel()
    full = torch.func.jacrev(lambda y: f(t, y))(x).reshape(batch, n, batch, n)
    return torch.stack([full[i, :, i, :] for i in range(batch)])


def linear_field(jac):
    """f(t, x) = J_t x with J: [batch, n, n]; `t` carries the sample index (see `ids`).

    The estimators evaluate f on single samples (arpack, dense) with t sliced alongside x,
    so indexing J by t keeps sample i's Jacobian J_i wherever it is evaluated.
    """
    return lambda t, x: torch.einsum("bij,bj->bi", jac[t.long()], x)


def ids(x):
    """Per-sample times 0, 1, ..., batch - 1 for `linear_field`."""
    return torch.arange(x.shape[0], dtype=DT)


def apply_blocks(jac, v):
    return torch.einsum("bij,bj->bi", jac, v.reshape(v.shape[0], -1)).reshape(v.shape)


DIMS = (2, 3)
T = torch.tensor([0.3, -0.2, 0.7, 1.1], dtype=DT)  # per-sample time, [batch]


def point(seed=0):
    """A state and a direction, ``[4, *DIMS]`` each."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, *DIMS, generator=gen, dtype=DT)
    v = torch.randn(4, *DIMS, generator=gen, dtype=DT)
    return x, v
