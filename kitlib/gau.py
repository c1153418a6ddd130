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


def swish(x: float) -> float:
    """swish(x) = x σ(x) (SiLU), the activation of GAU."""
    return x * expit(x)


def swish_moments(activation=swish) -> tuple[float, float]:
    """(μ, ν²) = (E[φ(x)], E[φ(x)²]) for x ~ N(0, 1) by quadrature, φ = swish unless ``activation`` is given
    (the test passes a wrong one to show that the claim's tolerance catches it)."""
    density = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    mean = quad(lambda x: activation(x) * density(x), -math.inf, math.inf, epsabs=1e-13)[0]
    second = quad(lambda x: activation(x) ** 2 * density(x), -math.inf, math.inf, epsabs=1e-13)[0]
    return mean, second


def diagonal_estimate(key_width: int, length: int) -> float:
    """Su's estimate of rms(GAU(X)) / rms(X) at init: s ν⁶ / n (A replaced by its diagonal)."""
    _, nu_sq = swish_moments()
    return key_width * nu_sq**3 / length


ATTENTIONS = ("full", "diagonal", "identity")


def gau_output_ratio(length: int, width: int, expansion: int, key_width: int, *,
                     weight_std: float | None = None, generator: torch.Generator | None = None,
                     attention: str = "full") -> float:
    """rms(GAU(X)) / rms(X) for one X ~ N(0, 1) of shape (length, width) and freshly initialised weights.

    ``weight_std=None`` is LeCun init (std 1/√fan-in; W_o has fan-in ``expansion``); a number uses that std
    for every matrix (the GAU paper's 0.02). ``attention`` (see :func:`gau_forward`): "diagonal" keeps only
    the diagonal of A — Su's approximation — to separate what the approximation drops from what the
    initialisation does; "identity" (A = I, the gated linear unit U ⊙ V without token mixing) is the chapter's
    null control: the same unit and init without the small relu²(ZZᵀ)/(ns).
    """
    n, d, e, s = length, width, expansion, key_width

    def weight(fan_in: int, fan_out: int) -> torch.Tensor:
        std = weight_std if weight_std is not None else 1 / math.sqrt(fan_in)
        return torch.randn(fan_in, fan_out, generator=generator, dtype=torch.float64) * std

    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    weights = weight(d, e), weight(d, e), weight(d, s), weight(e, d)
    output = gau_forward(x, *weights, attention=attention)
    return float(output.pow(2).mean().sqrt() / x.pow(2).mean().sqrt())


def gau_forward(x: torch.Tensor, w_u: torch.Tensor, w_v: torch.Tensor, w_z: torch.Tensor, w_o: torch.Tensor,
                *, attention: str = "full") -> torch.Tensor:
    """O = (U ⊙ A V) W_o with U = swish(X W_u), V = swish(X W_v), Z = swish(X W_z), A = relu²(Z Zᵀ)/(n s)
    (Q and K are the identity at init); X (n, d), W_u, W_v (d, e), W_z (d, s), W_o (e, d) → O (n, d).
    ``attention="diagonal"`` replaces A by its diagonal, ``"identity"`` by the identity matrix."""
    if attention not in ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r}; choose one of {ATTENTIONS}")
    swish = torch.nn.functional.silu
    n, s = x.shape[0], w_z.shape[1]
    u, v = swish(x @ w_u), swish(x @ w_v)
    if attention == "identity":
        return (u * v) @ w_o
    z = swish(x @ w_z)
    a = torch.relu(z @ z.T) ** 2 / (n * s)
    if attention == "diagonal":
        a = torch.diag(torch.diagonal(a))
    return (u * (a @ v)) @ w_o


def diagonal_to_offdiagonal(key_width: int, activation=swish) -> float:
    """E[A_ii] / E[A_ij] (i ≠ j) at init, keeping the variance of z_i·z_j that the ratio ν⁴/μ⁴ drops.

    With z_i = φ(X_i W_z) ∈ R^s having iid components of moments μ = E φ, ν² = E φ², m₄ = E φ⁴ (x ~ N(0, 1))
    and relu²(t) ≈ t² (z_i·z_j has mean sμ² > 0 and rarely goes negative):

        E[(z_i·z_i)²] = s m₄ + s(s−1) ν⁴,     E[(z_i·z_j)²] = s ν⁴ + s(s−1) μ⁴,

    whose ratio tends to ν⁴/μ⁴ (Su's 69) only as s → ∞; at s = 128 it is about 47."""
    mean, second = swish_moments(activation)
    density = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    fourth = quad(lambda x: activation(x) ** 4 * density(x), -math.inf, math.inf, epsabs=1e-13)[0]
    s = key_width
    return (s * fourth + s * (s - 1) * second**2) / (s * second**2 + s * (s - 1) * mean**4)
