"""Optimal transport between point sets, for the ``wgan`` chapter (kexue.fm/archives/8244).

The Wasserstein-1 distance between the uniform empirical measures P = (1/m) Σ δ_{x_i} and Q = (1/n) Σ δ_{y_j}
with Euclidean ground cost is the value of the linear programme

    W1(P, Q) = min_{γ ≥ 0} Σ_ij γ_ij ‖x_i − y_j‖   s.t.  Σ_j γ_ij = 1/m,  Σ_i γ_ij = 1/n,

solved exactly by POT's network simplex (``ot.emd2``). For m = n an optimal plan is a permutation/n
(Birkhoff), so W1 is the mean cost of an optimal assignment — the independent check of the tests.
"""

from __future__ import annotations

import numpy as np
import ot
import torch
from scipy.spatial.distance import cdist


def _as_rows(points, name: str):
    """(k, …) → (k, d): rows are points, anything after the first axis is flattened (images → vectors)."""
    shape = tuple(np.shape(points))
    if len(shape) < 2 or shape[0] == 0 or int(np.prod(shape[1:])) == 0:
        raise ValueError(f"{name} must hold at least one point (rows of coordinates), got shape {shape}")
    if isinstance(points, torch.Tensor):
        rows = points.reshape(points.shape[0], -1)
        ok = rows.is_floating_point() and bool(torch.isfinite(rows).all())
    else:
        rows = np.asarray(points, dtype=np.float64)
        rows = rows.reshape(rows.shape[0], -1)
        ok = bool(np.isfinite(rows).all())
    if not ok:
        raise ValueError(f"{name} must be finite floating-point numbers")
    return rows


def exact_w1(x, y):
    """Exact W1 between the uniform empirical measures on the rows of ``x`` and ``y`` (Euclidean cost).

    Rows are points; further axes are flattened. NumPy input gives a float. A tensor input gives a 0-d
    tensor that is differentiable in x and y: POT's torch backend returns the gradient through the optimal
    plan γ*, ∂W1/∂x_i = Σ_j γ*_ij (x_i − y_j)/‖x_i − y_j‖ (exact wherever the plan is unique).
    """
    rows_x, rows_y = _as_rows(x, "x"), _as_rows(y, "y")
    if rows_x.shape[1] != rows_y.shape[1]:
        raise ValueError(f"x and y have points of different sizes: {rows_x.shape[1]} and {rows_y.shape[1]}")
    if isinstance(rows_x, torch.Tensor) or isinstance(rows_y, torch.Tensor):
        rows_x, rows_y = torch.as_tensor(rows_x), torch.as_tensor(rows_y)
        rows_y = rows_y.to(dtype=rows_x.dtype, device=rows_x.device)
        cost = torch.cdist(rows_x, rows_y, compute_mode="donot_use_mm_for_euclid_dist")
        a = torch.full((rows_x.shape[0],), 1 / rows_x.shape[0], dtype=cost.dtype, device=cost.device)
        b = torch.full((rows_y.shape[0],), 1 / rows_y.shape[0], dtype=cost.dtype, device=cost.device)
        return ot.emd2(a, b, cost)
    cost = cdist(rows_x, rows_y)  # per-pair differences: exactly 0 for equal points
    a, b = ot.unif(rows_x.shape[0]), ot.unif(rows_y.shape[0])
    return float(ot.emd2(a, b, cost))


def c_transform(potential: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """φ^c(y_j) = min_i [c(x_i, y_j) − φ(x_i)] over the points x_i where φ is known (a batch or a set).

    ``potential``: φ(x_i), shape (m,); ``cost``: c(x_i, y_j), shape (m, n). Returns shape (n,). Differentiable
    in both (the gradient flows through the minimising i of each column)."""
    if cost.ndim != 2 or potential.shape != cost.shape[:1]:
        raise ValueError(f"potential must have shape (m,) for a cost of shape (m, n); got {tuple(potential.shape)} "
                         f"and {tuple(cost.shape)}")
    return (cost - potential[:, None]).min(dim=0).values


def c_transform_value(potential: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """The dual value mean_i φ(x_i) + mean_j φ^c(y_j). Since φ(x_i) + φ^c(y_j) ≤ c(x_i, y_j) for every pair,
    integrating against an optimal plan gives value ≤ W1 for *any* φ (weak duality), with equality at an optimal
    Kantorovich potential."""
    return potential.mean() + c_transform(potential, cost).mean()



class KantorovichPotential(torch.nn.Module):
    """A fixed critic function from two (large) samples: solve the exact transport LP between the rows of ``x``
    (m, d) and ``y`` (n, d), take the dual potential v on y, and extend it to all of space by its c-transform

        φ(z) = min_j [‖z − y_j‖ − v_j],

    which is 1-Lipschitz (a minimum of 1-Lipschitz functions) and, with φ^c over x, attains W1(x, y) (strong
    duality). Called on points (k, d) it returns φ, shape (k, 1), float64, like a critic network. Claim W11 of
    the ``wgan`` chapter uses it as the best a single fixed critic function fitted to the two distributions can
    be: fitted to 2000-point samples, evaluated on fresh batches."""

    def __init__(self, x, y):
        super().__init__()
        rows_x = np.asarray(_as_rows(x, "x"), dtype=np.float64)
        rows_y = np.asarray(_as_rows(y, "y"), dtype=np.float64)
        _, log = ot.emd(ot.unif(len(rows_x)), ot.unif(len(rows_y)), cdist(rows_x, rows_y), log=True,
                        numItermax=10**7)
        self.register_buffer("anchors", torch.tensor(rows_y))
        self.register_buffer("v", torch.tensor(log["v"]))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        cost = torch.cdist(torch.as_tensor(points).double().flatten(1), self.anchors,
                           compute_mode="donot_use_mm_for_euclid_dist")
        return (cost - self.v[None, :]).min(dim=1, keepdim=True).values
