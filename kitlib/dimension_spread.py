"""Where the sampling approximation of the dimension formula breaks down at finite N: the draw-to-draw spread of
the exact pair-softmax entropy (chapter ``dimension-formula``, §3).

For N words with vectors u_i, v_j uniform on the sphere of radius √n, the exact entropy of p_ij ∝ e^{s_ij},
s_ij = ⟨u_i, v_j⟩, is H = log Z − S/Z with Z = Σ_ij e^{s_ij} and S = Σ_ij s_ij e^{s_ij}. Terms that share a
vector are uncorrelated in the centred weight g(s) = e^s (1 + m − s) that the delta method needs (by rotational
invariance E_v g(⟨u, v⟩) is the same for every u), so to first order in the fluctuations of Z and S
(the delta method; the same "annealed" averaging as the formula itself) the variance of H over draws is

    Var H ≈ (1/N²) · ( E[e^{2s} (1 + m − s)²] / E[e^s]² − 1 ),   m = E[s e^s] / E[e^s],

with s = n cos θ, p_n(θ) ∝ sin^{n−2} θ (one random pair). Over N = 100 … 3000 the n at which this spread reaches
a fixed size τ = 0.1 nats grows like ≈ 4.25 log N (:func:`spread_onset_dim`; the local slope rises with N, 4.7
between N = 10³ and 10⁴).

Validity. The e^{2s} weight in the numerator puts the variance on the pairs with cos θ ≈ c₂, the e^{2s}-tilted
point (c₂ → (√17 − 1)/4 = 0.781 for large n; :func:`tilted_cos`). The first-order expansion needs many such
pairs among the N² drawn: N² P(cos θ > c₂) ≫ 1 at the predicted n (:func:`variance_carrier_pairs`). At the
predicted breakdown this count is about 5–8 for N = 100 … 3000, 3.3 at 10⁴, 2.1 at 3·10⁴, 1.2 at 10⁵ and 0.4 at
10⁶, so the formula describes the spread only for N ≲ 10⁴. Its large-deviation growth rate in n,
f(2) − 2 f(1) = 0.337 with f(β) = max_c [β c + ½ log(1 − c²)], would give a slope 2 / 0.337 = 5.94 against log N,
but only at N where the carrier pairs no longer exist; there the sum is dominated by its few largest terms
(the random-energy-model regime), and the breakdown should move out towards the formula's own n* ≈ 8.31 log N
— an argument, not measured here.

:func:`row_entropy_draws` gives the same statistic for one row p(j | i) (N terms instead of N², variance
∝ 1/N): the chapter's measured null for the slope.

:func:`spread_breakdown_dim` reads the same point off Monte-Carlo draws: it fits log(spread) linearly in n over
a few dimensions around the crossing and solves for spread = τ.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.special import logsumexp
from scipy.stats import beta as beta_law

from kitlib.dimension import sphere_vectors


def log_entropy_variance_factor(n: float, points: int = 20_001) -> float:
    """log( E[e^{2s}(1 + m − s)²] / E[e^s]² − 1 ) for one random pair, s = n cos θ, θ ~ sin^{n−2} θ on (0, π):
    N² times the delta-method variance of the exact entropy (module docstring). Integrated on a uniform θ grid
    in log space, like :func:`kitlib.dimension.h_n`."""
    if n < 2:
        raise ValueError(f"needs n ≥ 2, got {n}")
    theta = np.linspace(0.0, math.pi, points)[1:-1]
    log_density = (n - 2) * np.log(np.sin(theta))
    s = n * np.cos(theta)
    log_norm = logsumexp(log_density)
    log_e1 = logsumexp(log_density + s) - log_norm                     # log E[e^s]
    m = float(np.exp(log_density + s - log_norm - log_e1) @ s)        # the tilted mean score
    log_g2 = 2 * np.log(np.abs(1 + m - s) + 1e-300)
    log_ratio = logsumexp(log_density + 2 * s + log_g2) - log_norm - 2 * log_e1
    return float(math.log(math.expm1(log_ratio)))


def entropy_spread_theory(N: float, n: float) -> float:
    """Delta-method standard deviation (nats) of the exact N × N pair-softmax entropy over draws of the vectors."""
    return math.exp(0.5 * log_entropy_variance_factor(n)) / N


def spread_onset_dim(N: float, tau: float = 0.1) -> float:
    """The (real) n at which :func:`entropy_spread_theory` reaches ``tau`` nats."""
    return float(brentq(lambda n: 0.5 * log_entropy_variance_factor(n) - math.log(N * tau), 2.0,
                        20 * math.log(N) + 50, xtol=1e-6))


def spread_breakdown_dim(dims, spreads, tau: float = 0.1) -> float:
    """n at which the draw-to-draw spread reaches ``tau``: least-squares fit log(spread) = a + b n over the given
    dimensions (shape (k,), k ≥ 2), solved for a + b n = log τ. NaN if the fitted spread does not grow."""
    dims, spreads = np.asarray(dims, dtype=float), np.asarray(spreads, dtype=float)
    b, a = np.polyfit(dims, np.log(spreads), 1)
    return float((math.log(tau) - a) / b) if b > 0 else math.nan


def breakdown_grid(N: float, tau: float = 0.1, half_width: int = 4, step: int = 2) -> list[int]:
    """Integer dimensions around :func:`spread_onset_dim` (± ``half_width`` in steps of ``step``) at which the
    chapter draws the exact entropy to locate the breakdown."""
    centre = int(round(spread_onset_dim(N, tau)))
    return list(range(max(2, centre - half_width), centre + half_width + 1, step))


def tilted_cos(n: float, tilt: float = 2.0, points: int = 20_001) -> float:
    """E[cos θ e^{tilt·n cos θ}] / E[e^{tilt·n cos θ}] for θ ~ sin^{n−2} θ: the angle that carries E[e^{tilt·s}]
    (tilt 2: the variance of the entropy; → (√17 − 1)/4 = 0.781 as n → ∞)."""
    theta = np.linspace(0.0, math.pi, points)[1:-1]
    log_w = (n - 2) * np.log(np.sin(theta)) + tilt * n * np.cos(theta)
    return float(np.exp(log_w - logsumexp(log_w)) @ np.cos(theta))


def variance_carrier_pairs(N: float, n: float) -> float:
    """N² P(cos θ > c₂(n)): the expected number of the N² random pairs at or beyond the e^{2s}-tilted angle, which
    carry the delta-method variance; (1 + cos θ)/2 ~ Beta((n−1)/2, (n−1)/2). The first-order theory needs ≫ 1."""
    return float(N * N * beta_law.sf((1 + tilted_cos(n)) / 2, (n - 1) / 2, (n - 1) / 2))


def row_entropy_draws(N: int, n: int, draws: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> np.ndarray:
    """``draws`` independent entropies of one row, p(j | i) ∝ exp⟨u, v_j⟩ over j = 1 … N, with u and the N vectors v_j
    uniform on the sphere of radius √n (drawn afresh each time): H = log Z − Σ_j s_j e^{s_j} / Z. Shape (draws,)."""
    u = sphere_vectors(draws, n, generator, device, dtype)
    v = sphere_vectors(draws * N, n, generator, device, dtype).reshape(draws, N, n)
    s = torch.einsum("dn,dkn->dk", u, v)
    log_p = torch.log_softmax(s, dim=1)
    return (-(log_p.exp() * log_p).sum(dim=1)).cpu().numpy()
