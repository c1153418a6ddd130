"""The gated attention unit (GAU) at initialisation (kexue.fm/archives/8990), chapter ``deepnet-residual``.

GAU (Hua et al. 2022) on a sequence X ∈ R^{n×d}:

    U = swish(X W_u), V = swish(X W_v) ∈ R^{n×e},   Z = swish(X W_z) ∈ R^{n×s},
    A = relu²(Q(Z) K(Z)ᵀ) / (n s),                  O = (U ⊙ A V) W_o ∈ R^{n×d},

with Q, K per-dimension scale-and-offset maps (identity at init). Su's estimate: with LeCun init (variance 1/fan-in)
and X ~ N(0, 1), A ≈ (s ν⁴ / n) I (diagonal entries s ν⁴/n, off-diagonal s μ⁴/n, ratio ν⁴/μ⁴ ≈ 69), so
rms(O) ≈ s ν⁶ / n — about 0.01 at s = 128, n = 512 — where μ = E[swish(x)], ν² = E[swish(x)²], x ~ N(0, 1).
That makes GAU(X) ≪ X at init, so a Post-Norm GAU stack starts close to identity and needs no warmup.
"""

from __future__ import annotations

import math

import torch
from scipy.integrate import quad
from scipy.special import expit


def swish_moments() -> tuple[float, float]:
    """(μ, ν²) = (E[swish(x)], E[swish(x)²]) for x ~ N(0, 1), swish(x) = x σ(x), by quadrature."""
    density = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    mean = quad(lambda x: x * expit(x) * density(x), -math.inf, math.inf, epsabs=1e-13)[0]
    second = quad(lambda x: (x * expit(x)) ** 2 * density(x), -math.inf, math.inf, epsabs=1e-13)[0]
    return mean, second


def diagonal_estimate(key_width: int, length: int) -> float:
    """Su's estimate of rms(GAU(X)) / rms(X) at init: s ν⁶ / n (A replaced by its diagonal)."""
    _, nu_sq = swish_moments()
    return key_width * nu_sq**3 / length


def gau_output_ratio(length: int, width: int, expansion: int, key_width: int, *,
                     weight_std: float | None = None, generator: torch.Generator | None = None,
                     diagonal_only: bool = False) -> float:
    """rms(GAU(X)) / rms(X) for one X ~ N(0, 1) of shape (length, width) and freshly initialised weights.

    ``weight_std=None`` is LeCun init (std 1/√fan-in; W_o has fan-in ``expansion``); a number uses that std
    for every matrix (the GAU paper's 0.02). ``diagonal_only`` keeps only the diagonal of A — Su's
    approximation — to separate what the approximation drops from what the initialisation does.
    """
    n, d, e, s = length, width, expansion, key_width

    def weight(fan_in: int, fan_out: int) -> torch.Tensor:
        std = weight_std if weight_std is not None else 1 / math.sqrt(fan_in)
        return torch.randn(fan_in, fan_out, generator=generator, dtype=torch.float64) * std

    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    weights = weight(d, e), weight(d, e), weight(d, s), weight(e, d)
    output = gau_forward(x, *weights, diagonal_only=diagonal_only)
    return float(output.pow(2).mean().sqrt() / x.pow(2).mean().sqrt())


def gau_forward(x: torch.Tensor, w_u: torch.Tensor, w_v: torch.Tensor, w_z: torch.Tensor, w_o: torch.Tensor,
                *, diagonal_only: bool = False) -> torch.Tensor:
    """O = (U ⊙ A V) W_o with U = swish(X W_u), V = swish(X W_v), Z = swish(X W_z), A = relu²(Z Zᵀ)/(n s)
    (Q and K are the identity at init); ``diagonal_only`` replaces A by its diagonal."""
    swish = torch.nn.functional.silu
    n, s = x.shape[0], w_z.shape[1]
    u, v, z = swish(x @ w_u), swish(x @ w_v), swish(x @ w_z)
    attention = torch.relu(z @ z.T) ** 2 / (n * s)
    if diagonal_only:
        attention = torch.diag(torch.diagonal(attention))
    return (u * (attention @ v)) @ w_o
